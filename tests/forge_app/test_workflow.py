"""The prompt set workflow on SQLite and on a real PostgreSQL: LIVE → REVIEW → LOCKED → LIVE,
versions as exact bundle bytes, and every rule enforced by the server."""

from __future__ import annotations

import html
import json
import re
from typing import Any

import pytest
from flask import Flask

from anvil_client.wire import canonical_json, parse_bundle, sha256_hex
from forge_app.errors import ForgeError, Kind
from forge_app.extensions import db
from forge_app.models import AuditEvent, PromptSet, PromptSetVersion, Role, SetStatus, User
from forge_app.services.drafts import touch_live_set
from forge_app.services.versions import next_version
from forge_app.services.workflow import approve, submit
from tests.forge_app.conftest import SAMPLE_PROMPTS, World, add_prompts, lock_version


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _revision(client: Any, url: str) -> str:
    """The revision a form on ``url`` posts, directly or on its confirmation page."""
    page = client.get(url).get_data(True)
    pages = [page] + [
        client.get(html.unescape(link)).get_data(True)
        for link in re.findall(r'href="(/confirm/[^"]+)"', page)
    ]
    for text in pages:
        if match := re.search(r'name="revision" value="(\d+)"', text):
            return match.group(1)
    raise AssertionError(f"no revision on {url}")


def _status(app: Flask, world: World) -> str:
    with app.app_context():
        prompt_set = db.session.get(PromptSet, world.set_id)
        assert prompt_set is not None
        return prompt_set.status


def test_full_cycle_through_the_web(app: Flask, world: World, client_as: Any, set_url: str) -> None:
    add_prompts(app, world, SAMPLE_PROMPTS)
    editor, reviewer = client_as("editor"), client_as("reviewer")

    response = editor.post(
        f"{set_url}/submit",
        data={
            "bump": "minor",
            "changelog": "First prompts",
            "revision": _revision(editor, f"{set_url}/submit"),
        },
    )
    assert response.status_code == 302
    assert _status(app, world) == "REVIEW"
    review = reviewer.get(f"{set_url}/review").get_data(True)
    assert "welcome.message" in review and "First prompts" in review and "0.1.0" in review

    # read-only while in review: an edit is refused and the text is kept on the page
    response = editor.post(
        f"{set_url}/prompts/welcome.message",
        data={
            "key": "welcome.message",
            "kind": "text",
            "template": "Changed {{ name }}",
            "revision": "1",
            "action": "save",
        },
    )
    assert response.status_code == 409
    assert "Changed {{ name }}" in response.get_data(True)

    response = reviewer.post(
        f"{set_url}/approve", data={"revision": _revision(reviewer, f"{set_url}/review")}
    )
    assert response.status_code == 302
    assert response.headers["Location"].endswith("/versions/0.1.0")
    assert _status(app, world) == "LOCKED"
    page = reviewer.get(response.headers["Location"]).get_data(True)
    assert "support.chat" in page and "First prompts" in page

    # unlock → LIVE; the version is unchanged
    with app.app_context():
        before = db.session.query(PromptSetVersion).one().bundle_json
    assert (
        editor.post(f"{set_url}/unlock", data={"revision": _revision(editor, set_url)}).status_code
        == 302
    )
    assert _status(app, world) == "LIVE"
    with app.app_context():
        assert db.session.query(PromptSetVersion).one().bundle_json == before
        actions = [e.action for e in db.session.query(AuditEvent).order_by(AuditEvent.id)]
    assert actions[-3:] == ["prompt_set.submit", "prompt_set.approve", "prompt_set.unlock"]


