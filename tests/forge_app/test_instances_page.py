"""The Instances page and the publish status JSON: drift of whole entry lists, silence,
revoked tokens, rollouts, archiving, bulk forget, pagination and a constant query count.

Publications are real: the FORGE publishes to its default file store with the publisher, and
instances report through the heartbeat API, as a client would.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from anvil_client.wire import in_rollout
from forge_app.extensions import db
from forge_app.models import AuditEvent, Project, PromptSet, SetStatus, User, utcnow
from forge_app.models.distribution import AccessToken, Publication
from forge_app.models.instances import LiveInstance
from forge_app.services.instances import Entry
from forge_app.services.publishing import ensure_default_channels, get_channel, publish_version
from forge_app.services.tokens import create_token
from forge_app.services.versions import latest_release
from tests.forge_app.conftest import SAMPLE_PROMPTS, World, add_prompts, lock_version
from tests.forge_app.test_queries import count_queries

HEARTBEAT = "/api/v1/live/heartbeat"


@pytest.fixture
def app_config(app_config: dict[str, Any]) -> dict[str, Any]:
    return {**app_config, "FORGE_INSTANCE_STALE_SECONDS": 120}


@dataclass
class Published:
    token: str
    publications: list[Publication]

    @property
    def current(self) -> Publication:
        return self.publications[-1]


def new_token(app: Flask, world: World, name: str = "svc") -> str:
    with app.app_context():
        project = db.session.get(Project, world.project_id)
        owner = db.session.get(User, world.users["owner"])
        assert project is not None and owner is not None
        _, text = create_token(project, name, user=owner)
        db.session.commit()
        return text


def publish(
    app: Flask, world: World, channel: str = "production", rollout: int | None = None
) -> Publication:
    """Publish the set's latest LOCKED version (as the owner) with the real publisher."""
    with app.app_context():
        project = db.session.get(Project, world.project_id)
        prompt_set = db.session.get(PromptSet, world.set_id)
        owner = db.session.get(User, world.users["owner"])
        assert project is not None and prompt_set is not None and owner is not None
        ensure_default_channels(project)
        target = get_channel(project, channel)
        version = latest_release(db.session, prompt_set)
        assert target is not None and version is not None
        publication = publish_version(version, target, user=owner, rollout_percent=rollout)
        db.session.commit()
        db.session.expunge(publication)
        return publication


def new_release(app: Flask, world: World, text: str) -> None:
    from forge_app.models import Role
    from forge_app.services.workflow import unlock

    with app.app_context():
        prompt_set = db.session.get(PromptSet, world.set_id)
        editor = db.session.get(User, world.users["editor"])
        assert prompt_set is not None and editor is not None
        if prompt_set.status == "LOCKED":
            unlock(
                db.session,
                prompt_set,
                editor,
                role=Role.EDITOR,
                expected_revision=prompt_set.revision,
            )
            db.session.commit()
    add_prompts(app, world, {"welcome.message": {"template": text, "metadata": {}}})
    lock_version(app, world)


@pytest.fixture
def published(app: Flask, world: World) -> Published:
    add_prompts(app, world, SAMPLE_PROMPTS)
    lock_version(app, world)
    token = new_token(app, world)
    return Published(token, [publish(app, world)])


def entries(publication: Publication | None, previous: bool = False) -> list[dict[str, str]]:
    """What a client serving ``publication``'s list (or its rollout's previous list) reports."""
    if publication is None:
        return []
    source = publication.previous_releases if previous else publication.releases
    return [{k: e[k] for k in ("prompt_set_id", "version", "content_sha256")} for e in source or []]


def key(publication: Publication) -> str:
    """The rollout bucket key of a publication's list."""
    from anvil_client.wire import rollout_key

    return rollout_key([Entry.from_json(e) for e in publication.releases])


