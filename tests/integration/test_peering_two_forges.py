"""Two real FORGE processes on loopback, each with its own SQLite database: the remote serves
its REST API to the local one's Forges pages through a personal API token.

Shown: the Forges page finds the remote reachable; browsing lists the remote's organisations
and projects (with prompt counts) as its token may see them; connecting makes a read-only
reference whose sets, draft and versions are fetched when viewed; a version is copied into a
local set, checked against its content hash, with its provenance in the set's history; the
remote's API answers If-None-Match with 304 over real HTTP; the token never reaches a log.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import select

from forge_app import create_app
from forge_app.extensions import db
from forge_app.models import AuditEvent, Project, Prompt, PromptSet, Role, SetStatus
from forge_app.schema import upgrade_database
from forge_app.services.api_tokens import create_api_token
from forge_app.services.drafts import replace_prompts
from forge_app.services.users import add_member, create_org, create_user, hash_password
from forge_app.services.workflow import approve, submit
from tests.servers import stop_process

pytestmark = pytest.mark.integration

PASSWORD = "correct horse battery staple"
PROMPTS = {
    "partner.greeting": {"template": "Hello {{ name }}, welcome to {{ shop }}!", "metadata": {}},
    "partner.chat": {
        "messages": [
            {"role": "system", "template": "You help {{ shop }} customers."},
            {"role": "user", "template": "{{ question }}"},
        ],
        "metadata": {"description": "Support chat <b>beta</b>"},
    },
}


READERS: dict[int, threading.Thread] = {}


@dataclass
class Forge:
    url: str
    instance: Path
    process: subprocess.Popen[bytes]
    output: list[str]


def _settings(instance: Path) -> dict[str, str]:
    return {
        "FORGE_INSTANCE_PATH": str(instance),
        "FORGE_DATABASE_URL": f"sqlite:///{instance / 'forge.db'}",
        "FORGE_SECRET_KEY": "integration-secret-" + "s" * 32,
        "FORGE_DATA_KEY": "integration-data-key",
    }


def _seed_remote(instance: Path) -> dict[str, Any]:
    app = create_app(_settings(instance))
    with app.app_context():
        upgrade_database(db.engine)
        session = db.session
        org = create_org(session, "Partner Org", "partner")
        hashed = hash_password(PASSWORD)
        editor = create_user(session, "ed@partner.test", name="Ed", password_hash=hashed)
        reviewer = create_user(session, "rev@partner.test", name="Rev", password_hash=hashed)
        add_member(session, org, editor, Role.EDITOR)
        add_member(session, org, reviewer, Role.REVIEWER)
        project = Project(org_id=org.id, name="Partner bot", description="Their bot")
        session.add(project)
        session.flush()
        prompt_set = PromptSet(project_id=project.id, name="Support", status=SetStatus.LIVE.value)
        session.add(prompt_set)
        session.flush()
        replace_prompts(session, prompt_set, PROMPTS, editor, remove_missing=True)
        submit(
            session,
            prompt_set,
            editor,
            role=Role.EDITOR,
            bump="minor",
            changelog="First",
            expected_revision=prompt_set.revision,
        )
        version = approve(
            session, prompt_set, reviewer, role=Role.REVIEWER, expected_revision=prompt_set.revision
        )
        _, token = create_api_token(session, reviewer, "Home FORGE", scope="read", days=7)
        session.commit()
        result = {
            "token": token,
            "project_id": str(project.id),
            "set_id": str(prompt_set.id),
            "version": version.version,
            "content_sha256": version.content_sha256,
        }
        db.engine.dispose()
    return result


def _seed_local(instance: Path) -> dict[str, Any]:
    app = create_app(_settings(instance))
    with app.app_context():
        upgrade_database(db.engine)
        session = db.session
        org = create_org(session, "Home", "home")
        user = create_user(
            session, "me@home.test", name="Me", password_hash=hash_password(PASSWORD)
        )
        add_member(session, org, user, Role.OWNER)
        project = Project(org_id=org.id, name="Home app", description="")
        session.add(project)
        session.commit()
        result = {"project_id": str(project.id)}
        db.engine.dispose()
    return result


def _start(instance: Path, extra_env: dict[str, str]) -> Forge:
    env = {**os.environ, **_settings(instance), **extra_env}
    process = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("anvil-forge")),
            "run",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=str(instance),
    )
    assert process.stdout is not None
    output: list[str] = []
    url = None
    for raw in process.stdout:
        line = raw.decode(errors="replace")
        output.append(line)
        found = re.search(r"listening on (http://127\.0\.0\.1:\d+)/", line)
        if found:
            url = found.group(1)
            break
    if url is None:
        _stop(process)
        pytest.fail("the FORGE did not start:\n" + "".join(output))

    def drain() -> None:
        assert process.stdout is not None
        for raw in process.stdout:
            output.append(raw.decode(errors="replace"))

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    READERS[process.pid] = reader
    return Forge(url, instance, process, output)


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Stop one FORGE by its PID and close its output pipe."""
    stop_process(process)
    reader = READERS.pop(process.pid, None)
    if reader is not None:
        reader.join(10)  # the pipe ends with the process
    if process.stdout is not None:
        process.stdout.close()