def test_version_is_the_exact_canonical_bundle(
    app: Flask, world: World, client_as: Any, set_url: str
) -> None:
    add_prompts(app, world, SAMPLE_PROMPTS)
    version = lock_version(app, world)
    with app.app_context():
        record = db.session.query(PromptSetVersion).one()
        data = record.bundle_bytes
        assert sha256_hex(data) == record.content_sha256
        document = json.loads(data)
        assert canonical_json(document) == data
        assert document["type"] == "anvil.bundle/v1"
        assert document["version"] == version == "0.1.0"
        assert document["project_id"] == str(world.project_id)
        assert document["prompt_set_id"] == str(world.set_id)
        assert document["created_at"].endswith("Z")
        snapshot = document["snapshot"]
        assert snapshot["welcome.message"]["variables"] == ["name", "plan"]
        assert snapshot["support.chat"]["variables"] == ["product", "question"]
        assert snapshot["welcome.message"]["metadata"] == {
            "description": "Greets a new user",
            "temperature": 0.2,
        }
        bundle = parse_bundle(data, content_sha256=record.content_sha256)  # the client reads it
        assert set(bundle.prompts) == {"welcome.message", "support.chat"}
    download = client_as("viewer").get(f"{set_url}/versions/0.1.0/bundle.json")
    assert download.data == data
    assert download.headers["X-Content-SHA256"] == sha256_hex(data)


def test_the_submitter_cannot_approve_their_own_change(
    app: Flask, world: World, client_as: Any, set_url: str
) -> None:
    add_prompts(app, world, SAMPLE_PROMPTS)
    reviewer = client_as("reviewer")
    reviewer.post(
        f"{set_url}/submit",
        data={
            "bump": "patch",
            "changelog": "x",
            "revision": _revision(reviewer, f"{set_url}/submit"),
        },
    )
    assert _status(app, world) == "REVIEW"
    page = reviewer.get(f"{set_url}/review").get_data(True)
    assert "another reviewer has to approve it" in page
    response = reviewer.post(f"{set_url}/approve", data={"revision": _revision(reviewer, set_url)})
    assert response.status_code == 403
    assert "another reviewer" in response.get_data(True)
    assert _status(app, world) == "REVIEW"
    other = client_as("reviewer2")
    assert (
        other.post(f"{set_url}/approve", data={"revision": _revision(other, set_url)}).status_code
        == 302
    )
    assert _status(app, world) == "LOCKED"


def test_roles_are_checked_by_the_workflow_itself(app: Flask, world: World) -> None:
    add_prompts(app, world, SAMPLE_PROMPTS)
    with app.app_context():
        prompt_set = db.session.get(PromptSet, world.set_id)
        viewer = db.session.get(User, world.users["viewer"])
        editor = db.session.get(User, world.users["editor"])
        assert prompt_set is not None and viewer is not None and editor is not None
        with pytest.raises(ForgeError) as error:
            submit(
                db.session,
                prompt_set,
                viewer,
                role=Role.VIEWER,
                bump="minor",
                changelog="x",
                expected_revision=None,
            )
        assert error.value.kind is Kind.FORBIDDEN
        submit(
            db.session,
            prompt_set,
            editor,
            role=Role.EDITOR,
            bump="minor",
            changelog="x",
            expected_revision=None,
        )
        db.session.commit()
        with pytest.raises(ForgeError) as error:
            approve(
                db.session,
                prompt_set,
                viewer,
                role=Role.EDITOR,
                expected_revision=prompt_set.revision,
            )
        assert error.value.kind is Kind.FORBIDDEN
        db.session.rollback()
        assert db.session.get(PromptSet, world.set_id).status == "REVIEW"  # type: ignore[union-attr]


def test_request_changes_needs_a_comment_and_shows_it(
    app: Flask, world: World, client_as: Any, set_url: str
) -> None:
    add_prompts(app, world, SAMPLE_PROMPTS)
    editor, reviewer = client_as("editor"), client_as("reviewer")
    editor.post(
        f"{set_url}/submit",
        data={
            "bump": "minor",
            "changelog": "x",
            "revision": _revision(editor, f"{set_url}/submit"),
        },
    )
    revision = _revision(reviewer, f"{set_url}/review")
    response = reviewer.post(
        f"{set_url}/request-changes", data={"comment": "  ", "revision": revision}
    )
    assert response.status_code == 302 and _status(app, world) == "REVIEW"
    response = reviewer.post(
        f"{set_url}/request-changes",
        data={"comment": "Please be friendlier.", "revision": revision},
    )
    assert response.status_code == 302 and _status(app, world) == "LIVE"
    assert "Please be friendlier." in editor.get(set_url).get_data(True)