def beat(
    client: FlaskClient,
    token: str,
    world: World,
    instance_id: str,
    publication: Publication | None,
    **changes: Any,
) -> None:
    body: dict[str, Any] = {
        "instance_id": instance_id,
        "hostname": f"host-{instance_id[:4]}",
        "project_id": str(world.project_id),
        "channel": "production",
        "mode": "accepting",
        "sequence": publication.sequence if publication else None,
        "releases": entries(publication),
        "last_error": None,
        "client_version": "0.1.0",
    }
    body.update(changes)
    response = client.post(
        HEARTBEAT,
        data=json.dumps(body),
        content_type="application/json",
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code in (204, 401), response.get_json()


def set_last_seen(app: Flask, instance_id: str, ago: timedelta) -> None:
    with app.app_context():
        row = db.session.scalar(select(LiveInstance).where(LiveInstance.instance_id == instance_id))
        assert row is not None
        row.last_seen_at = utcnow() - ago
        db.session.commit()


def revoke(app: Flask, token: str) -> None:
    with app.app_context():
        row = db.session.scalar(select(AccessToken).where(AccessToken.token_id == token[6:18]))
        assert row is not None
        row.revoked_at = utcnow()
        db.session.commit()


def row_html(html: str, instance_id: str) -> str:
    match = re.search(rf'<tr[^>]*data-instance="{instance_id}".*?</tr>', html, re.S)
    assert match is not None, f"no row for {instance_id}"
    return match.group(0)


def changed(publication: Publication, version: str, digit: str) -> list[dict[str, str]]:
    """The publication's list with its first entry swapped for another version."""
    served = entries(publication)
    served[0] = {**served[0], "version": version, "content_sha256": digit * 64}
    return served


def ids(n: int) -> list[str]:
    return [str(uuid.uuid4()) for _ in range(n)]


# --- the Instances page ---------------------------------------------------------------------


def test_page_highlights_drift_silence_revocation_and_errors(
    app: Flask, world: World, published: Published, client_as: Any
) -> None:
    api = app.test_client()
    ok, drifted, silent, revoked_one, failing = ids(5)
    current = published.current
    beat(api, published.token, world, ok, current)
    beat(api, published.token, world, drifted, current, releases=changed(current, "0.0.9", "b"))
    beat(api, published.token, world, silent, current)
    set_last_seen(app, silent, timedelta(minutes=5))  # the stale limit here is 120 s
    second = new_token(app, world, "old service")
    beat(api, second, world, revoked_one, current)
    revoke(app, second)
    beat(api, published.token, world, failing, current, last_error="the store cannot be reached")

    response = client_as("viewer").get(f"/projects/{world.project_id}/instances")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert f"The channel serves (sequence {current.sequence})" in html
    assert f"Main</span> <strong>{current.version}</strong>" in html

    ok_row = row_html(html, ok)
    assert "flag-ok" in ok_row and "needs-attention" not in ok_row and "host-" in ok_row
    drift_row = row_html(html, drifted)
    assert f"Drift: should serve Main {current.version}" in drift_row
    assert "<strong>0.0.9</strong>" in drift_row  # what it serves, set by set
    assert "needs-attention" in drift_row
    silent_row = row_html(html, silent)
    assert "Silent" in silent_row and "is-stale" in silent_row and "flag-drift" not in silent_row
    revoked_row = row_html(html, revoked_one)
    assert "Revoked token" in revoked_row and "old service" in revoked_row
    error_row = row_html(html, failing)
    assert "the store cannot be reached" in error_row and "flag-error" in error_row
    # The summary counts them.
    stats = re.search(r'<ul class="live-stats".*?</ul>', html, re.S)
    assert stats is not None
    numbers = re.findall(r'stat-value">(\d+)<', stats.group(0))
    assert numbers == ["5", "1", "1", "1", "1"]  # total, drift, silent, revoked, error
    assert "over 2 min" in stats.group(0)


def test_filters_by_channel_and_attention(
    app: Flask, world: World, published: Published, client_as: Any
) -> None:
    api = app.test_client()
    fine, staging, drifted = ids(3)
    beat(api, published.token, world, fine, published.current)
    beat(api, published.token, world, staging, None, channel="staging")
    beat(
        api,
        published.token,
        world,
        drifted,
        published.current,
        releases=changed(published.current, "0.0.1", "c"),
    )
    client = client_as("viewer")
    base = f"/projects/{world.project_id}/instances"
    html = client.get(base + "?channel=staging").get_data(as_text=True)
    assert staging in html and fine not in html
    assert "This FORGE has published nothing to this channel." in html
    html = client.get(base + "?show=attention").get_data(as_text=True)
    assert drifted in html and fine not in html


def test_behind_is_not_drift(
    app: Flask, world: World, published: Published, client_as: Any
) -> None:
    """Same content on an older pointer (e.g. before a re-encryption) is only 'behind'."""
    api = app.test_client()
    [instance] = ids(1)
    beat(api, published.token, world, instance, published.current, sequence=0)
    html = client_as("viewer").get(f"/projects/{world.project_id}/instances").get_data(True)
    row = row_html(html, instance)
    assert "Behind" in row and "Drift" not in row


def test_empty_page_explains_how_instances_report(app: Flask, world: World, client_as: Any) -> None:
    html = client_as("viewer").get(f"/projects/{world.project_id}/instances").get_data(True)
    assert "No instance has reported yet." in html
    assert "forge_url" in html


def test_nav_links_to_the_instances_page(app: Flask, world: World, client_as: Any) -> None:
    html = client_as("viewer").get(f"/projects/{world.project_id}").get_data(as_text=True)
    assert f'href="/projects/{world.project_id}/instances"' in html


def test_other_organisations_see_nothing(
    app: Flask, world: World, published: Published, client_as: Any
) -> None:
    [instance] = ids(1)
    beat(app.test_client(), published.token, world, instance, published.current)
    outsider = client_as("outsider")
    assert outsider.get(f"/projects/{world.project_id}/instances").status_code == 404
    url = (
        f"/projects/{world.project_id}/channels/production/publications/"
        f"{published.current.sequence}/status.json"
    )
    assert outsider.get(url).status_code == 404
    forget = f"/projects/{world.project_id}/instances/{instance}/forget"
    assert outsider.post(forget).status_code == 404
    assert app.test_client().get(url, headers={"Accept": "application/json"}).status_code == 401


def test_instances_of_another_project_are_not_listed(
    app: Flask, world: World, published: Published, client_as: Any
) -> None:
    with app.app_context():
        other_owner = db.session.get(User, world.users["outsider"])
        other = db.session.get(Project, world.other_project_id)
        assert other_owner is not None and other is not None
        _, other_token = create_token(other, "globex", user=other_owner)
        db.session.commit()
    [theirs] = ids(1)
    beat(
        app.test_client(), other_token, world, theirs, None, project_id=str(world.other_project_id)
    )
    html = client_as("owner").get(f"/projects/{world.project_id}/instances").get_data(True)
    assert theirs not in html


def test_only_owners_forget_and_only_silent_instances(
    app: Flask, world: World, published: Published, client_as: Any
) -> None:
    api = app.test_client()
    silent, fresh = ids(2)
    beat(api, published.token, world, silent, published.current)
    beat(api, published.token, world, fresh, published.current)
    set_last_seen(app, silent, timedelta(hours=1))
    base = f"/projects/{world.project_id}/instances"
    assert client_as("editor").post(f"{base}/{silent}/forget").status_code == 403
    owner = client_as("owner")
    page = owner.get(base).get_data(as_text=True)
    # The Forget button leads to the confirmation page, named after its instance.
    assert f'Forget…<span class="visually-hidden">: instance {silent}</span>' in page
    assert f": instance {fresh}</span>" not in page

    response = owner.post(f"{base}/{fresh}/forget", follow_redirects=True)
    assert "only stale instances can be forgotten" in response.get_data(as_text=True)
    response = owner.post(f"{base}/{silent}/forget", follow_redirects=True)
    assert f"Forgot instance {silent[:8]}" in response.get_data(as_text=True)
    assert owner.post(f"{base}/{uuid.uuid4()}/forget").status_code == 404
    with app.app_context():
        left = set(db.session.scalars(select(LiveInstance.instance_id)))
        event = db.session.scalar(select(AuditEvent).where(AuditEvent.action == "instance.forget"))
    assert left == {fresh}
    assert event is not None and event.details["instance_id"] == silent


def test_a_forgotten_instance_comes_back_with_its_next_heartbeat(
    app: Flask, world: World, published: Published, client_as: Any
) -> None:
    api = app.test_client()
    [instance] = ids(1)
    beat(api, published.token, world, instance, published.current)
    set_last_seen(app, instance, timedelta(hours=1))
    owner = client_as("owner")
    owner.post(f"/projects/{world.project_id}/instances/{instance}/forget")
    beat(api, published.token, world, instance, published.current)
    assert instance in owner.get(f"/projects/{world.project_id}/instances").get_data(True)


# --- the publish status JSON -----------------------------------------------------------------


def status(client: FlaskClient, world: World, publication: Publication) -> dict[str, Any]:
    url = (
        f"/projects/{world.project_id}/channels/production/publications/"
        f"{publication.sequence}/status.json"
    )
    response = client.get(url)
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    data: dict[str, Any] = response.get_json()
    return data


def states(data: dict[str, Any]) -> dict[str, str]:
    return {item["instance_id"]: item["state"] for item in data["instances"]}


def test_status_moves_from_pending_to_applied(
    app: Flask, world: World, published: Published, client_as: Any
) -> None:
    api = app.test_client()
    first = published.current
    a, b = ids(2)
    beat(api, published.token, world, a, first)
    beat(api, published.token, world, b, first)
    new_release(app, world, "Hello again {{ name }}!")
    second = publish(app, world)
    viewer = client_as("viewer")

    data = status(viewer, world, second)
    assert data["publication"]["sequence"] == second.sequence
    assert data["publication"]["current"] is True
    assert states(data) == {a: "pending", b: "pending"}
    assert data["summary"] == {"applied": 0, "pending": 2, "error": 0, "superseded": 0, "total": 2}
    assert {i["expected_version"] for i in data["instances"]} == {f"Main {second.version}"}

    beat(api, published.token, world, a, second)
    beat(api, published.token, world, b, first, last_error="cannot decrypt the bundle")
    data = status(viewer, world, second)
    assert states(data) == {a: "applied", b: "error"}
    [error] = [i for i in data["instances"] if i["instance_id"] == b]
    assert error["note"] == "cannot decrypt the bundle"
    assert data["instances"][0]["instance_id"] == b  # errors first

    # The older publication is now superseded by the newer one.
    old = status(viewer, world, first)
    assert old["publication"]["current"] is False
    assert old["publication"]["latest_sequence"] == second.sequence
    assert states(old)[a] == "superseded"


def test_revoked_and_silent_instances_are_flagged(
    app: Flask, world: World, published: Published, client_as: Any
) -> None:
    api = app.test_client()
    second_token = new_token(app, world, "second")
    revoked_one, silent = ids(2)
    beat(api, second_token, world, revoked_one, None)
    revoke(app, second_token)
    beat(api, published.token, world, silent, None)
    set_last_seen(app, silent, timedelta(minutes=10))
    data = status(client_as("viewer"), world, published.current)
    by_id = {i["instance_id"]: i for i in data["instances"]}
    assert by_id[revoked_one]["revoked"] is True
    assert by_id[revoked_one]["state"] == "error"
    assert by_id[revoked_one]["note"] == "its ACCESS_TOKEN was revoked"
    assert by_id[silent]["stale"] is True and by_id[silent]["state"] == "pending"
    assert data["instances"][-1]["instance_id"] == silent  # silent ones last


def test_rollout_expects_each_instance_to_serve_its_bucket(
    app: Flask, world: World, published: Published, client_as: Any
) -> None:
    api = app.test_client()
    first = published.current
    instances = ids(12)
    for instance in instances:
        beat(api, published.token, world, instance, first)
    new_release(app, world, "Rolled out {{ name }}")
    rollout = publish(app, world, rollout=50)
    assert rollout.rollout_percent == 50
    inside = {i for i in instances if in_rollout(i, key(rollout), 50)}
    assert 0 < len(inside) < len(instances)  # a split, for these ids

    viewer = client_as("viewer")
    data = status(viewer, world, rollout)
    assert data["publication"]["previous_version"] == f"Main {first.version}"
    expected = {i["instance_id"]: i["expected_version"] for i in data["instances"]}
    assert expected == {
        i: f"Main {rollout.version if i in inside else first.version}" for i in instances
    }
    # Every instance reports the next pointer, each with the content of its bucket.
    for instance in instances:
        served = rollout if instance in inside else first
        beat(
            api,
            published.token,
            world,
            instance,
            served,
            sequence=rollout.sequence,
        )
    data = status(viewer, world, rollout)
    assert set(states(data).values()) == {"applied"}
    # An instance outside the bucket that served the new content anyway did not apply it.
    outsider = next(i for i in instances if i not in inside)
    beat(api, published.token, world, outsider, rollout)
    [odd] = [i for i in status(viewer, world, rollout)["instances"] if i["instance_id"] == outsider]
    assert odd["state"] == "error"
    assert (
        odd["note"]
        == f"serves Main {rollout.version} where this publication gives it Main {first.version}"
    )


def test_unknown_publication_is_404(
    app: Flask, world: World, published: Published, client_as: Any
) -> None:
    viewer = client_as("viewer")
    base = f"/projects/{world.project_id}/channels"
    assert viewer.get(f"{base}/production/publications/99/status.json").status_code == 404
    assert viewer.get(f"{base}/staging/publications/1/status.json").status_code == 404
    assert viewer.get(f"{base}/NOPE/publications/1/status.json").status_code == 404


def test_publish_status_page_renders_the_same_states_without_javascript(
    app: Flask, world: World, published: Published, client_as: Any
) -> None:
    api = app.test_client()
    done, waiting = ids(2)
    current = published.current
    beat(api, published.token, world, done, current)
    beat(api, published.token, world, waiting, None, last_error="the store cannot be reached")
    url = f"/projects/{world.project_id}/channels/production/publications/{current.sequence}"
    response = client_as("viewer").get(url)
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert f'data-live-status="{url}/status.json"' in html
    assert 'data-state="applied"' in row_html(html, done)
    waiting_row = row_html(html, waiting)
    assert 'data-state="error"' in waiting_row and "the store cannot be reached" in waiting_row
    assert re.search(r'<dd data-count="applied">1</dd>', html)
    assert re.search(r'<dd data-count="error">1</dd>', html)
    assert "live-status.js" in html
    # CSP: no inline script, no style attributes.
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html)
    assert " style=" not in html
    assert client_as("outsider").get(url).status_code == 404


