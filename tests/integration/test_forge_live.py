"""The whole distribution path with real parts: the FORGE (served on 127.0.0.1) publishes to a
real SeaweedFS bucket, three LIVE client *processes* poll it and send heartbeats back.

Shown: a publish reaches every instance at its next poll and shows as applied on the status
page; a revoked token cannot read the next publish, its client keeps serving its last version
and reports the error (and the FORGE shows it revoked); a rollback; a 50% rollout splits the
instances exactly as ``in_rollout`` says for each instance id.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select

from anvil_client.wire import in_rollout
from forge_app.extensions import db
from forge_app.models import Project, PromptSet, Role, User
from forge_app.models.distribution import AccessToken, Publication
from forge_app.services import publishing
from forge_app.services.tokens import create_token
from forge_app.services.versions import latest_release
from tests.forge_app.conftest import login
from tests.integration._releases import (
    live_forge_app,
    release_locked_version,
    seed_checkout,
)
from tests.servers import served

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
POLL = 1.0  # the clients' poll interval, seconds
DEADLINE = 60.0  # a cap for waits on a loaded machine; the checks below are about polls

CLIENT_SCRIPT = r"""
import json, os, sys
from anvil_client import AnvilClient
from anvil_client.stores import open_store
from tests.anvil_client.spy_stores import SpyStore

spy = SpyStore(open_store(os.environ["STORE"]))
client = AnvilClient(
    store=spy,
    project_id=os.environ["PROJECT_ID"],
    channel="production",
    access_token=os.environ["ANVIL_ACCESS_TOKEN"],
    trusted_keys=[os.environ["TRUSTED_KEY"]],
    cache_dir=os.environ["CACHE_DIR"],
    poll_interval=float(os.environ["POLL"]),
    forge_url=os.environ["FORGE_URL"],
    heartbeat_interval=60,
)
print(json.dumps({"instance_id": client.instance_id}), flush=True)
for line in sys.stdin:
    if line.strip() != "status":
        break
    try:
        text = client.prompt("welcome.message", name="Ada")
    except Exception as e:
        text = f"{type(e).__name__}: {e}"
    gets = [[c.started, c.outcome] for c in spy.pointer_gets()]
    print(json.dumps({"status": client.status(), "text": text, "pointer_gets": gets}), flush=True)