def test_approving_a_stale_review_is_refused(
    app: Flask, world: World, client_as: Any, set_url: str
) -> None:
    """The reviewer approves exactly what they looked at: a withdraw + edit + resubmit in the
    meantime makes their approval fail instead of locking content they never saw."""
    add_prompts(app, world, SAMPLE_PROMPTS)
    editor, reviewer = client_as("editor"), client_as("reviewer")
    editor.post(
        f"{set_url}/submit",
        data={
            "bump": "minor",
            "changelog": "x",
            "revision": _revision(editor, f"{set_url}/submit"),
        },
    )
    seen = _revision(reviewer, f"{set_url}/review")
    editor.post(f"{set_url}/withdraw", data={"revision": _revision(editor, set_url)})
    add_prompts(app, world, {"sneaky.prompt": {"template": "surprise"}})
    editor.post(
        f"{set_url}/submit",
        data={
            "bump": "minor",
            "changelog": "y",
            "revision": _revision(editor, f"{set_url}/submit"),
        },
    )
    response = reviewer.post(f"{set_url}/approve", data={"revision": seen})
    assert response.status_code == 302
    assert "changed since you opened it" in reviewer.get(response.headers["Location"]).get_data(
        True
    )
    assert _status(app, world) == "REVIEW"
    with app.app_context():
        assert db.session.query(PromptSetVersion).count() == 0


def test_submit_refuses_an_empty_or_unchanged_set(
    app: Flask, world: World, client_as: Any, set_url: str
) -> None:
    editor = client_as("editor")
    response = editor.post(
        f"{set_url}/submit",
        data={
            "bump": "minor",
            "changelog": "x",
            "revision": _revision(editor, f"{set_url}/submit"),
        },
    )
    assert response.status_code == 400 and "at least one prompt" in response.get_data(True)
    add_prompts(app, world, SAMPLE_PROMPTS)
    lock_version(app, world)
    editor.post(f"{set_url}/unlock", data={"revision": _revision(editor, set_url)})
    response = editor.post(
        f"{set_url}/submit",
        data={
            "bump": "patch",
            "changelog": "x",
            "revision": _revision(editor, f"{set_url}/submit"),
        },
    )
    assert (
        response.status_code == 400
        and "Nothing changed since version 0.1.0" in response.get_data(True)
    )
    assert _status(app, world) == "LIVE"


def test_versions_count_up_and_restore_brings_old_content_back(
    app: Flask, world: World, client_as: Any, set_url: str
) -> None:
    add_prompts(app, world, SAMPLE_PROMPTS)
    assert lock_version(app, world, "minor") == "0.1.0"
    editor = client_as("editor")
    editor.post(f"{set_url}/unlock", data={"revision": _revision(editor, set_url)})
    add_prompts(
        app,
        world,
        {"welcome.message": {"template": "Hello {{ name }}"}, "extra": {"template": "x"}},
    )
    assert lock_version(app, world, "major") == "1.0.0"
    editor.post(f"{set_url}/unlock", data={"revision": _revision(editor, set_url)})
    response = editor.post(f"{set_url}/versions/0.1.0/restore")
    assert response.status_code == 302
    page = editor.get(set_url).get_data(True)
    assert "extra" not in re.findall(r'class="mono strong"[^>]*>([^<]+)<', page)
    with app.app_context():
        from forge_app.services.drafts import draft_prompts
        from forge_app.services.versions import snapshot_prompts

        prompt_set = db.session.get(PromptSet, world.set_id)
        old = db.session.query(PromptSetVersion).filter_by(version="0.1.0").one()
        assert draft_prompts(db.session, prompt_set) == snapshot_prompts(old)  # type: ignore[arg-type]
    assert lock_version(app, world, "patch") == "1.0.1"


