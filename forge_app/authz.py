"""Authorisation: every route requires a signed-in user unless marked ``@public``.

    >>> @bp.get("/<uuid:project_id>/things")
    ... @require_project_role(Role.EDITOR)
    ... def things(project: Project) -> str: ...

Non-members get 404 (a project's existence is not disclosed); members whose role is too low
get 403. ``require_project_role`` replaces the ``project_id`` URL argument with the loaded
``Project`` and sets ``g.project``, ``g.org`` and ``g.role`` for templates.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from functools import wraps
from typing import Any, ParamSpec, TypeVar
from urllib.parse import urlsplit

from flask import abort, g, request
from flask_login import current_user
from sqlalchemy import select

from forge_app.extensions import db
from forge_app.models import Membership, Organisation, Project, PromptSet, Role, User

__all__ = [
    "View",
    "current_role",
    "is_public",
    "load_prompt_set",
    "member_role",
    "public",
    "require_admin",
    "require_org_role",
    "require_project_role",
    "safe_local_path",
    "signed_in_user",
]

F = TypeVar("F", bound=Callable[..., Any])
P = ParamSpec("P")
R = TypeVar("R")
#: A view whose URL arguments a decorator replaces by the objects they name.
View = Callable[..., Any]


def public(view: F) -> F:
    """Mark a view as reachable without signing in (it does its own checks, if any)."""
    view.forge_public = True  # type: ignore[attr-defined]
    return view


def safe_local_path(target: str | None) -> str | None:
    """``target`` if it is a path on this site (``/projects/…``), else None.

    Refuses absolute and protocol-relative URLs (``//evil``, ``/\\evil``, which browsers read as
    ``//evil``) and any whitespace or control character (browsers drop tabs and newlines from
    URLs, and a newline cannot go into a Location header).
    """
    if not target or not target.startswith("/") or target.startswith("//"):
        return None
    if "\\" in target or any(ch.isspace() or not ch.isprintable() for ch in target):
        return None
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return None
    return target


def is_public(view: Callable[..., Any] | None) -> bool:
    return bool(getattr(view, "forge_public", False))


def signed_in_user() -> User:
    """The signed-in user (routes are login-protected by default, so this always exists)."""
    user = current_user._get_current_object()
    if not isinstance(user, User):
        abort(401)
    return user


def member_role(user: User, org_id: int) -> Role | None:
    """The user's role in an organisation, or None for non-members."""
    role_name = db.session.scalar(
        select(Membership.role_name).where(
            Membership.org_id == org_id, Membership.user_id == user.id
        )
    )
    return None if role_name is None else Role.parse(role_name)


def current_role() -> Role | None:
    role: Role | None = g.get("role")
    return role


def require_project_role(minimum: Role) -> Callable[[View], View]:
    """Load the project of the ``project_id`` URL argument and check the user's role."""
    return _loading("project_id", "project", lambda project_id: _load_project(project_id, minimum))


def _loading(url_arg: str, into: str, load: Callable[[Any], Any]) -> Callable[[View], View]:
    """A decorator passing ``load(<url_arg>)`` to the view as ``into`` instead of ``url_arg``."""

    def decorate(view: View) -> View:
        @wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            kwargs[into] = load(kwargs.pop(url_arg))
            return view(*args, **kwargs)

        return wrapper

    return decorate


def _load_project(project_id: uuid.UUID | str, minimum: Role) -> Project:
    user = signed_in_user()
    try:
        pid = project_id if isinstance(project_id, uuid.UUID) else uuid.UUID(str(project_id))
    except ValueError:
        abort(404)
    row = db.session.execute(
        select(Project, Organisation, Membership.role_name)
        .join(Organisation, Organisation.id == Project.org_id)
        .outerjoin(
            Membership, (Membership.org_id == Project.org_id) & (Membership.user_id == user.id)
        )
        .where(Project.id == pid)
    ).first()
    if row is None or row[2] is None:
        abort(404)
    project, org, role_name = row
    role = Role.parse(role_name)
    g.project, g.org, g.role = project, org, role
    if role < minimum:
        abort(403)
    return project


def require_org_role(minimum: Role) -> Callable[[View], View]:
    """Load the organisation of the ``org_slug`` URL argument and check the user's role."""
    return _loading("org_slug", "org", lambda slug: _load_org(slug, minimum))


def _load_org(slug: str, minimum: Role) -> Organisation:
    user = signed_in_user()
    row = db.session.execute(
        select(Organisation, Membership.role_name)
        .outerjoin(
            Membership,
            (Membership.org_id == Organisation.id) & (Membership.user_id == user.id),
        )
        .where(Organisation.slug == slug)
    ).first()
    if row is None or row[1] is None:
        abort(404)
    org, role_name = row
    g.org, g.role = org, Role.parse(role_name)
    if g.role < minimum:
        abort(403)
    return org


def require_admin(view: Callable[P, R]) -> Callable[P, R]:
    """Only site administrators (``User.is_admin``)."""

    @wraps(view)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        if not signed_in_user().is_admin:
            abort(403)
        return view(*args, **kwargs)

    return wrapper


def load_prompt_set(
    project: Project, set_id: uuid.UUID | str, *, for_update: bool = False
) -> PromptSet:
    """The prompt set ``set_id`` of ``project``, or 404. ``for_update`` locks the row (PostgreSQL)
    so concurrent workflow transitions serialise."""
    try:
        sid = set_id if isinstance(set_id, uuid.UUID) else uuid.UUID(str(set_id))
    except ValueError:
        abort(404)
    query = select(PromptSet).where(PromptSet.id == sid, PromptSet.project_id == project.id)
    if for_update:
        query = query.with_for_update()
    prompt_set = db.session.scalar(query)
    if prompt_set is None:
        abort(404)
    g.prompt_set = prompt_set
    return prompt_set


def login_required_by_default() -> Any:
    """``before_request`` hook: anonymous users are sent to the sign-in page."""
    from flask import current_app, redirect, url_for

    if request.endpoint is None:
        return None  # 404/405 handled by Flask
    view = current_app.view_functions.get(request.endpoint)
    if request.endpoint == "static" or is_public(view) or current_user.is_authenticated:
        return None
    if request.blueprint == "api" or request.accept_mimetypes.best == "application/json":
        abort(401)
    return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))
