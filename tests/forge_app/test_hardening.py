"""Regressions found by the FORGE review: JSON errors for programs, redirects that stay on the
site, sessions that end with a password change, uniqueness races answered in words (and
without losing the user's text), and pages that explain themselves."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import Engine, event, func, select
from sqlalchemy.orm import ORMExecuteState, Session

from anvil_client.errors import StoreUnavailable
from anvil_client.stores import FileStore
from forge_app.extensions import db
from forge_app.models import AuditEvent, Prompt, PromptSet, User
from forge_app.services import publishing, store
from forge_app.services.users import create_user
from tests.forge_app.conftest import PASSWORD, SAMPLE_PROMPTS, World, add_prompts, lock_version
from tests.forge_app.test_security import _csrf_from, _sign_in

HEADERS = ("Content-Security-Policy", "X-Frame-Options", "X-Content-Type-Options")


# ------------------------------------------------------------------ errors for programs


@pytest.mark.parametrize(
    ("method", "url", "status"),
    [
        ("GET", "/api/v1/nothing-here", 404),
        ("POST", "/api/v1/live/nothing-here", 404),
        ("GET", "/api/v1/live/heartbeat", 405),
        ("DELETE", "/api/v1/live/heartbeat", 405),
        ("GET", "/store/projects/missing/channels/production.json", 404),
        ("POST", "/store/projects/x.json", 405),
        ("POST", "/.well-known/anvil-keys.json", 405),
    ],
)
def test_errors_under_machine_paths_are_json(
    app: Flask, method: str, url: str, status: int
) -> None:
    """No route matched, so there is no blueprint to tell by: the path decides."""
    response = app.test_client().open(url, method=method)
    assert response.status_code == status
    assert response.mimetype == "application/json"
    assert set(response.get_json()) == {"error"}
    for header in HEADERS:
        assert header in response.headers
    if status == 405:
        assert response.headers["Allow"]
        assert method in response.get_json()["error"]


def test_errors_of_pages_stay_html(client_as: Any) -> None:
    response = client_as("editor").get("/projects/nothing-here")
    assert response.status_code == 404 and response.mimetype == "text/html"
    assert "Not found" in response.get_data(True)


# ----------------------------------------------------------------------------- redirects


@pytest.mark.parametrize(
    "target",
    [
        "/%0d%0aSet-Cookie:%20x=1",  # a newline cannot go into a header: was a 500
        "/%09/evil.example",  # browsers drop the tab: //evil.example
        "//evil.example",
        "/%5Cevil.example",  # /\evil.example
        "https://evil.example/",
        "evil.example",
    ],
)
def test_next_after_sign_in_stays_on_the_site(
    csrf_app: Flask,
    csrf_world: World,
    target: str,
) -> None:
    client = csrf_app.test_client()
    page = client.get(f"/login?next={target}")
    data = {
        "email": csrf_world.emails["editor"],
        "password": PASSWORD,
        "csrf_token": _csrf_from(page.get_data(True)),
    }
    response = client.post(f"/login?next={target}", data=data)
    assert response.status_code == 302
    assert response.headers["Location"] == "/projects/"
    # and once signed in, the same link still goes nowhere else
    again = client.get(f"/login?next={target}")
    assert again.status_code == 302 and again.headers["Location"] == "/projects/"


def test_next_after_sign_in_keeps_a_local_page(client_as: Any, world: World) -> None:
    target = f"/projects/{world.project_id}/search?q=caf%C3%A9"
    response = client_as("editor").get(f"/login?next={target.replace('?', '%3F')}")
    assert response.status_code == 302 and response.headers["Location"] == target


def test_reencrypt_returns_only_to_a_local_page(client_as: Any, world: World) -> None:
    owner = client_as("owner")
    url = f"/projects/{world.project_id}/tokens/reencrypt"
    tokens = f"/projects/{world.project_id}/tokens"
    for evil in ("/\\evil.example", "//evil.example", "https://evil.example"):
        response = owner.post(url, data={"next": evil})
        assert response.status_code == 302 and response.headers["Location"] == tokens
    response = owner.post(url, data={"next": f"/projects/{world.project_id}/channels"})
    assert response.headers["Location"] == f"/projects/{world.project_id}/channels"


# ------------------------------------------------------------------------------- sessions


def test_changing_the_password_signs_out_the_other_sessions(
    csrf_app: Flask,
    csrf_world: World,
) -> None:
    email = csrf_world.emails["editor"]
    laptop, phone = csrf_app.test_client(), csrf_app.test_client()
    assert _sign_in(laptop, email).status_code == 302
    assert _sign_in(phone, email).status_code == 302
    assert phone.get("/account").status_code == 200

    token = _csrf_from(laptop.get("/account").get_data(True))
    new = "a brand new passphrase"
    response = laptop.post(
        "/account",
        data={"csrf_token": token, "current": PASSWORD, "new": new, "confirm": new},
    )
    assert response.status_code == 302
    assert laptop.get("/account").status_code == 200  # the session that changed it stays
    signed_out = phone.get("/account")
    assert signed_out.status_code == 302 and "/login" in signed_out.headers["Location"]
    assert _sign_in(phone, email, new).status_code == 302


def test_a_session_of_another_user_id_format_is_refused(app: Flask, world: World) -> None:
    """Only ``<id>:<stamp>:<session id>:<issued at>`` with the user's current stamp signs in
    (an id of the old format, a forged or future one does not)."""
    import time

    editor = world.users["editor"]
    with app.app_context():
        user = db.session.get(User, editor)
        assert user is not None
        stamp = user.session_stamp
    now = int(time.time())
    for session_id in (
        str(editor),
        f"{editor}:0000",
        f"{editor}:{stamp}",
        f"{editor}:0000:abcdefghijklmnop:{now}",
        f"{editor}:{stamp}:abcdefghijklmnop:{now + 3600}",
        f"{editor}:{stamp}::{now}",
        f"{editor}:{stamp}:abcdefghijklmnop:{now}:x",
        "x:y",
    ):
        client = app.test_client()
        with client.session_transaction() as session:
            session["_user_id"] = session_id
        response = client.get("/account")
        assert response.status_code == 302, session_id
    client = app.test_client()
    with client.session_transaction() as session:
        session["_user_id"] = f"{editor}:{stamp}:abcdefghijklmnop:{now}"
    assert client.get("/account").status_code == 200  # the same id, made right, is accepted


# ----------------------------------------------------------------------- database races


@contextmanager
def racing(
    app: Flask, query: Callable[[str], bool], rival: Callable[[Engine], None]
) -> Iterator[list[bool]]:
    """Run ``rival`` (on its own connection, committed) right after the first query for which
    ``query(sql)`` is true has answered: the view's check passes, its insert then collides."""
    sessions = app.extensions["forge_db"].sessions
    engine: Engine = app.extensions["forge_db"].engine
    fired: list[bool] = []

    def hook(state: ORMExecuteState) -> Any:
        if fired or not state.is_select or not query(str(state.statement)):
            return None
        fired.append(True)
        answer = state.invoke_statement().freeze()
        rival(engine)
        return answer()

    event.listen(sessions, "do_orm_execute", hook)
    try:
        yield fired
    finally:
        event.remove(sessions, "do_orm_execute", hook)