def test_an_edit_racing_a_submit_cannot_slip_into_review(app: Flask, world: World) -> None:
    """touch_live_set is atomic: once the set left LIVE, an edit is refused."""
    add_prompts(app, world, SAMPLE_PROMPTS)
    with app.app_context():
        prompt_set = db.session.get(PromptSet, world.set_id)
        editor = db.session.get(User, world.users["editor"])
        assert prompt_set is not None and editor is not None
        submit(
            db.session,
            prompt_set,
            editor,
            role=Role.EDITOR,
            bump="minor",
            changelog="x",
            expected_revision=prompt_set.revision,
        )
        db.session.commit()
        with pytest.raises(ForgeError, match="REVIEW now"):
            touch_live_set(db.session, prompt_set, editor)


def test_next_version() -> None:
    assert next_version(None, "patch") == "0.0.1"
    assert next_version(None, "minor") == "0.1.0"
    assert next_version("1.2.3", "patch") == "1.2.4"
    assert next_version("1.2.3", "minor") == "1.3.0"
    assert next_version("1.2.3", "major") == "2.0.0"
    with pytest.raises(ValueError, match="bump"):
        next_version("1.0.0", "huge")


def test_prereleases_do_not_count_as_the_latest_release(app: Flask, world: World) -> None:
    """Pre-release versions (made by publishing drafts) never become the base of a bump."""
    add_prompts(app, world, SAMPLE_PROMPTS)
    lock_version(app, world, "minor")
    with app.app_context():
        from forge_app.services.versions import latest_release

        prompt_set = db.session.get(PromptSet, world.set_id)
        assert prompt_set is not None
        db.session.add(
            PromptSetVersion(
                prompt_set_id=prompt_set.id,
                version="0.2.0-rc.1",
                bundle_json="{}",
                content_sha256="0" * 64,
                prompt_count=0,
                changelog="",
            )
        )
        db.session.commit()
        latest = latest_release(db.session, prompt_set)
        assert latest is not None and latest.version == "0.1.0"
        assert prompt_set.status == SetStatus.LOCKED.value


def test_a_concurrent_prompt_save_fails_instead_of_overwriting(app: Flask, world: World) -> None:
    """Prompt.revision is the mapper's version counter: the slower of two writers fails."""
    from sqlalchemy.orm import Session
    from sqlalchemy.orm.exc import StaleDataError

    from forge_app.models import Prompt

    add_prompts(app, world, SAMPLE_PROMPTS)
    with app.app_context():
        engine = db.engine
        with Session(engine) as first, Session(engine) as second:
            mine = first.query(Prompt).filter_by(key="welcome.message").one()
            theirs = second.query(Prompt).filter_by(key="welcome.message").one()
            theirs.template = "Theirs {{ name }}"
            second.commit()
            mine.template = "Mine {{ name }}"
            with pytest.raises(StaleDataError):
                first.commit()
        assert db.session.query(Prompt).filter_by(key="welcome.message").one().template == (
            "Theirs {{ name }}"
        )


# ----------------------------------------------------------------------- four eyes


def _submit_as(client: Any, set_url: str, changelog: str = "A change") -> None:
    response = client.post(
        f"{set_url}/submit",
        data={
            "bump": "patch",
            "changelog": changelog,
            "revision": _revision(client, f"{set_url}/submit"),
        },
    )
    assert response.status_code == 302


def _refusals(app: Flask) -> list[AuditEvent]:
    with app.app_context():
        return list(db.session.query(AuditEvent).filter_by(action="prompt_set.approve_refused"))