client.close()
spy.close()
"""


def wait_for(condition: Callable[[], Any], what: str, timeout: float = DEADLINE) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


class ClientProcess:
    """One LIVE instance: a Python process with an AnvilClient, asked for its status on stdin."""

    def __init__(self, script: Path, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(script)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            cwd=ROOT,
            text=True,
        )
        self.lock = threading.Lock()
        first = self._read()
        self.instance_id: str = first["instance_id"]

    def _read(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise AssertionError(f"client process exited with {self.process.wait()}")
        data: dict[str, Any] = json.loads(line)
        return data

    def report(self) -> dict[str, Any]:
        assert self.process.stdin is not None
        with self.lock:
            self.process.stdin.write("status\n")
            self.process.stdin.flush()
            return self._read()

    def status(self) -> dict[str, Any]:
        status: dict[str, Any] = self.report()["status"]
        return status

    def stop(self) -> None:
        if self.process.poll() is None:
            assert self.process.stdin is not None
            try:
                self.process.stdin.write("quit\n")
                self.process.stdin.flush()
                self.process.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()  # this PID only
                self.process.wait(timeout=10)
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                stream.close()


@dataclass
class Forge:
    app: Flask
    url: str
    store: str
    project_id: str
    owner_id: int
    reviewer_id: int
    set_id: Any
    tmp: Path
    clients: list[ClientProcess] = field(default_factory=list)
    script: Path | None = None

    # --- FORGE side (as the services the views call) -----------------------------------

    def token(self, name: str) -> str:
        with self.app.app_context():
            project = db.session.get(Project, self.project_uuid)
            owner = db.session.get(User, self.owner_id)
            assert project is not None and owner is not None
            _, text = create_token(project, name, user=owner)
            db.session.commit()
            return text

    @property
    def project_uuid(self) -> Any:
        import uuid

        return uuid.UUID(self.project_id)

    def release(self, template: str) -> None:
        """Edit the set (as the editor), submit and approve it (reviewer): a new LOCKED version."""
        with self.app.app_context():
            prompt_set = db.session.get(PromptSet, self.set_id)
            owner = db.session.get(User, self.owner_id)
            reviewer = db.session.get(User, self.reviewer_id)
            assert prompt_set is not None and owner is not None and reviewer is not None
            release_locked_version(db.session, prompt_set, owner, reviewer, template)

    def latest_content(self) -> str:
        with self.app.app_context():
            prompt_set = db.session.get(PromptSet, self.set_id)
            assert prompt_set is not None
            version = latest_release(db.session, prompt_set)
            assert version is not None
            return version.content_sha256

    def publish(self, rollout: int | None = None) -> Publication:
        with self.app.app_context():
            project = db.session.get(Project, self.project_uuid)
            prompt_set = db.session.get(PromptSet, self.set_id)
            owner = db.session.get(User, self.owner_id)
            assert project is not None and prompt_set is not None and owner is not None
            publishing.ensure_default_channels(project)
            channel = publishing.get_channel(project, "production")
            version = latest_release(db.session, prompt_set)
            assert channel is not None and version is not None
            publication = publishing.publish_version(
                version, channel, user=owner, role=Role.OWNER, rollout_percent=rollout
            )
            db.session.commit()
            db.session.expunge(publication)
            return publication

    def revoke(self, token_text: str) -> list[int]:
        with self.app.app_context():
            token = db.session.scalar(
                select(AccessToken).where(AccessToken.token_id == token_text[6:18])
            )
            owner = db.session.get(User, self.owner_id)
            assert token is not None and owner is not None
            report = publishing.revoke_token(token, user=owner)
            db.session.commit()
            assert report.ok, report.failed
            return [p.sequence for p in report.reencrypted]

    def rollback(self, sequence: int) -> Publication:
        with self.app.app_context():
            project = db.session.get(Project, self.project_uuid)
            owner = db.session.get(User, self.owner_id)
            assert project is not None and owner is not None
            channel = publishing.get_channel(project, "production")
            assert channel is not None
            publication = publishing.rollback_to(channel, sequence, user=owner, role=Role.OWNER)
            db.session.commit()
            db.session.expunge(publication)
            return publication

    def status_json(self, publication: Publication) -> dict[str, Any]:
        client = login(self.app.test_client(), self.owner_id)
        response = client.get(
            f"/projects/{self.project_id}/channels/production/publications/"
            f"{publication.sequence}/status.json"
        )
        assert response.status_code == 200
        data: dict[str, Any] = response.get_json()
        return data

    def readers(self, publication: Publication) -> set[str]:
        """The token ids that can open the objects of a publication's entries."""
        from anvil_client.stores import open_store
        from anvil_client.wire import recipient_ids

        store = open_store(self.store)
        try:
            found = {
                kid
                for entry in publication.releases
                for kid in recipient_ids(store.get(entry["object_path"]).data)
            }
        finally:
            store.close()
        return found

    def instances_page(self) -> str:
        client = login(self.app.test_client(), self.owner_id)
        response = client.get(f"/projects/{self.project_id}/instances")
        assert response.status_code == 200
        return response.get_data(as_text=True)

    def public_key(self) -> str:
        with self.app.app_context():
            return publishing.forge_public_key_text()

    # --- LIVE side ---------------------------------------------------------------------

    def start_client(self, token: str) -> ClientProcess:
        if self.script is None:
            self.script = self.tmp / "live_client.py"
            self.script.write_text(CLIENT_SCRIPT)
        n = len(self.clients)
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("ANVIL_")},
            "PYTHONPATH": str(ROOT),
            "STORE": self.store,
            "PROJECT_ID": self.project_id,
            "ANVIL_ACCESS_TOKEN": token,
            "TRUSTED_KEY": self.public_key(),
            "CACHE_DIR": str(self.tmp / f"cache-{n}"),
            "POLL": str(POLL),
            "FORGE_URL": self.url,
        }
        client = ClientProcess(self.script, env)
        self.clients.append(client)
        return client


