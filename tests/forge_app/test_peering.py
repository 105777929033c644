"""Peering against hostile and broken remotes: a tiny HTTP server on 127.0.0.1 plays the
remote FORGE (slow, huge, malformed, redirecting, refusing, failing), and every failure must be
one sentence on the page, never a slow or broken local page."""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select

from anvil_client.errors import ConfigError
from forge_app.config import load_settings, parse_known_forges
from forge_app.extensions import db
from forge_app.models import AuditEvent, Prompt, PromptSet
from forge_app.models.peering import RemoteProject
from forge_app.peering import PeerError, find_forge, peer_client
from forge_app.rest import schemas
from tests.forge_app.conftest import World

TOKEN_ENV = "TEST_PEER_TOKEN"
TOKEN = "forge_pat_abcdefghijkl_" + "S" * 43

Handler = Callable[[BaseHTTPRequestHandler], None]


class Remote:
    """A scripted HTTP server: ``routes[path]`` writes the answer; ``requests`` logs calls."""

    def __init__(self) -> None:
        self.routes: dict[str, Handler] = {}
        self.requests: list[tuple[str, dict[str, str]]] = []
        remote = self

        class _Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                remote.requests.append((self.path, dict(self.headers)))
                handler = remote.routes.get(self.path) or remote.routes.get("*")
                if handler is None:
                    self.send_response(404)
                    self.end_headers()
                    return
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    handler(self)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def answer(status: int, body: Any = None, headers: dict[str, str] | None = None) -> Handler:
    def handle(request: BaseHTTPRequestHandler) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        request.send_response(status)
        for name, value in {"Content-Type": "application/json", **(headers or {})}.items():
            request.send_header(name, value)
        request.send_header("Content-Length", str(len(data)))
        request.end_headers()
        request.wfile.write(data)

    return handle


ORGS = {"items": [{"slug": "partner", "name": "Partner Org", "role": "viewer"}], "next": None}


@pytest.fixture
def remote() -> Iterator[Remote]:
    server = Remote()
    yield server
    server.stop()


@pytest.fixture
def app_config(
    app_config: dict[str, Any], remote: Remote, monkeypatch: pytest.MonkeyPatch
) -> dict[str, Any]:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    return {
        **app_config,
        "FORGE_KNOWN_FORGES": [
            {"name": "Partner", "url": remote.url, "bearer_token_env": TOKEN_ENV}
        ],
        "FORGE_PEER_TOTAL_TIMEOUT": 0.8,
        "FORGE_PEER_CONNECT_TIMEOUT": 0.5,
        "FORGE_PEER_MAX_BODY": 64 * 1024,
        "FORGE_PEER_CACHE_TTL": 0,
    }


def read_orgs(app: Flask) -> schemas.OrgList:
    with app.app_context():
        forge = find_forge(app, "partner")
        assert forge is not None
        return peer_client(app, forge).get("/orgs", schemas.OrgList)


def failure(app: Flask) -> str:
    with pytest.raises(PeerError) as caught:
        read_orgs(app)
    message = str(caught.value)
    assert message.startswith("Partner ") and message.endswith(".")
    assert TOKEN not in message
    return message


# ------------------------------------------------------------------------ configuration


def test_known_forges_come_from_forge_toml_even_beside_a_forge_table(tmp_path: Path) -> None:
    config = tmp_path / "forge.toml"
    config.write_text(
        '[forge]\nenv = "development"\n\n'
        '[[known_forges]]\nname = "Partner"\nurl = "https://partner.example/"\n'
        'bearer_token_env = "PARTNER_TOKEN"\n'
    )
    settings = load_settings(
        {"FORGE_INSTANCE_PATH": str(tmp_path / "i")}, environ={"FORGE_CONFIG": str(config)}
    )
    (forge,) = settings.known_forges
    assert (forge.name, forge.url, forge.bearer_token_env, forge.slug) == (
        "Partner",
        "https://partner.example",
        "PARTNER_TOKEN",
        "partner",
    )


