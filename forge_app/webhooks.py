"""The per-project webhook (issue 11 §2): a JSON POST for each automatic rollback.

    >>> valid_webhook_url("https://hooks.example.com/anvil")
    >>> valid_webhook_url("ftp://x")
    'The webhook address must start with https:// or http://.'

A notice is queued as a ``webhook`` :class:`~forge_app.models.releases.ScheduledJob` in the
same transaction as the rollback, and delivered by ``anvil-forge worker``: one POST with a
deadline (``FORGE_WEBHOOK_TIMEOUT``, default 5 s); a failure is retried later (after 10 s,
40 s, 160 s…) up to ``FORGE_WEBHOOK_ATTEMPTS`` times (default 5), then the job fails with a
note. The body is ``{"event": "anvil.guard.rollback", "project_id", "project", "channel",
"kind", "judged_sequence", "sequence", "summary", "figures", "at"}``.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from flask import current_app
from sqlalchemy import select

from forge_app.audit import record_event
from forge_app.errors import ForgeError, Kind
from forge_app.extensions import db
from forge_app.models import Project, User, utcnow
from forge_app.models.distribution import Channel
from forge_app.models.releases import GuardAction, ProjectWebhook, ScheduledJob

__all__ = [
    "delete_webhook",
    "deliver",
    "queue_notice",
    "save_webhook",
    "valid_webhook_url",
    "webhook_of",
]

USER_AGENT = "anvil-forge-webhook/1"


def valid_webhook_url(url: str) -> str | None:
    """None for a usable address, else one sentence saying what is wrong."""
    if len(url) > 2000:
        return "The webhook address is longer than 2000 characters."
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http"):
        return "The webhook address must start with https:// or http://."
    if not parts.hostname:
        return "The webhook address has no host."
    if parts.username or parts.password:
        return "Put no user name or password in the webhook address."
    return None


def webhook_of(project_id: Any) -> ProjectWebhook | None:
    return db.session.scalar(select(ProjectWebhook).where(ProjectWebhook.project_id == project_id))


def save_webhook(project: Project, url: str, *, enabled: bool, user: User) -> ProjectWebhook:
    """Set the project's webhook (made when it has none), audit ``webhook.update``, commit.

    Raises:
        ForgeError: the address is not usable (one sentence, see :func:`valid_webhook_url`).
    """
    problem = valid_webhook_url(url)
    if problem:
        raise ForgeError(problem, kind=Kind.INVALID)
    hook = webhook_of(project.id)
    if hook is None:
        hook = ProjectWebhook(project_id=project.id, url=url)
        db.session.add(hook)
    hook.url = url
    hook.enabled = enabled
    hook.updated_at = utcnow()
    record_event(
        "webhook.update", project, project=project, actor=user, details={"enabled": enabled}
    )
    db.session.commit()
    return hook


def delete_webhook(project: Project, *, user: User) -> None:
    """Remove the project's webhook (if any), audit ``webhook.delete``, commit."""
    hook = webhook_of(project.id)
    if hook is not None:
        db.session.delete(hook)
    record_event("webhook.delete", project, project=project, actor=user)
    db.session.commit()


def queue_notice(channel: Channel, action: GuardAction, *, now: datetime) -> ScheduledJob | None:
    """Add (not commit) a webhook job for ``action`` when the project has an enabled webhook."""
    hook = webhook_of(channel.project_id)
    if hook is None or not hook.enabled:
        return None
    body = {
        "event": f"anvil.guard.{action.kind}",
        "project_id": str(channel.project_id),
        "project": channel.project.name,
        "channel": channel.name,
        "kind": action.kind,
        "judged_sequence": action.judged_sequence,
        "sequence": action.result_sequence,
        "summary": action.summary,
        "figures": action.figures,
        "at": now.isoformat().replace("+00:00", "Z"),
    }
    job = ScheduledJob(
        project_id=channel.project_id,
        channel_id=channel.id,
        kind="webhook",
        payload_json=json.dumps({"url": hook.url, "body": body}, sort_keys=True),
        run_at=now,
        status="pending",
        note="",
    )
    db.session.add(job)
    return job


def deliver(url: str, body: dict[str, Any], *, timeout: float | None = None) -> str | None:
    """POST ``body`` to ``url``; None on a 2xx answer, else one sentence (never the body)."""
    if timeout is None:
        timeout = float(current_app.config.get("FORGE_WEBHOOK_TIMEOUT", 5.0))
    if valid_webhook_url(url) is not None:
        return "the webhook address is not an http(s) address"
    request = urllib.request.Request(  # noqa: S310 (http/https only, checked above)
        url,
        data=json.dumps(body, sort_keys=True).encode(),
        headers={"Content-Type": "application/json", "User-Agent": USER_AGENT},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            status = int(response.status)
    except urllib.error.HTTPError as e:
        status = int(e.code)
    except TimeoutError:
        return f"the webhook did not answer within {timeout:g} s"
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        if isinstance(reason, TimeoutError):
            return f"the webhook did not answer within {timeout:g} s"
        return f"the webhook could not be reached ({type(reason).__name__})"
    if 200 <= status < 300:
        return None
    return f"the webhook answered HTTP {status}"