@pytest.fixture
def forge(seaweed_bucket: str, tmp_path: Path) -> Iterator[Forge]:
    app = live_forge_app(tmp_path, seaweed_bucket)
    seeded = seed_checkout(app, reviewer=True)
    assert seeded.reviewer_id is not None
    with served(app) as url:
        forge = Forge(
            app=app,
            url=url,
            store=seaweed_bucket,
            project_id=seeded.project_id,
            owner_id=seeded.owner_id,
            reviewer_id=seeded.reviewer_id,
            set_id=seeded.set_id,
            tmp=tmp_path,
        )
        try:
            yield forge
        finally:
            for client in forge.clients:
                client.stop()


def serving(clients: list[ClientProcess], content: Callable[[ClientProcess], str]) -> bool:
    return all(c.status()["content_sha256"] == content(c) for c in clients)


def applied(forge: Forge, publication: Publication, count: int) -> dict[str, Any] | None:
    data = forge.status_json(publication)
    states = [i["state"] for i in data["instances"]]
    return data if states.count("applied") == count and len(states) == count else None


def missed_polls(client: ClientProcess, before: float, after: float) -> list[float]:
    """Polls that started after the publish had completed (``after``) and still saw the old
    pointer: empty when the client picked the publish up at its next poll."""
    gets = [(started, outcome) for started, outcome in client.report()["pointer_gets"]]
    changed = [started for started, outcome in gets if started >= before and outcome == "200"]
    assert changed, "the client never fetched a new pointer"
    return [s for s, outcome in gets if after < s < changed[0] and outcome == "304"]