def _is_check(table: str, column: str | None = None) -> Callable[[str], bool]:
    """The view's "does it exist already?" query: ``SELECT <table>.id FROM <table> WHERE …``."""
    where = rf"\s+WHERE {table}\.{column}\b" if column else ""
    pattern = re.compile(rf"SELECT {table}\.id\s+FROM {table}{where}")
    return lambda sql: pattern.match(sql) is not None


def _rival_prompt(world: World, key: str) -> Callable[[Engine], None]:
    def insert(engine: Engine) -> None:
        with Session(engine) as other:
            other.add(
                Prompt(
                    prompt_set_id=world.set_id,
                    key=key,
                    kind="text",
                    template="Theirs",
                    meta={},
                    variables=[],
                    samples={},
                    search_text="theirs",
                )
            )
            other.commit()

    return insert


def _count(app: Flask, model: Any, *where: Any) -> int:
    with app.app_context():
        return int(db.session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


def test_a_prompt_created_at_the_same_moment_keeps_the_editors_text(
    app: Flask, client_as: Any, world: World, set_url: str
) -> None:
    editor = client_as("editor")
    data = {
        "key": "welcome.racing",
        "kind": "text",
        "template": "Mine, typed for an hour: {{ name }}",
        "action": "save",
    }
    rival = _rival_prompt(world, "welcome.racing")
    with racing(app, _is_check("prompts"), rival) as fired:
        response = editor.post(f"{set_url}/prompts/new", data=data)
    assert fired == [True]
    page = response.get_data(True)
    assert response.status_code == 409
    assert "already has a prompt &#39;welcome.racing&#39;" in page
    assert "Mine, typed for an hour: {{ name }}" in page  # nothing typed is lost
    assert _count(app, Prompt, Prompt.key == "welcome.racing") == 1  # theirs only
    assert _count(app, AuditEvent, AuditEvent.action == "prompt.create") == 0


def test_a_rename_to_an_id_taken_at_the_same_moment_keeps_the_text(
    app: Flask, client_as: Any, world: World, set_url: str
) -> None:
    add_prompts(app, world, SAMPLE_PROMPTS)
    editor = client_as("editor")
    url = f"{set_url}/prompts/welcome.message"
    revision = re.search(r'name="revision" value="(\d+)"', editor.get(url).get_data(True))
    assert revision is not None
    data = {
        "key": "welcome.renamed",
        "kind": "text",
        "template": "Renamed text {{ name }}",
        "revision": revision.group(1),
        "action": "save",
    }
    rival = _rival_prompt(world, "welcome.renamed")
    with racing(app, _is_check("prompts"), rival) as fired:
        response = editor.post(url, data=data)
    assert fired == [True]
    assert response.status_code == 409
    assert "Renamed text {{ name }}" in response.get_data(True)
    with app.app_context():
        kept = db.session.scalar(select(Prompt).where(Prompt.key == "welcome.message"))
        assert kept is not None and kept.template == SAMPLE_PROMPTS["welcome.message"]["template"]


def test_a_prompt_set_created_at_the_same_moment_is_a_form_error(
    app: Flask, client_as: Any, world: World
) -> None:
    def rival(engine: Engine) -> None:
        with Session(engine) as other:
            other.add(PromptSet(project_id=world.project_id, name="Billing", description=""))
            other.commit()

    editor = client_as("editor")
    url = f"/projects/{world.project_id}/sets/new"
    with racing(app, _is_check("prompt_sets"), rival) as fired:
        response = editor.post(url, data={"name": "Billing", "description": "Mine"})
    assert fired == [True]
    assert response.status_code == 200
    assert "already has a prompt set named &#39;Billing&#39;" in response.get_data(True)
    assert _count(app, PromptSet, PromptSet.name == "Billing") == 1


def test_any_other_uniqueness_race_is_a_friendly_409(
    app: Flask, client_as: Any, password_hash: str
) -> None:
    def rival(engine: Engine) -> None:
        with Session(engine) as other:
            create_user(other, "race@example.com", password_hash=password_hash, name="Rival")
            other.commit()

    admin = client_as("admin")
    data = {"user-email": "race@example.com", "user-password": "long enough pw"}
    with racing(app, _is_check("users", "email"), rival) as fired:
        response = admin.post("/admin/users", data=data)
    assert fired == [True]
    page = response.get_data(True)
    assert response.status_code == 409
    assert "at the same moment, so nothing was saved" in page
    assert "Traceback" not in page and "IntegrityError" not in page
    assert _count(app, User, User.email == "race@example.com") == 1
    assert _count(app, AuditEvent, AuditEvent.action == "user.create") == 0


# ------------------------------------------------------------------ publishing: the flow


@pytest.fixture
def locked(app: Flask, world: World) -> str:
    add_prompts(app, world, SAMPLE_PROMPTS)
    version = lock_version(app, world)
    from tests.forge_app.test_distribution import Env

    Env(app, world).token()
    return version


def _publish_url(world: World, version: str) -> str:
    return f"/projects/{world.project_id}/sets/{world.set_id}/versions/{version}/publish"


def _checked_channel(page: str) -> str | None:
    match = re.search(r'name="channel" value="([a-z0-9-]+)"\s+checked', page)
    return match.group(1) if match else None


def test_a_rollout_on_an_empty_channel_is_refused_before_confirming(
    client_as: Any, world: World, locked: str
) -> None:
    owner = client_as("owner")
    response = owner.get(f"{_publish_url(world, locked)}?channel=staging&rollout=50")
    page = response.get_data(True)
    assert response.status_code == 200
    assert "Channel staging has nothing published yet" in page
    assert "Publish to staging</button>" not in page  # not the confirmation
    assert _checked_channel(page) == "staging"  # the choice is kept
    assert 'value="50"' in page


def test_back_from_the_confirmation_shows_the_choice_as_it_was(
    client_as: Any, world: World, locked: str
) -> None:
    owner = client_as("owner")
    url = _publish_url(world, locked)
    confirm = owner.get(f"{url}?channel=staging").get_data(True)
    back = re.search(r'href="([^"]+)">Back</a>', confirm)
    assert back is not None
    page = owner.get(back.group(1).replace("&amp;", "&")).get_data(True)
    assert "Review and publish" in page and "Publish to staging</button>" not in page
    assert _checked_channel(page) == "staging"


def test_a_failed_publish_returns_to_the_same_confirmation(
    app: Flask, client_as: Any, world: World, locked: str
) -> None:
    owner = client_as("owner")
    url = _publish_url(world, locked)
    # production has nothing yet, so a rollout there fails in the publisher (a race with the
    # check of the confirmation page, which another publisher could lose)
    response = owner.post(url, data={"channel": "production", "rollout": "30"})
    assert response.status_code == 302
    assert response.headers["Location"] == f"{url}?channel=production&rollout=30"


def test_choice_labels_keep_their_spacing(client_as: Any, set_url: str) -> None:
    page = client_as("owner").get(f"{set_url}/publish").get_data(True)
    assert "only— not" not in page
    assert "LOCKED versions only — not this LIVE set" in re.sub(r"\s+", " ", page)


# ------------------------------------------------------------------------ pages explain


def test_the_prompt_sets_tab_is_current_on_project_pages(client_as: Any, world: World) -> None:
    page = client_as("viewer").get(f"/projects/{world.project_id}").get_data(True)
    assert re.search(r'aria-current="page">Prompt sets</a>', page)


def test_audit_entries_read_as_sentences(
    app: Flask, client_as: Any, world: World, locked: str
) -> None:
    from tests.forge_app.test_distribution import Env

    Env(app, world).call(publishing.publish_version, f"version:{locked}", "channel:production")
    page = client_as("viewer").get(f"/projects/{world.project_id}/audit").get_data(True)
    assert "published to channel" in page
    assert ": None" not in page  # a publication without rollout has no "rollout_percent: None"
    owner = client_as("owner")
    owner.post(f"/orgs/{world.org_slug}/invitations", data={"role": "viewer", "days": "7"})
    org_page = owner.get(f"/orgs/{world.org_slug}").get_data(True)
    assert "created an invitation to" in org_page  # the wording, not only the action code


def test_the_import_page_tells_a_viewer_why_there_is_no_form(client_as: Any, set_url: str) -> None:
    page = client_as("viewer").get(f"{set_url}/import").get_data(True)
    assert "needs the editor role" in page and "export the draft" in page
    assert 'enctype="multipart/form-data"' not in page


def test_the_import_page_of_a_locked_set_says_how_to_unlock(
    app: Flask, client_as: Any, world: World, set_url: str
) -> None:
    add_prompts(app, world, SAMPLE_PROMPTS)
    lock_version(app, world)
    page = client_as("editor").get(f"{set_url}/import").get_data(True)
    assert "Unlock it for editing" in page
    assert 'enctype="multipart/form-data"' not in page


def test_long_names_from_an_e_mail_fit_the_column(app: Flask) -> None:
    with app.app_context():
        user = create_user(db.session, f"{'a' * 200}@example.com", "long enough pw")
        assert len(user.name) <= 120


# ------------------------------------------------------------------------------ large input


def test_a_pasted_prompt_file_larger_than_500_kb_is_read(client_as: Any, set_url: str) -> None:
    """Werkzeug's default limit for one form field is 500 kB; pasting is as good as a file."""
    text = "welcome.message:\n  template: |\n" + "    Hello {{ name }}!\n" * 40_000 + "  oops: ["
    assert len(text) > 700_000
    response = client_as("editor").post(f"{set_url}/import", data={"text": text})
    assert response.status_code == 400  # read and refused for its YAML, not for its size
    assert "Nothing was imported" in response.get_data(True)


def test_a_request_over_the_limit_is_a_friendly_413(client_as: Any, set_url: str) -> None:
    response = client_as("editor").post(
        f"{set_url}/import", data={"text": "x" * (17 * 1024 * 1024)}
    )
    assert response.status_code == 413
    assert "nothing was saved" in response.get_data(True)


# --------------------------------------------------------------- the store goes away


class DownStore(FileStore):
    """A store whose server does not answer (what boto3 or HTTP give when S3 is down)."""

    def _get(self, key: str, if_none_match: str | None, max_size: int) -> Any:
        raise StoreUnavailable(f"connection refused reading {key}")

    def _put(self, key: str, data: bytes, **kwargs: Any) -> Any:
        raise StoreUnavailable(f"connection refused writing {key}")

    def _list(self, prefix: str) -> list[str]:
        raise StoreUnavailable(f"connection refused listing {prefix}")

    def _delete(self, key: str) -> None:
        raise StoreUnavailable(f"connection refused deleting {key}")


@contextmanager
def store_unreachable(app: Flask, how: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """``gone``: the local store directory replaced by a file (a lost mount); ``down``: a
    store that does not answer at all."""
    with app.app_context():
        root = publishing.store_root()
    assert root is not None and root.is_dir()
    if how == "down":
        real = store.Publisher
        with monkeypatch.context() as patch:
            patch.setattr(store, "Publisher", lambda _url, **kw: real(DownStore(root), **kw))
            yield
        return
    hidden = root.with_name(root.name + ".away")
    root.rename(hidden)
    root.write_text("not a directory")
    try:
        yield
    finally:
        root.unlink()
        hidden.rename(root)


def _state(app: Flask) -> tuple[int, int, list[str]]:
    """Publications, active tokens and audit actions: what a failed action must not change."""
    from forge_app.models.distribution import AccessToken, Publication

    with app.app_context():
        publications = int(db.session.scalar(select(func.count(Publication.id))) or 0)
        active = int(
            db.session.scalar(
                select(func.count(AccessToken.id)).where(AccessToken.revoked_at.is_(None))
            )
            or 0
        )
        actions = list(db.session.scalars(select(AuditEvent.action).order_by(AuditEvent.id)))
    return publications, active, actions


def _flashes(client: Any) -> list[str]:
    with client.session_transaction() as session:
        return [message for _, message in session.get("_flashes", [])]


@pytest.mark.parametrize(
    ("action", "path", "form"),
    [
        ("rollback", "channels/production/rollback", {"sequence": "1"}),
        ("rollout", "channels/production/rollout", {"action": "set", "percent": "40"}),
        ("complete", "channels/production/rollout", {"action": "complete"}),
        ("abort", "channels/production/rollout", {"action": "abort"}),
        ("re-encrypt", "channels/production/reencrypt", {}),
        ("revoke", "tokens/{second}/revoke", {}),
    ],
)
@pytest.mark.parametrize("how", ["gone", "down"])
def test_an_unreachable_store_changes_nothing_and_says_so_in_one_sentence(
    app: Flask,
    client_as: Any,
    world: World,
    locked: str,
    monkeypatch: pytest.MonkeyPatch,
    how: str,
    action: str,
    path: str,
    form: Any,
) -> None:
    from tests.forge_app.test_distribution import Env

    env = Env(app, world)
    second = env.token("second")[6:18]
    env.call(
        publishing.publish_version, f"version:{locked}", "channel:production", rollout_percent=None
    )
    newer = env.release_new_version("Hello again {{ name }}")
    env.call(
        publishing.publish_version, f"version:{newer}", "channel:production", rollout_percent=20
    )
    before = _state(app)
    owner = client_as("owner")
    with store_unreachable(app, how, monkeypatch):
        response = owner.post(
            f"/projects/{world.project_id}/{path.format(second=second)}", data=form
        )
    assert response.status_code == 302
    messages = _flashes(owner)
    assert len(messages) == 1, messages
    if how == "down" and action == "re-encrypt":
        # re-encryption goes channel by channel and names the one that failed
        assert messages[0].startswith("Channel production could not be re-encrypted: The store")
    else:
        assert messages[0].startswith("The store cannot be reached, so nothing was"), messages
    assert "connection refused" in messages[0] or "not a directory" in messages[0]
    assert _state(app) == before


def test_security_headers_on_every_kind_of_response(app: Flask, client_as: Any) -> None:
    """Pages, errors, static files, the store (200 and 304), keys, health and CSRF refusals."""
    with app.app_context():
        root = publishing.store_root()
    assert root is not None
    FileStore(root).put("projects/p/channels/production.json", b"{}")
    anonymous = app.test_client()
    stored = anonymous.get("/store/projects/p/channels/production.json")
    responses = {
        "store 200": stored,
        "store 304": anonymous.get(
            "/store/projects/p/channels/production.json",
            headers={"If-None-Match": stored.headers["ETag"]},
        ),
        "keys": anonymous.get("/.well-known/anvil-keys.json"),
        "health": anonymous.get("/healthz"),
        "login": anonymous.get("/login"),
        "static": anonymous.get("/static/forge.css"),
        "page 403": client_as("viewer").get("/admin/"),
        "api 401": anonymous.post("/api/v1/live/heartbeat", json={}),
    }
    assert responses["store 304"].status_code == 304
    for name, response in responses.items():
        with response:
            for header in (*HEADERS, "Referrer-Policy"):
                assert header in response.headers, (name, header)
            assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"], name


def test_the_first_channel_that_takes_the_set_is_preselected(client_as: Any, set_url: str) -> None:
    """A LIVE set goes only to development: that choice is made already (it was none)."""
    page = client_as("owner").get(f"{set_url}/publish").get_data(True)
    assert _checked_channel(page) == "development"
    assert "(a snapshot of the draft (LIVE)) to LIVE" in page


def test_unicode_round_trips_through_editor_search_export_and_import(
    app: Flask, client_as: Any, world: World, set_url: str
) -> None:
    editor = client_as("editor")
    text = "Grüß dich, {{ name }}! 日本語のテキスト — ✓ émoji 🎉"
    response = editor.post(
        f"{set_url}/prompts/new",
        data={"key": "greeting.unicode", "kind": "text", "template": text, "action": "save"},
    )
    assert response.status_code == 302
    found = editor.get(f"/projects/{world.project_id}/search?q=GRÜß").get_data(True)
    assert "greeting.unicode" in found
    found = editor.get(f"/projects/{world.project_id}/search?q=日本語").get_data(True)
    assert "greeting.unicode" in found and "<mark>日本語</mark>" in found
    exported = editor.get(f"{set_url}/export")
    assert exported.status_code == 200
    # written as UTF-8 text, not \\u escapes
    assert "Grüß dich, {{ name }}! 日本語のテキスト — ✓" in exported.get_data(True)
    assert exported.headers["Content-Disposition"].isascii()
    with app.app_context():
        prompt_set = db.session.get(PromptSet, world.set_id)
        assert prompt_set is not None
        prompt_set.name = "Ünïcode sét ✓"
        db.session.commit()
    exported = editor.get(f"{set_url}/export")
    assert exported.headers["Content-Disposition"].isascii()
    editor.post(f"{set_url}/prompts/greeting.unicode/delete")
    response = editor.post(
        f"{set_url}/import",
        data={"text": exported.get_data(True), "mode": "merge"},
    )
    assert response.status_code == 302
    with app.app_context():
        restored = db.session.scalar(select(Prompt).where(Prompt.key == "greeting.unicode"))
        assert restored is not None and restored.template == text