def test_a_reviewer_who_edited_the_revision_cannot_approve_it(
    app: Flask, world: World, client_as: Any, set_url: str
) -> None:
    """Finding 4: a reviewer unlocks, edits, an editor submits, the reviewer approves."""
    add_prompts(app, world, SAMPLE_PROMPTS)
    lock_version(app, world)
    reviewer, editor = client_as("reviewer"), client_as("editor")
    assert reviewer.post(f"{set_url}/unlock", data={"revision": _revision(reviewer, set_url)})
    prompt_url = f"{set_url}/prompts/welcome.message"
    page = reviewer.get(prompt_url).get_data(True)
    match = re.search(r'name="revision" value="(\d+)"', page)
    assert match is not None
    response = reviewer.post(
        prompt_url,
        data={
            "key": "welcome.message",
            "kind": "text",
            "template": "Sneaky {{ name }}",
            "revision": match.group(1),
            "action": "save",
        },
    )
    assert response.status_code == 302
    _submit_as(editor, set_url)

    review = reviewer.get(f"{set_url}/review").get_data(True)
    assert "You changed this prompt set since version 0.1.0" in review
    assert "Approve and lock" not in review
    response = reviewer.post(f"{set_url}/approve", data={"revision": _revision(reviewer, set_url)})
    assert response.status_code == 403
    assert "You changed this prompt set since version 0.1.0" in response.get_data(True)
    assert _status(app, world) == "REVIEW"
    (refused,) = _refusals(app)
    assert refused.actor_id == world.users["reviewer"]
    assert refused.object_id == str(world.set_id)
    assert "You changed this prompt set" in refused.details["reason"]
    assert refused.details["version"] == "0.1.1"

    other = client_as("reviewer2")
    assert "Approve and lock" in other.get(f"{set_url}/review").get_data(True)
    response = other.post(f"{set_url}/approve", data={"revision": _revision(other, set_url)})
    assert response.status_code == 302
    assert _status(app, world) == "LOCKED"


def test_the_submitters_refusal_is_audited_too(
    app: Flask, world: World, client_as: Any, set_url: str
) -> None:
    add_prompts(app, world, SAMPLE_PROMPTS)
    reviewer = client_as("reviewer")
    _submit_as(reviewer, set_url)
    response = reviewer.post(f"{set_url}/approve", data={"revision": _revision(reviewer, set_url)})
    assert response.status_code == 403
    (refused,) = _refusals(app)
    assert "You submitted this change" in refused.details["reason"]


def test_restores_and_imports_make_contributors_until_the_next_version(
    app: Flask, world: World
) -> None:
    from forge_app.services.drafts import contributor_ids, replace_prompts
    from forge_app.services.workflow import restore_version, unlock

    add_prompts(app, world, SAMPLE_PROMPTS)
    lock_version(app, world)
    with app.app_context():
        session = db.session
        prompt_set = session.get(PromptSet, world.set_id)
        users = {name: session.get(User, world.users[name]) for name in world.users}
        assert prompt_set is not None and all(users.values())
        assert contributor_ids(session, prompt_set) == set()  # a version clears them
        unlock(session, prompt_set, users["owner"], role=Role.OWNER, expected_revision=None)
        replace_prompts(  # an import
            session,
            prompt_set,
            {"extra": {"template": "x"}},
            users["reviewer"],
            remove_missing=False,
        )
        version = session.query(PromptSetVersion).one()
        restore_version(session, prompt_set, version, users["reviewer2"], role=Role.REVIEWER)
        replace_prompts(
            session, prompt_set, {"extra": {"template": "y"}}, users["editor"], remove_missing=False
        )
        session.commit()
        assert contributor_ids(session, prompt_set) == {
            world.users["reviewer"],
            world.users["reviewer2"],
            world.users["editor"],
        }
        submit(
            session,
            prompt_set,
            users["editor"],
            role=Role.EDITOR,
            bump="patch",
            changelog="x",
            expected_revision=None,
        )
        session.commit()
        for name in ("reviewer", "reviewer2"):
            with pytest.raises(ForgeError, match="You changed this prompt set") as error:
                approve(
                    session,
                    prompt_set,
                    users[name],
                    role=Role.REVIEWER,
                    expected_revision=prompt_set.revision,
                )
            assert error.value.kind is Kind.FORBIDDEN and error.value.refused
            session.rollback()
        approve(
            session,
            prompt_set,
            users["owner"],
            role=Role.OWNER,
            expected_revision=prompt_set.revision,
        )
        session.commit()
        assert contributor_ids(session, prompt_set) == set()