def test_without_the_store_the_forge_judges_by_its_own_records(
    app: Flask, world: World, published: Published, client_as: Any
) -> None:
    """A store that lost the pointer and history (or cannot be read) does not blank the page:
    the FORGE falls back to its Publication rows, rollouts included."""
    api = app.test_client()
    first = published.current
    new_release(app, world, "Second {{ name }}")
    rollout = publish(app, world, rollout=50)
    ids_ = ids(8)
    for instance in ids_:
        beat(api, published.token, world, instance, first, sequence=rollout.sequence)
    store = Path(app.config["FORGE_STORE_URL"].removeprefix("file://"))
    channel_dir = store / "projects" / str(world.project_id) / "channels"
    (channel_dir / "production.json").unlink()
    for entry in (channel_dir / "production" / "history").iterdir():
        entry.unlink()
    from forge_app.services import instance_targets

    instance_targets._history = instance_targets._HistoryCache()  # nothing remembered from before

    html = client_as("viewer").get(f"/projects/{world.project_id}/instances").get_data(True)
    assert f"The channel serves (sequence {rollout.sequence}), rolled out to 50%" in html
    assert f"Main</span> <strong>{rollout.version}</strong>" in html
    assert 'The others keep <ul class="served-list"><li>' in html
    assert f"Main</span> <strong>{first.version}</strong>" in html
    data = status(client_as("viewer"), world, rollout)
    assert data["publication"]["previous_version"] == f"Main {first.version}"
    for item in data["instances"]:
        inside = in_rollout(item["instance_id"], key(rollout), 50)
        assert item["state"] == ("error" if inside else "applied")


