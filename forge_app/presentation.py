"""Template helpers: filters, role checks for templates, versioned static URLs.

>>> # in a template:  {{ event.created_at | when }}  {% if can("editor") %}…{% endif %}
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flask import Flask, abort, current_app, g, render_template, request, url_for
from flask.typing import ResponseReturnValue
from itsdangerous import BadSignature, URLSafeSerializer
from markupsafe import Markup

from forge_app.models import Role, SetStatus

__all__ = ["ago", "confirm_url", "init_app", "when"]

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

    app.add_url_rule("/confirm/<token>", "confirm", confirm_page)
    app.jinja_env.globals["confirm_url"] = confirm_url

    @app.context_processor
    def _helpers() -> dict[str, Any]:
        from forge_app.audit import ACTION_LABELS

        return {
            "ACTION_LABELS": ACTION_LABELS,
            "Role": Role,
            "SetStatus": SetStatus,
            "can": can,
            "confirm_url": confirm_url,
            "static_url": static_url,
            "status_badge": status_badge,
        }


# --- one confirmation pattern: a page -------------------------------------------------------
#
# A destructive or irreversible button is a link to a confirmation page that states what will
# happen, with the real (CSRF-protected) form on it: the same for every action, readable by
# screen readers, and working without JavaScript. The page's text and target come signed from
# the FORGE's own templates, so nobody can make a page that asks a misleading question.


def _confirmations() -> URLSafeSerializer:
    key = current_app.secret_key
    assert key is not None, "the app has a secret key (config.py always sets one)"
    return URLSafeSerializer(key, salt="anvil.confirm")


def confirm_url(
    action: str,
    question: str,
    label: str,
    fields: dict[str, Any] | None = None,
    class_: str = "button",
) -> str:
    """The URL of the confirmation page for a POST to ``action`` (a path of this site), for the
    signed-in user only (the page is 404 for anyone else)."""
    from flask_login import current_user

    back = request.full_path.rstrip("?") if request else "/"
    user_id = current_user.id if current_user and current_user.is_authenticated else None
    return url_for(
        "confirm",
        token=confirm_token(action, question, label, fields, class_, back=back, user_id=user_id),
    )


def confirm_token(
    action: str,
    question: str,
    label: str,
    fields: dict[str, Any] | None,
    class_: str,
    *,
    back: str,
    user_id: int | None,
) -> str:
    """The signed text of a confirmation page (see :func:`confirm_url`)."""
    payload = {
        "a": action,
        "q": question,
        "l": label,
        "f": {k: str(v) for k, v in (fields or {}).items()},
        "b": back,
        "c": "danger" if "danger" in class_ else "primary",
        "u": user_id,
    }
    return _confirmations().dumps(payload)


def confirm_page(token: str) -> ResponseReturnValue:
    """GET only: shows the question; the form on it posts to the action's own route, which
    checks the role and the CSRF token as always."""
    from flask_login import current_user

    from forge_app.authz import safe_local_path

    try:
        data = _confirmations().loads(token)
    except BadSignature:
        abort(404)
    if not isinstance(data, dict) or data.get("u") != current_user.id:
        abort(404)  # made for someone else
    action = safe_local_path(str(data.get("a", "")))
    if action is None:
        abort(404)
    return render_template(
        "confirm.html",
        action=action,
        question=str(data.get("q", "")),
        label=str(data.get("l", "Confirm")),
        fields=dict(data.get("f") or {}),
        back=safe_local_path(str(data.get("b", ""))) or url_for("projects.index"),
        danger=data.get("c") == "danger",
    )


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
    labels = {"LIVE": "Draft (LIVE)", "REVIEW": "In review", "LOCKED": "Locked"}
    return Markup('<span class="badge badge-{}">{}</span>').format(
        status.lower(), labels.get(status, status)
    )
