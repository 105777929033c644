"""Shared helpers of the safe-releases tests: two locked versions, heartbeats with usage."""

from __future__ import annotations

import itertools
import json
import uuid
from datetime import UTC, datetime
from typing import Any

from flask.testing import FlaskClient

from forge_app.extensions import db
from forge_app.models import PromptSet, Role, User
from forge_app.services.workflow import unlock
from tests.forge_app.conftest import SAMPLE_PROMPTS, add_prompts, lock_version
from tests.forge_app.test_distribution import Env

URL = "/api/v1/live/heartbeat"
_reports = itertools.count(1)


def two_versions(env: Env, *, publish_first_to: str | None = "production") -> tuple[str, str]:
    """v1 (SAMPLE_PROMPTS) and v2 (welcome.message also needs ``tier``) of the world's set."""
    from forge_app.services import publishing

    add_prompts(env.app, env.world, SAMPLE_PROMPTS)
    first = lock_version(env.app, env.world)
    if publish_first_to:
        env.call(publishing.publish_version, f"version:{first}", f"channel:{publish_first_to}")
    with env.app.app_context():
        prompt_set = db.session.get(PromptSet, env.world.set_id)
        owner = db.session.get(User, env.world.users["owner"])
        assert prompt_set is not None and owner is not None
        unlock(db.session, prompt_set, owner, role=Role.OWNER, expected_revision=None)
        db.session.commit()
    changed = dict(SAMPLE_PROMPTS)
    changed["welcome.message"] = {"template": "Hello {{ name }} ({{ tier }})", "metadata": {}}
    add_prompts(env.app, env.world, changed)
    return first, lock_version(env.app, env.world)


def heartbeat(
    client: FlaskClient,
    env: Env,
    token: str,
    *,
    instance: str | None = None,
    hostname: str = "checkout-service",
    channel: str = "production",
    prompts: list[dict[str, Any]] | None = None,
) -> int:
    """POST one heartbeat with a usage report; returns the HTTP status."""
    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    release = env.pointer(channel).releases[0]
    body = {
        "instance_id": instance or str(uuid.uuid4()),
        "hostname": hostname,
        "project_id": env.pid,
        "channel": channel,
        "mode": "accepting",
        "sequence": env.pointer(channel).sequence,
        "releases": [
            {
                "prompt_set_id": release.prompt_set_id,
                "version": release.version,
                "content_sha256": release.content_sha256,
            }
        ],
        "last_error": None,
        "client_version": "0.1.0",
        "usage": {
            "report_id": next(_reports),
            "from": now,
            "to": now,
            "prompts": prompts or [],
        },
    }
    response = client.post(
        URL,
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}"},
        content_type="application/json",
    )
    return int(response.status_code)