# --- several prompt sets on one channel (pointer v2) -----------------------------------------


def add_second_set(app: Flask, world: World) -> World:
    """A second prompt set, "Checkout helper", locked; returns a World whose set it is."""
    with app.app_context():
        prompt_set = PromptSet(
            project_id=world.project_id,
            name="Checkout helper",
            description="",
            status=SetStatus.LIVE.value,
        )
        db.session.add(prompt_set)
        db.session.commit()
        other = replace(world, set_id=prompt_set.id)
    add_prompts(app, other, {"checkout.hint": {"template": "Pay with {{ card }}", "metadata": {}}})
    lock_version(app, other)
    return other


def test_drift_compares_every_set_an_instance_serves(
    app: Flask, world: World, published: Published, client_as: Any
) -> None:
    api = app.test_client()
    checkout = add_second_set(app, world)
    both = publish(app, checkout)
    assert len(both.releases) == 2
    whole, partial, wrong = ids(3)
    beat(api, published.token, world, whole, both)
    beat(api, published.token, world, partial, both, releases=entries(published.current))
    swapped = entries(both)
    swapped[1] = {**swapped[1], "version": "9.9.9", "content_sha256": "d" * 64}
    beat(api, published.token, world, wrong, both, releases=swapped)
    html = client_as("viewer").get(f"/projects/{world.project_id}/instances").get_data(True)
    whole_row = row_html(html, whole)
    assert "flag-ok" in whole_row
    assert "Main</span>" in whole_row and "Checkout helper</span>" in whole_row
    partial_row = row_html(html, partial)
    checkout_entry = next(e for e in both.releases if e["name"] == "Checkout helper")
    assert f"Drift: should serve Checkout helper {checkout_entry['version']}" in partial_row
    assert "Drift" in row_html(html, wrong)

    data = status(client_as("viewer"), world, both)
    assert states(data) == {whole: "applied", partial: "error", wrong: "error"}
    assert {e["name"] for e in data["publication"]["releases"]} == {"Main", "Checkout helper"}