@pytest.fixture
def forges(tmp_path: Path) -> Iterator[tuple[Forge, Forge, dict[str, Any], dict[str, Any]]]:
    (tmp_path / "remote").mkdir()
    (tmp_path / "local").mkdir()
    remote_data = _seed_remote(tmp_path / "remote")
    local_data = _seed_local(tmp_path / "local")
    remote = _start(tmp_path / "remote", {})
    local = None
    try:
        known = [{"name": "Partner FORGE", "url": remote.url, "bearer_token_env": "PARTNER_TOKEN"}]
        local = _start(
            tmp_path / "local",
            {"FORGE_KNOWN_FORGES": json.dumps(known), "PARTNER_TOKEN": remote_data["token"]},
        )
        yield remote, local, remote_data, local_data
    finally:
        if local is not None:
            _stop(local.process)
        _stop(remote.process)


def _sign_in(base: str) -> requests.Session:
    session = requests.Session()
    page = session.get(f"{base}/login", timeout=30)
    csrf = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page.text)
    assert csrf is not None
    response = session.post(
        f"{base}/login",
        data={"csrf_token": csrf.group(1), "email": "me@home.test", "password": PASSWORD},
        timeout=30,
    )
    assert response.status_code == 200 and "Sign out" in response.text
    return session


def _csrf(session: requests.Session, url: str) -> tuple[str, str]:
    page = session.get(url, timeout=30)
    assert page.status_code == 200, page.text[:500]
    token = re.search(r'name="csrf-token" content="([^"]+)"', page.text)
    assert token is not None
    return page.text, token.group(1)


def test_browse_connect_and_copy_between_two_forges(
    forges: tuple[Forge, Forge, dict[str, Any], dict[str, Any]],
) -> None:
    remote, local, remote_data, local_data = forges
    browser = _sign_in(local.url)

    index = browser.get(f"{local.url}/forges/", timeout=30).text
    assert "Partner FORGE" in index and 'data-forge-status="reachable"' in index

    listing, csrf = _csrf(browser, f"{local.url}/forges/partner-forge/")
    assert "Partner Org" in listing and "Partner bot" in listing
    row = re.search(
        rf'data-remote-project-row="{remote_data["project_id"]}">.*?<td>(\d+)</td>', listing, re.S
    )
    assert row is not None and row.group(1) == "2"  # the remote's prompt count

    connected = browser.post(
        f"{local.url}/forges/partner-forge/connect",
        data={"csrf_token": csrf, "remote_project_id": remote_data["project_id"], "org": "home"},
        timeout=30,
    )
    assert connected.status_code == 200
    assert "🔗" in connected.text and "Read-only" in connected.text
    assert "from Partner FORGE · Partner Org" in connected.text
    assert "Support" in connected.text and remote_data["version"] in connected.text

    connection = re.search(r"/forges/connected/(\d+)", connected.url)
    assert connection is not None
    base = f"{local.url}/forges/connected/{connection.group(1)}/sets/{remote_data['set_id']}"
    draft = browser.get(base, timeout=30).text
    assert "partner.greeting" in draft
    assert "Support chat &lt;b&gt;beta&lt;/b&gt;" in draft  # remote text is escaped

    version_page, csrf = _csrf(browser, f"{base}/versions/{remote_data['version']}")
    assert remote_data["content_sha256"] in version_page
    copied = browser.post(
        f"{base}/versions/{remote_data['version']}/copy",
        data={"csrf_token": csrf, "project_id": local_data["project_id"], "name": "Support copy"},
        timeout=30,
    )
    assert copied.status_code == 200
    assert "Copied version" in copied.text

    app = create_app(_settings(local.instance))
    with app.app_context():
        copy = db.session.scalar(select(PromptSet).where(PromptSet.name == "Support copy"))
        assert copy is not None and copy.status == SetStatus.LIVE.value
        keys = db.session.scalars(select(Prompt.key).where(Prompt.prompt_set_id == copy.id))
        assert sorted(keys) == sorted(PROMPTS)
        event = db.session.scalar(select(AuditEvent).where(AuditEvent.action == "prompt_set.copy"))
        assert event is not None
        assert event.details == {
            "forge": "Partner FORGE",
            "project": "Partner bot",
            "remote_project_id": remote_data["project_id"],
            "remote_set_id": remote_data["set_id"],
            "version": remote_data["version"],
            "content_sha256": remote_data["content_sha256"],
        }
        db.engine.dispose()

    # The remote's API over real HTTP: an ETag, and 304 for If-None-Match.
    headers = {"Authorization": f"Bearer {remote_data['token']}"}
    first = requests.get(f"{remote.url}/api/v1/orgs", headers=headers, timeout=30)
    assert first.status_code == 200
    again = requests.get(
        f"{remote.url}/api/v1/orgs",
        headers={**headers, "If-None-Match": first.headers["ETag"]},
        timeout=30,
    )
    assert again.status_code == 304
    # A read token changes nothing on the remote.
    refused = requests.post(
        f"{remote.url}/api/v1/projects/{remote_data['project_id']}/sets/{remote_data['set_id']}/submit",
        headers=headers,
        json={"bump": "patch", "changelog": "x", "revision": 1},
        timeout=30,
    )
    assert refused.status_code == 403

    _stop(local.process)
    _stop(remote.process)
    logs = "".join(local.output + remote.output)
    assert remote_data["token"] not in logs
    assert "/api/v1/orgs" in logs  # the remote did log the requests (without the token)
