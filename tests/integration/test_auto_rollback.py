"""End to end: an example app (a real ``anvil_client`` on a real file store) starts failing on
a bad release; its own heartbeats carry the usage to a real FORGE (served on 127.0.0.1), whose
guard rolls the channel back automatically within the window. No request to the app fails
because of the rollback itself: each one is served either by the bad release (and fails with
its ``MissingVariable``) or by the good one.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select

from anvil_client import AnvilClient
from anvil_client.errors import MissingVariable
from forge_app.extensions import db
from forge_app.models import AuditEvent, Project, PromptSet, Role, User
from forge_app.models.distribution import Publication
from forge_app.models.releases import GuardAction, GuardPolicy
from forge_app.services import publishing
from forge_app.services.tokens import create_token
from forge_app.services.users import add_member, create_user
from forge_app.services.versions import latest_release
from forge_app.worker import run_worker
from tests.integration._releases import (
    live_forge_app,
    release_locked_version,
    seed_checkout,
)
from tests.servers import served

pytestmark = pytest.mark.integration

DEADLINE = 60.0  # a cap for waits on a loaded machine


def wait_for(condition: Callable[[], Any], what: str) -> Any:
    deadline = time.monotonic() + DEADLINE
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


@dataclass
class Forge:
    app: Flask
    url: str
    store: str
    project_id: str
    owner_id: int
    set_id: Any

    def release(self, template: str) -> None:
        with self.app.app_context():
            prompt_set = db.session.get(PromptSet, self.set_id)
            owner = db.session.get(User, self.owner_id)
            assert prompt_set is not None and owner is not None
            reviewer = create_user(
                db.session,
                f"r{time.monotonic_ns()}@acme.test",
                name="R",
                password_hash=owner.password_hash,
            )
            add_member(
                db.session,
                db.session.get(Project, prompt_set.project_id).org,  # type: ignore[union-attr]
                reviewer,
                Role.REVIEWER,
            )
            release_locked_version(db.session, prompt_set, owner, reviewer, template)

    def publish(self) -> Publication:
        with self.app.app_context():
            prompt_set = db.session.get(PromptSet, self.set_id)
            owner = db.session.get(User, self.owner_id)
            project = db.session.get(Project, prompt_set.project_id)  # type: ignore[union-attr]
            assert prompt_set is not None and owner is not None and project is not None
            publishing.ensure_default_channels(project)
            channel = publishing.get_channel(project, "production")
            version = latest_release(db.session, prompt_set)
            assert channel is not None and version is not None
            publication = publishing.publish_version(version, channel, user=owner, role=Role.OWNER)
            db.session.commit()
            db.session.expunge(publication)
            return publication

    def latest(self) -> Publication:
        with self.app.app_context():
            found = db.session.scalar(select(Publication).order_by(Publication.sequence.desc()))
            assert found is not None
            db.session.expunge(found)
            return found


@pytest.fixture
def forge(tmp_path: Path) -> Iterator[Forge]:
    store = f"file://{tmp_path / 'store'}"
    app = live_forge_app(tmp_path, store, FORGE_GUARD_EVALUATE_SECONDS=0.5)
    seeded = seed_checkout(app)
    with served(app) as url:
        yield Forge(app, url, store, seeded.project_id, seeded.owner_id, seeded.set_id)


@dataclass
class ExampleApp:
    """The application: every request renders ``welcome.message`` with the variables it has
    always passed, and reports the model call's outcome."""

    client: AnvilClient
    outcomes: list[tuple[float, str, str]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def handle(self) -> None:
        try:
            text = self.client.prompt("welcome.message", name="Ada")
        except MissingVariable:
            self.outcomes.append((time.monotonic(), "MissingVariable", ""))
            self.client.record("welcome.message", error="MissingVariable")
            return
        except Exception as e:  # anything else is a failure the test reports
            self.outcomes.append((time.monotonic(), type(e).__name__, str(e)))
            return
        self.client.record("welcome.message", input_tokens=12, output_tokens=30, latency_ms=5.0)
        self.outcomes.append((time.monotonic(), "ok", text))

    def run(self) -> None:
        while not self.stop.wait(0.02):
            self.handle()


def test_a_bad_release_is_rolled_back_automatically(forge: Forge, tmp_path: Path) -> None:
    with forge.app.app_context():
        project = db.session.get(Project, uuid.UUID(forge.project_id))
        owner = db.session.get(User, forge.owner_id)
        assert project is not None and owner is not None
        _, token = create_token(project, "web", user=owner)
        key = publishing.forge_public_key_text()
        publishing.ensure_default_channels(project)
        channel = publishing.get_channel(project, "production")
        assert channel is not None
        db.session.add(
            GuardPolicy(
                project_id=project.id,
                channel_id=channel.id,
                max_error_rate=0.2,
                min_calls=10,
                window_minutes=30,
                stages_json="[]",
            )
        )
        db.session.commit()
    forge.release("Hello {{ name }}!")
    good = forge.publish()

    client = AnvilClient(
        store=forge.store,
        project_id=forge.project_id,
        channel="production",
        access_token=token,
        trusted_keys=[key],
        cache_dir=tmp_path / "cache",
        poll_interval=0.3,
        forge_url=forge.url,
        heartbeat_interval=0.5,
    )
    app = ExampleApp(client)
    stop_worker = threading.Event()
    worker = threading.Thread(
        target=run_worker,
        args=(forge.app,),
        kwargs={"interval": 0.5, "stop": stop_worker},
        daemon=True,
    )
    requests = threading.Thread(target=app.run, daemon=True)
    try:
        worker.start()
        # Like a real deployment, the app takes traffic once its client has synced.
        wait_for(lambda: client.status().get("sequence") == good.sequence, "the first sync")
        requests.start()
        wait_for(lambda: any(o[1] == "ok" for o in app.outcomes), "the app serving v1")

        # The bad release needs a variable the app never passes.
        forge.release("Hello {{ name }}, your tier is {{ tier }}")
        bad = forge.publish()
        wait_for(
            lambda: any(o[1] == "MissingVariable" for o in app.outcomes),
            "the app failing on the bad release",
        )
        rolled = wait_for(lambda: (p := forge.latest()).kind == "rollback" and p, "the rollback")
        assert rolled.sequence == bad.sequence + 1
        assert [e["content_sha256"] for e in rolled.releases] == [
            e["content_sha256"] for e in good.releases
        ]
        assert rolled.published_at - bad.published_at < timedelta(minutes=30)
        applied_at = wait_for(
            lambda: client.status().get("sequence") == rolled.sequence and time.monotonic(),
            "the app applying the rollback",
        )
        after = len(app.outcomes)
        wait_for(lambda: len(app.outcomes) >= after + 20, "twenty more requests")
    finally:
        app.stop.set()
        requests.join(timeout=10)
        stop_worker.set()
        worker.join(timeout=30)
        client.close()

    kinds = {o[1] for o in app.outcomes}
    assert kinds <= {"ok", "MissingVariable"}, [
        o for o in app.outcomes if o[1] not in ("ok", "MissingVariable")
    ][:3]
    assert all(o[1] == "ok" for o in app.outcomes if o[0] > applied_at)
    assert {o[2] for o in app.outcomes if o[1] == "ok"} == {"Hello Ada!"}
    with forge.app.app_context():
        actions = list(db.session.scalars(select(GuardAction)))
        assert [(a.kind, a.judged_sequence, a.result_sequence) for a in actions] == [
            ("rollback", bad.sequence, rolled.sequence)
        ]
        assert actions[0].figures["errors"] >= 1
        assert actions[0].figures["errors_by_class"].get("MissingVariable", 0) >= 1
        event = db.session.scalar(select(AuditEvent).where(AuditEvent.action == "guard.rollback"))
        assert event is not None and event.actor_email == "system"
