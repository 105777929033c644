"""Template helpers: filters, role checks for templates, versioned static URLs.

>>> # in a template:  {{ event.created_at | when }}  {% if can("editor") %}…{% endif %}
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flask import Flask, g, url_for
from markupsafe import Markup

from forge_app.models import Role, SetStatus

__all__ = ["ago", "init_app", "when"]

_STATIC = Path(__file__).parent / "static"


def init_app(app: Flask) -> None:
    app.jinja_env.filters["when"] = when
    app.jinja_env.filters["ago"] = ago
    app.jinja_env.filters["when_iso"] = when_iso
    app.jinja_env.filters["plural"] = plural
    app.jinja_env.trim_blocks = True
    app.jinja_env.lstrip_blocks = True
    versions: dict[str, str] = {}

    def static_url(filename: str) -> str:
        if filename not in versions or app.debug:
            path = _STATIC / filename
            digest = hashlib.sha256(path.read_bytes()).hexdigest()[:10] if path.is_file() else "0"
            versions[filename] = digest
        return url_for("static", filename=filename, v=versions[filename])

    @app.context_processor
    def _helpers() -> dict[str, Any]:
        from forge_app.audit import ACTION_LABELS

        return {
            "ACTION_LABELS": ACTION_LABELS,
            "Role": Role,
            "SetStatus": SetStatus,
            "can": can,
            "static_url": static_url,
            "status_badge": status_badge,
        }


def can(minimum: str) -> bool:
    """Whether the user's role in the current project/organisation is at least ``minimum``."""
    role: Role | None = g.get("role")
    return role is not None and role >= Role.parse(minimum)


def when(moment: datetime | None) -> str:
    if moment is None:
        return "—"
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def when_iso(text: str | None) -> str:
    """``when`` for an RFC 3339 text (a pointer's ``published_at``); other text as it is."""
    if not text:
        return "—"
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return text
    return when(moment if moment.tzinfo else moment.replace(tzinfo=UTC))


def ago(moment: datetime | None) -> Markup:
    """``<time>`` showing relative time, with the exact time as its title."""
    if moment is None:
        return Markup("—")
    seconds = int((datetime.now(UTC) - moment).total_seconds())
    if seconds < 60:
        text = "just now"
    elif seconds < 3600:
        text = plural(seconds // 60, "minute") + " ago"
    elif seconds < 86400:
        text = plural(seconds // 3600, "hour") + " ago"
    elif seconds < 86400 * 30:
        text = plural(seconds // 86400, "day") + " ago"
    else:
        text = moment.astimezone(UTC).strftime("%Y-%m-%d")
    return Markup('<time datetime="{}" title="{}">{}</time>').format(
        moment.astimezone(UTC).isoformat(), when(moment), text
    )


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def status_badge(status: str) -> Markup:
    labels = {"LIVE": "Live draft", "REVIEW": "In review", "LOCKED": "Locked"}
    return Markup('<span class="badge badge-{}">{}</span>').format(
        status.lower(), labels.get(status, status)
    )