# --- finding 7: archiving, bulk forget, pagination, a constant number of queries -------------


def test_long_silent_instances_are_archived_but_stay_queryable(
    app: Flask, world: World, published: Published, client_as: Any
) -> None:
    api = app.test_client()
    old, fresh = ids(2)
    beat(api, published.token, world, old, published.current)
    beat(api, published.token, world, fresh, published.current)
    set_last_seen(app, old, timedelta(days=31))
    viewer = client_as("viewer")
    base = f"/projects/{world.project_id}/instances"
    html = viewer.get(base).get_data(as_text=True)
    assert old not in html and fresh in html
    assert "Archived (1)" in html
    archived = viewer.get(base + "?show=archived").get_data(as_text=True)
    assert old in archived and fresh not in archived
    assert "Archived</li>" in row_html(archived, old)
    with app.app_context():
        event = db.session.scalar(select(AuditEvent).where(AuditEvent.action == "instance.archive"))
    assert event is not None and event.details["instance_ids"] == [old]
    # It reports again: back in the main list.
    beat(api, published.token, world, old, published.current)
    assert old in viewer.get(base).get_data(as_text=True)


def test_the_archive_limit_is_configurable(
    app_config: dict[str, Any], world: World, published: Published
) -> None:
    from forge_app import create_app
    from tests.forge_app.conftest import login

    app = create_app({**app_config, "FORGE_INSTANCE_ARCHIVE_DAYS": 2})
    try:
        [instance] = ids(1)
        beat(app.test_client(), published.token, world, instance, published.current)
        set_last_seen(app, instance, timedelta(days=3))
        client = login(app.test_client(), world.users["viewer"])
        html = client.get(f"/projects/{world.project_id}/instances").get_data(as_text=True)
        assert instance not in html and "archived after 2 days" in html
    finally:
        with app.app_context():
            db.engine.dispose()