def test_known_forges_from_the_environment_as_json(tmp_path: Path) -> None:
    value = json.dumps([{"name": "Team", "url": "http://127.0.0.1:5001", "bearer_token_env": "T"}])
    settings = load_settings(
        {"FORGE_INSTANCE_PATH": str(tmp_path)}, environ={"FORGE_KNOWN_FORGES": value}
    )
    assert [f.name for f in settings.known_forges] == ["Team"]


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"name": "A", "url": "ftp://x", "bearer_token_env": "T"}, "http"),
        ({"name": "A", "url": "http://x", "bearer_token_env": "not a name"}, "bearer_token_env"),
        ({"name": "", "url": "http://x", "bearer_token_env": "T"}, "name"),
        ({"name": "A", "url": "http://u:p@x", "bearer_token_env": "T"}, "password"),
    ],
)
def test_bad_known_forges_are_refused_with_a_sentence(entry: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_known_forges([entry])
    with pytest.raises(ConfigError, match="twice"):
        parse_known_forges([{"name": "A", "url": "http://x", "bearer_token_env": "T"}] * 2)


# ------------------------------------------------------------------------ remote calls


def test_a_good_remote_is_read_with_the_bearer_token(app: Flask, remote: Remote) -> None:
    remote.routes["/api/v1/orgs"] = answer(200, ORGS, {"ETag": '"v1"'})
    assert read_orgs(app).items[0].name == "Partner Org"
    path, headers = remote.requests[0]
    assert path == "/api/v1/orgs"
    assert headers["Authorization"] == f"Bearer {TOKEN}"


def test_answers_are_cached_and_revalidated_with_if_none_match(app: Flask, remote: Remote) -> None:
    def conditional(request: BaseHTTPRequestHandler) -> None:
        if request.headers.get("If-None-Match") == '"v1"':
            request.send_response(304)
            request.end_headers()
        else:
            answer(200, ORGS, {"ETag": '"v1"'})(request)

    remote.routes["/api/v1/orgs"] = conditional
    app.config["FORGE_PEER_CACHE_TTL"] = 0
    assert read_orgs(app).items[0].slug == "partner"
    assert read_orgs(app).items[0].slug == "partner"  # 304: served from the cache
    assert [h.get("If-None-Match") for _, h in remote.requests] == [None, '"v1"']


def test_within_the_ttl_no_request_is_made(app_config: dict[str, Any], remote: Remote) -> None:
    from forge_app import create_app

    app = create_app({**app_config, "FORGE_PEER_CACHE_TTL": 60})
    remote.routes["/api/v1/orgs"] = answer(200, ORGS)
    read_orgs(app)
    read_orgs(app)
    assert len(remote.requests) == 1


def test_a_slow_remote_is_given_up_on(app: Flask, remote: Remote) -> None:
    release = threading.Event()

    def slow(request: BaseHTTPRequestHandler) -> None:
        release.wait(10)
        answer(200, ORGS)(request)

    remote.routes["/api/v1/orgs"] = slow
    try:
        assert "did not answer within" in failure(app)
    finally:
        release.set()


def test_a_remote_that_drips_its_body_is_given_up_on(app: Flask, remote: Remote) -> None:
    stop = threading.Event()

    def drip(request: BaseHTTPRequestHandler) -> None:
        request.send_response(200)
        request.send_header("Content-Type", "application/json")
        request.end_headers()
        request.wfile.write(b'{"items": [')
        while not stop.wait(0.05):
            request.wfile.write(b" ")
            request.wfile.flush()

    remote.routes["/api/v1/orgs"] = drip
    try:
        assert "did not answer within" in failure(app)
    finally:
        stop.set()


def test_a_huge_body_is_refused(app: Flask, remote: Remote) -> None:
    remote.routes["/api/v1/orgs"] = answer(200, b"[" + b"0," * 100_000 + b"0]")
    assert "more than 64 KiB" in failure(app)


def test_a_huge_body_without_length_is_cut_off(app: Flask, remote: Remote) -> None:
    def endless(request: BaseHTTPRequestHandler) -> None:
        request.send_response(200)
        request.send_header("Content-Type", "application/json")
        request.end_headers()
        for _ in range(200):
            request.wfile.write(b" " * 8192)

    remote.routes["/api/v1/orgs"] = endless
    assert "more than 64 KiB" in failure(app)


def test_malformed_json_and_wrong_shapes_are_refused(app: Flask, remote: Remote) -> None:
    remote.routes["/api/v1/orgs"] = answer(200, b"{not json")
    assert "not JSON" in failure(app)
    remote.routes["/api/v1/orgs"] = answer(200, {"items": [{"slug": 1}]})
    assert "does not match the FORGE API" in failure(app)


def test_redirects_are_not_followed(app: Flask, remote: Remote) -> None:
    elsewhere = Remote()
    try:
        elsewhere.routes["*"] = answer(200, ORGS)
        remote.routes["/api/v1/orgs"] = answer(
            302, b"", {"Location": f"{elsewhere.url}/api/v1/orgs"}
        )
        assert "redirect" in failure(app)
        assert elsewhere.requests == []
    finally:
        elsewhere.stop()


@pytest.mark.parametrize(
    ("status", "words"),
    [
        (401, "refused this FORGE's API token (HTTP 401)"),
        (403, "(HTTP 403)"),
        (500, "failed to answer (HTTP 500)"),
    ],
)
def test_refusals_and_failures_are_one_sentence(
    app: Flask, remote: Remote, status: int, words: str
) -> None:
    remote.routes["/api/v1/orgs"] = answer(
        status, {"error": {"code": "x", "message": "<b>no</b>", "details": None}}
    )
    message = failure(app)
    assert words in message and "<b>" not in message


def test_a_remote_that_is_down(app_config: dict[str, Any]) -> None:
    from forge_app import create_app

    app = create_app(
        {
            **app_config,
            "FORGE_KNOWN_FORGES": [
                {"name": "Partner", "url": "http://127.0.0.1:9", "bearer_token_env": TOKEN_ENV}
            ],
        }
    )
    assert "cannot be reached" in failure(app)


def test_a_missing_token_variable_is_named(app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TOKEN_ENV)
    assert TOKEN_ENV in failure(app)


# ------------------------------------------------------------------------ pages


def test_the_forges_page_shows_a_down_remote_as_one_sentence(
    app: Flask, world: World, client_as: Any, remote: Remote
) -> None:
    remote.routes["*"] = answer(500, b"oops")
    page = client_as("viewer").get("/forges/")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "Not reachable: Partner failed to answer (HTTP 500)." in html
    assert TOKEN not in html


def test_local_pages_make_no_remote_call(
    app: Flask, world: World, client_as: Any, remote: Remote
) -> None:
    remote.routes["*"] = answer(200, ORGS)
    browser = client_as("viewer")
    assert browser.get("/projects/").status_code == 200
    assert browser.get(f"/projects/{world.project_id}").status_code == 200
    assert remote.requests == []


def test_remote_text_is_escaped(app: Flask, world: World, client_as: Any, remote: Remote) -> None:
    evil = "<script>alert(1)</script>"
    remote.routes["/api/v1/orgs?per_page=100"] = answer(
        200, {"items": [{"slug": "evil", "name": evil, "role": "viewer"}], "next": None}
    )
    project = {
        "id": str(uuid.uuid4()),
        "org": "evil",
        "org_name": evil,
        "name": '<img src=x onerror="alert(2)">',
        "description": evil,
        "set_count": 0,
        "prompt_count": 0,
        "last_updated": None,
    }
    remote.routes["/api/v1/orgs/evil/projects?per_page=100"] = answer(
        200, {"items": [project], "next": None}
    )
    html = client_as("editor").get("/forges/partner/").get_data(as_text=True)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<script>alert" not in html and "<img src=x" not in html


# ------------------------------------------------------------------- connect and copy


def _project(remote_id: str) -> dict[str, Any]:
    return {
        "id": remote_id,
        "org": "partner",
        "org_name": "Partner Org",
        "name": "Partner bot",
        "description": "",
        "set_count": 1,
        "prompt_count": 1,
        "last_updated": None,
    }


def _version(remote_set: str, *, tamper: bool = False) -> dict[str, Any]:
    bundle = {
        "type": "anvil.bundle/v1",
        "version": "1.0.0",
        "project_id": "p",
        "prompt_set_id": remote_set,
        "created_at": "2026-01-01T00:00:00Z",
        "snapshot": {
            "hello.world": {"template": "Hi {{ name }}", "variables": ["name"], "metadata": {}}
        },
    }
    text = json.dumps(bundle, sort_keys=True, separators=(",", ":"))
    digest = hashlib.sha256(text.encode()).hexdigest()
    if tamper:
        text = text.replace("Hi ", "Bye ")
    return {
        "version": "1.0.0",
        "content_sha256": digest,
        "prompt_count": 1,
        "changelog": "",
        "created_at": "2026-01-01T00:00:00Z",
        "prerelease": False,
        "prompt_set_id": remote_set,
        "bundle": text,
        "prompts": {"hello.world": {"template": "Hi {{ name }}", "metadata": {}}},
    }


def _connect(app: Flask, world: World, client_as: Any, remote: Remote) -> tuple[Any, int, str]:
    remote_id, remote_set = str(uuid.uuid4()), str(uuid.uuid4())
    remote.routes[f"/api/v1/projects/{remote_id}"] = answer(200, _project(remote_id))
    editor = client_as("editor")
    response = editor.post(
        "/forges/partner/connect", data={"remote_project_id": remote_id, "org": world.org_slug}
    )
    assert response.status_code == 303
    with app.app_context():
        reference = db.session.scalar(select(RemoteProject))
        assert reference is not None
        return editor, reference.id, remote_set


def test_connect_needs_the_editor_role_and_is_audited(
    app: Flask, world: World, client_as: Any, remote: Remote
) -> None:
    remote_id = str(uuid.uuid4())
    remote.routes[f"/api/v1/projects/{remote_id}"] = answer(200, _project(remote_id))
    viewer = client_as("viewer")
    viewer.post(
        "/forges/partner/connect", data={"remote_project_id": remote_id, "org": world.org_slug}
    )
    with app.app_context():
        assert db.session.scalar(select(RemoteProject)) is None
    editor, connection, _ = _connect(app, world, client_as, remote)
    page = editor.get(f"/forges/connected/{connection}").get_data(as_text=True)
    assert "🔗" in page and "Read-only" in page and "from Partner · Partner Org" in page
    assert "remote-project" in page
    for control in ("Publish", "Submit for review", "New prompt", "Tokens"):
        assert control not in page
    assert client_as("outsider").get(f"/forges/connected/{connection}").status_code == 404
    assert editor.post(f"/forges/connected/{connection}/disconnect").status_code == 303
    with app.app_context():
        assert db.session.scalar(select(RemoteProject)) is None
        actions = db.session.scalars(select(AuditEvent.action)).all()
        assert "remote_project.connect" in actions and "remote_project.disconnect" in actions


def test_copy_checks_the_content_hash(
    app: Flask, world: World, client_as: Any, remote: Remote
) -> None:
    editor, connection, remote_set = _connect(app, world, client_as, remote)
    path = f"/api/v1/projects/{{}}/sets/{remote_set}/versions/1.0.0"
    with app.app_context():
        reference = db.session.get(RemoteProject, connection)
        assert reference is not None
        path = path.format(reference.remote_project_id)
    remote.routes[path] = answer(200, _version(remote_set, tamper=True))
    url = f"/forges/connected/{connection}/sets/{remote_set}/versions/1.0.0/copy"
    form = {"project_id": str(world.project_id), "name": "Copied"}
    editor.post(url, data=form)
    with app.app_context():
        assert db.session.scalar(select(PromptSet).where(PromptSet.name == "Copied")) is None
    remote.routes[path] = answer(200, _version(remote_set))
    response = editor.post(url, data=form)
    assert response.status_code == 303
    with app.app_context():
        copied = db.session.scalar(select(PromptSet).where(PromptSet.name == "Copied"))
        assert copied is not None and copied.status == "LIVE"
        prompt = db.session.scalar(select(Prompt).where(Prompt.prompt_set_id == copied.id))
        assert prompt is not None and prompt.template == "Hi {{ name }}"
        event = db.session.scalar(select(AuditEvent).where(AuditEvent.action == "prompt_set.copy"))
        assert event is not None
        assert event.details["forge"] == "Partner"
        assert event.details["version"] == "1.0.0"
        assert event.details["remote_set_id"] == remote_set
        assert len(event.details["content_sha256"]) == 64


def test_local_pages_stay_fast_while_a_remote_hangs(
    app: Flask, world: World, client_as: Any, remote: Remote
) -> None:
    """The project list never waits for a remote: it is served while the remote hangs."""
    release = threading.Event()
    remote.routes["*"] = lambda request: release.wait(10)
    try:
        browser = client_as("viewer")
        done = threading.Event()

        def forges_page() -> None:
            browser.get("/forges/")
            done.set()

        worker = threading.Thread(target=forges_page)
        worker.start()
        assert client_as("viewer").get("/projects/").status_code == 200
        worker.join(10)
        assert done.is_set()  # the Forges page itself gave up by its deadline
    finally:
        release.set()