def test_publish_revoke_and_rollback_with_three_client_processes(forge: Forge) -> None:
    main_token = forge.token("web")
    side_token = forge.token("batch jobs")
    forge.release("v1 Hello {{ name }}")
    v1 = forge.publish()
    a, b = forge.start_client(main_token), forge.start_client(main_token)
    c = forge.start_client(side_token)
    clients = [a, b, c]
    assert len({x.instance_id for x in clients}) == 3
    wait_for(lambda: serving(clients, lambda _: v1.content_sha256), "v1 everywhere")
    wait_for(lambda: applied(forge, v1, 3), "three heartbeats for v1")

    # Publish: every instance serves it after its next poll (a poll already in flight may
    # still see the old pointer), and the status page shows all three applied.
    forge.release("v2 Hi {{ name }}, welcome back")
    before = time.monotonic()
    v2 = forge.publish()
    published = time.monotonic()
    wait_for(lambda: serving(clients, lambda _: v2.content_sha256), "v2 everywhere")
    for client in clients:
        assert missed_polls(client, before, published) == []
        assert client.report()["text"] == "v2 Hi Ada, welcome back"
    data = wait_for(lambda: applied(forge, v2, 3), "three heartbeats for v2")
    assert data["summary"]["applied"] == 3
    assert v2.version is not None
    assert all(v2.version in str(i["version"]) for i in data["instances"])

    # Revoke c's token: the FORGE re-encrypts the channel for the remaining token at once.
    reencrypted = forge.revoke(side_token)
    assert reencrypted, "revoking must re-publish the channel"
    forge.release("v3 Good day {{ name }}")
    v3 = forge.publish()
    wait_for(lambda: serving([a, b], lambda _: v3.content_sha256), "v3 on the others")
    status = wait_for(lambda: (s := c.status())["last_error"] and s, "the revoked client's error")
    assert status["content_sha256"] == v2.content_sha256  # still its last good version
    assert c.report()["text"] == "v2 Hi Ada, welcome back"
    assert "decrypt" in status["last_error"].lower() or "token" in status["last_error"].lower()

    def reported() -> dict[str, Any] | None:
        # Heartbeats arrive after each apply, so wait for all three to be recorded.
        data = forge.status_json(v3)
        states = {i["instance_id"]: i["state"] for i in data["instances"]}
        wanted = {a.instance_id: "applied", b.instance_id: "applied", c.instance_id: "error"}
        return data if all(states.get(k) == v for k, v in wanted.items()) else None

    data = wait_for(reported, "the FORGE to show a and b applied and the revoked client's error")
    by_id = {i["instance_id"]: i for i in data["instances"]}
    assert by_id[c.instance_id]["revoked"] is True
    assert by_id[c.instance_id]["note"] == status["last_error"][: len(by_id[c.instance_id]["note"])]
    page = forge.instances_page()
    assert c.instance_id[:8] in page and "Revoked token" in page

    # Roll back to v1: a new sequence serving v1's content, re-encrypted for the current
    # tokens, picked up by the healthy instances. The revoked token can open none of the new
    # objects (its client may still serve v1 from its own cache: it had that content before
    # the revocation, so nothing new is revealed).
    rolled = forge.rollback(v1.sequence)
    assert rolled.sequence > v3.sequence
    assert [e["content_sha256"] for e in rolled.releases] == [v1.content_sha256]
    wait_for(lambda: serving([a, b], lambda _: v1.content_sha256), "the rollback")
    assert a.report()["text"] == "v1 Hello Ada"

    def healthy_applied() -> dict[str, Any] | None:
        data = forge.status_json(rolled)
        states = {i["instance_id"]: i["state"] for i in data["instances"]}
        return data if states.get(a.instance_id) == states.get(b.instance_id) == "applied" else None

    wait_for(healthy_applied, "a and b applied")
    assert forge.readers(rolled) == {main_token[6:18]}


def test_a_50_percent_rollout_splits_instances_by_instance_id(forge: Forge) -> None:
    token = forge.token("web")
    forge.release("base {{ name }}")
    base = forge.publish()
    clients = [forge.start_client(token) for _ in range(3)]
    wait_for(lambda: serving(clients, lambda _: base.content_sha256), "the base release")
    ids = [c.instance_id for c in clients]
    # Pick the new content so these three random instance ids really split at 50% (the
    # bucket depends on the content hash): at most a few tries.
    for attempt in range(50):
        forge.release(f"rolled out {{{{ name }}}} #{attempt}")
        content = forge.latest_content()
        inside = [in_rollout(i, content, 50) for i in ids]
        if any(inside) and not all(inside):
            break
    else:  # pragma: no cover - (3/4)^-50 odds
        pytest.fail("no content split the instances")
    rollout = forge.publish(rollout=50)
    assert rollout.rollout_percent == 50 and rollout.content_sha256 == content

    def expected(client: ClientProcess) -> str:
        chosen = in_rollout(client.instance_id, content, 50)
        return content if chosen else base.content_sha256

    def on_rollout() -> bool:
        reports = [c.status() for c in clients]
        return all(r["sequence"] == rollout.sequence for r in reports)

    wait_for(on_rollout, "every instance to take the rollout's pointer")
    for client in clients:
        served = client.status()
        assert served["sequence"] == rollout.sequence
        assert served["content_sha256"] == expected(client)
    data = wait_for(lambda: applied(forge, rollout, 3), "three applied heartbeats")
    by_id = {i["instance_id"]: i for i in data["instances"]}
    for client in clients:
        in_bucket = in_rollout(client.instance_id, content, 50)
        wanted = rollout.version if in_bucket else base.version
        assert wanted is not None and wanted in str(by_id[client.instance_id]["expected_version"])