def test_owners_forget_silent_instances_in_bulk_after_confirming(
    app: Flask, world: World, published: Published, client_as: Any
) -> None:
    api = app.test_client()
    silent = ids(3)
    [fresh] = ids(1)
    for instance in [*silent, fresh]:
        beat(api, published.token, world, instance, published.current)
    for instance in silent:
        set_last_seen(app, instance, timedelta(hours=2))
    url = f"/projects/{world.project_id}/instances/forget"
    editor = client_as("editor")
    assert editor.get(url + "?scope=silent").status_code == 403
    assert editor.post(url, data={"scope": "silent", "confirm": "yes"}).status_code == 403
    owner = client_as("owner")
    assert f'href="{url}?scope=silent"' in owner.get(url[: -len("/forget")]).get_data(True)
    page = owner.get(url + "?scope=silent")
    assert page.status_code == 200
    assert "3 silent instances" in page.get_data(as_text=True)
    assert owner.get(url + "?scope=everything").status_code == 400
    # Without the confirmation box nothing happens.
    response = owner.post(url, data={"scope": "silent"}, follow_redirects=True)
    assert "Nothing was forgotten" in response.get_data(as_text=True)
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(LiveInstance)) == 4
    response = owner.post(url, data={"scope": "silent", "confirm": "yes"}, follow_redirects=True)
    assert "Forgot 3 silent instances." in response.get_data(as_text=True)
    with app.app_context():
        left = set(db.session.scalars(select(LiveInstance.instance_id)))
        event = db.session.scalar(
            select(AuditEvent).where(AuditEvent.action == "instance.forget_bulk")
        )
    assert left == {fresh}
    assert event is not None and event.details["count"] == 3
    assert set(event.details["instance_ids"]) == set(silent)
    assert event.actor_email == world.emails["owner"]


def test_bulk_forget_of_archived_instances_spares_the_merely_silent(
    app: Flask, world: World, published: Published, client_as: Any
) -> None:
    api = app.test_client()
    archived, silent = ids(2)
    for instance in (archived, silent):
        beat(api, published.token, world, instance, published.current)
    set_last_seen(app, archived, timedelta(days=40))
    set_last_seen(app, silent, timedelta(hours=3))
    owner = client_as("owner")
    owner.get(f"/projects/{world.project_id}/instances")  # archives the first one
    url = f"/projects/{world.project_id}/instances/forget"
    assert "1 archived instance" in owner.get(url + "?scope=archived").get_data(True)
    owner.post(url, data={"scope": "archived", "confirm": "yes"})
    with app.app_context():
        assert set(db.session.scalars(select(LiveInstance.instance_id))) == {silent}


def test_bulk_forget_needs_the_csrf_token(csrf_app: Flask, csrf_world: World) -> None:
    from tests.forge_app.conftest import login

    client = login(csrf_app.test_client(), csrf_world.users["owner"])
    url = f"/projects/{csrf_world.project_id}/instances/forget"
    response = client.post(url, data={"scope": "silent", "confirm": "yes"})
    assert response.status_code == 400
    page = client.get(url + "?scope=silent").get_data(as_text=True)
    assert 'name="csrf_token"' in page


def test_the_page_is_paginated(
    app_config: dict[str, Any], world: World, published: Published
) -> None:
    from forge_app import create_app
    from tests.forge_app.conftest import login

    app = create_app({**app_config, "FORGE_INSTANCES_PER_PAGE": 5})
    try:
        api = app.test_client()
        many = ids(12)
        for instance in many:
            beat(api, published.token, world, instance, published.current)
        client = login(app.test_client(), world.users["viewer"])
        base = f"/projects/{world.project_id}/instances"
        seen: list[str] = []
        for page in (1, 2, 3):
            html = client.get(f"{base}?page={page}").get_data(as_text=True)
            rows = re.findall(r'<tr[^>]*data-instance="([0-9a-f-]{36})"', html)
            assert len(rows) == (5 if page < 3 else 2)
            seen += rows
            assert f"page {page} of 3" in html
            assert ('rel="next"' in html) == (page < 3)
        assert sorted(seen) == sorted(many)
        assert 'stat-value">12<' in client.get(base).get_data(as_text=True)
        assert client.get(f"{base}?page=abc").status_code == 200
        assert client.get(f"{base}?page=99").status_code == 200
    finally:
        with app.app_context():
            db.engine.dispose()


def test_query_counts_do_not_grow_with_instances(
    app: Flask, world: World, published: Published, client_as: Any
) -> None:
    api = app.test_client()
    viewer = client_as("viewer")
    current = published.current
    pages = {
        "instances": f"/projects/{world.project_id}/instances",
        "attention": f"/projects/{world.project_id}/instances?show=attention",
        "status.json": (
            f"/projects/{world.project_id}/channels/production/publications/"
            f"{current.sequence}/status.json"
        ),
        "status": (
            f"/projects/{world.project_id}/channels/production/publications/{current.sequence}"
        ),
    }
    counts: dict[str, list[int]] = {}
    for total in (3, 40):
        with app.app_context():
            have = db.session.scalar(select(func.count()).select_from(LiveInstance)) or 0
        for n, instance in enumerate(ids(total - have)):
            problem = {"last_error": "boom"} if n % 3 == 0 else {}
            beat(api, published.token, world, instance, current, **problem)
        for name, url in pages.items():
            viewer.get(url)  # warm-up
            with count_queries(app) as statements:
                response = viewer.get(url)
            assert response.status_code == 200, name
            counts.setdefault(name, []).append(len(statements))
    for name, (small, large) in counts.items():
        assert large == small, f"{name}: {small} queries for 3 instances, {large} for 40"
        assert small <= 14, f"{name}: {small} queries"


def test_a_record_without_the_previous_list_reads_the_verified_history_copy(
    app: Flask, world: World, published: Published, client_as: Any
) -> None:
    """Older records (or ones written by CI) lack a rollout's previous list: the FORGE reads
    the signed history copy, verified by ``anvil_client.wire.verify_pointer``, and trusts no
    copy that fails it."""
    from anvil_client.wire import history_key
    from forge_app.services import instance_targets

    first = published.current
    new_release(app, world, "Third {{ name }}")
    rollout = publish(app, world, rollout=50)
    with app.app_context():
        row = db.session.get(Publication, rollout.id)
        assert row is not None
        row.previous_json = None
        db.session.commit()
    instance_targets._history = instance_targets._HistoryCache()
    viewer = client_as("viewer")
    data = status(viewer, world, rollout)
    assert data["publication"]["previous_version"] == f"Main {first.version}"

    store = Path(app.config["FORGE_STORE_URL"].removeprefix("file://"))
    copy = store / history_key(str(world.project_id), "production", rollout.sequence)
    envelope = json.loads(copy.read_bytes())
    envelope["signatures"][0]["sig"] = envelope["signatures"][0]["sig"][::-1]
    copy.write_text(json.dumps(envelope))
    instance_targets._history = instance_targets._HistoryCache()
    data = status(viewer, world, rollout)
    assert data["publication"]["previous_version"] is None  # unknown, not forged
    assert {i["expected_version"] for i in data["instances"]} <= {None, f"Main {rollout.version}"}
