"""Forges: browse other FORGEs (peering), connect remote projects read-only, copy versions.

    GET  /forges/                                               configured FORGEs, reachability,
                                                                connected projects
    GET  /forges/<forge>/                                       a FORGE's orgs and projects
    POST /forges/<forge>/connect                                connect a remote project
    GET  /forges/connected/<id>                                 a connected project's sets
    GET  /forges/connected/<id>/sets/<remote_set_id>            a remote set: draft, versions
    GET  /forges/connected/<id>/sets/<set>/versions/<version>   a remote version's snapshot
    POST /forges/connected/<id>/sets/<set>/versions/<v>/copy    copy it into a local set
    POST /forges/connected/<id>/disconnect                      remove the reference

Any signed-in user may browse the configured FORGEs (they see what the configured token may
see); connecting, disconnecting and copying need the editor role in the local organisation or
project. Connected projects are visible to the members of the organisation they belong to.
Remote data is fetched when a page is viewed and always escaped; a remote failure is one
sentence on the page, never an error page.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

from flask import (
    Blueprint,
    abort,
    flash,
    g,
    redirect,
    render_template,
    request,
    url_for,
)
from flask.typing import ResponseReturnValue
from sqlalchemy import select

from forge_app.authz import member_role, signed_in_user
from forge_app.config import KnownForge
from forge_app.errors import http_status
from forge_app.extensions import current_app_object, db
from forge_app.models import Membership, Organisation, Project, Role, User
from forge_app.models.peering import RemoteProject
from forge_app.peering import PeerError, fetch_all, find_forge, known_forges, peer_client, segment
from forge_app.rest._schemas import (
    OrgList,
    ProjectList,
    PromptList,
    PromptSet,
    PromptSetList,
    VersionDetail,
    VersionList,
)
from forge_app.services.remote_projects import (
    PeeringError,
    connect_project,
    copy_version,
    disconnect_project,
)
from forge_app.services.transaction import unit_of_work

bp = Blueprint("forges", __name__, url_prefix="/forges")

_MAX_ORGS = 20


T = TypeVar("T")


def _forge_or_404(slug: str) -> KnownForge:
    forge = find_forge(current_app_object(), slug)
    if forge is None:
        abort(404)
    return forge


def _connected_for(user_id: int) -> list[tuple[RemoteProject, Organisation]]:
    rows = db.session.execute(
        select(RemoteProject, Organisation)
        .join(Organisation, Organisation.id == RemoteProject.org_id)
        .join(Membership, (Membership.org_id == Organisation.id) & (Membership.user_id == user_id))
        .order_by(Organisation.name, RemoteProject.name, RemoteProject.id)
    ).all()
    return [(ref, org) for ref, org in rows]


def _orgs_with_role(user_id: int, minimum: Role) -> list[Organisation]:
    rows = db.session.execute(
        select(Organisation, Membership.role_name)
        .join(Membership, Membership.org_id == Organisation.id)
        .where(Membership.user_id == user_id)
        .order_by(Organisation.name)
    ).all()
    return [org for org, role in rows if Role.parse(role) >= minimum]


@bp.app_context_processor
def _template_helpers() -> dict[str, Any]:
    """``connected_projects()`` for other pages (the project list): the signed-in user's
    connected remote projects, as ``(RemoteProject, Organisation)``; no remote call."""

    def connected_projects() -> list[tuple[RemoteProject, Organisation]]:
        from flask_login import current_user

        if not current_user.is_authenticated:
            return []
        return _connected_for(signed_in_user().id)

    return {"connected_projects": connected_projects}


@bp.get("/")
def index() -> ResponseReturnValue:
    user = signed_in_user()
    app = current_app_object()
    forges = known_forges(app)
    results = fetch_all(
        app, [partial(peer_client(app, f).get, "/orgs?per_page=100", OrgList) for f in forges]
    )
    rows = [
        {
            "forge": forge,
            "orgs": None if isinstance(result, PeerError) else result.items,
            "error": str(result) if isinstance(result, PeerError) else None,
        }
        for forge, result in zip(forges, results, strict=True)
    ]
    return render_template(
        "forges/index.html", rows=rows, connected=_connected_for(user.id), nav="forges"
    )


@bp.get("/<forge>/")
def browse(forge: str) -> ResponseReturnValue:
    user = signed_in_user()
    found = _forge_or_404(forge)
    app = current_app_object()
    client = peer_client(app, found)
    error = None
    groups: list[dict[str, Any]] = []
    try:
        orgs = client.get("/orgs?per_page=100", OrgList).items[:_MAX_ORGS]
    except PeerError as e:
        error, orgs = str(e), []
    results = fetch_all(
        app,
        [
            partial(client.get, f"/orgs/{segment(o.slug)}/projects?per_page=100", ProjectList)
            for o in orgs
        ],
    )
    for org, result in zip(orgs, results, strict=True):
        groups.append(
            {
                "org": org,
                "projects": [] if isinstance(result, PeerError) else result.items,
                "error": str(result) if isinstance(result, PeerError) else None,
            }
        )
    connected = {
        ref.remote_project_id: ref
        for ref, _ in reversed(_connected_for(user.id))
        if ref.forge_name == found.name
    }
    return render_template(
        "forges/browse.html",
        forge=found,
        groups=groups,
        error=error,
        local_orgs=_orgs_with_role(user.id, Role.EDITOR),
        connected=connected,
        nav="forges",
    )


@bp.post("/<forge>/connect")
def connect(forge: str) -> ResponseReturnValue:
    user = signed_in_user()
    found = _forge_or_404(forge)
    back = url_for("forges.browse", forge=found.slug)
    remote_id = request.form.get("remote_project_id", "").strip()[:64]
    org = db.session.scalar(
        select(Organisation).where(Organisation.slug == request.form.get("org", "")[:64])
    )
    if not remote_id or org is None:
        flash("Choose a remote project and one of your organisations to connect it to.", "error")
        return redirect(back), 303
    reference = _peered(
        connect_project, user, found, forge=found, remote_project_id=remote_id, org=org
    )
    if reference is None:
        return redirect(back), 303
    flash(f"Connected {reference.name} from {found.name}, read-only.", "success")
    return redirect(url_for("forges.connected", connection_id=reference.id)), 303


def _peered(action: Callable[..., T], user: User, peer: KnownForge, **options: Any) -> T | None:
    """Run a peering ``action`` as ``user`` with a client of the FORGE ``peer`` and commit;
    None (the error flashed, nothing changed) when it fails."""
    try:
        client = peer_client(current_app_object(), peer)
        done = unit_of_work(action, db.session, user, client=client, **options)
    except PeeringError as e:
        flash(str(e), "error")
        return None
    return done


def _reference_or_404(connection_id: int) -> tuple[RemoteProject, KnownForge | None]:
    reference = db.session.get(RemoteProject, connection_id)
    if reference is None:
        abort(404)
    role = member_role(signed_in_user(), reference.org_id)
    if role is None:
        abort(404)
    g.role = role
    return reference, find_forge(current_app_object(), reference.forge_name)


def _remote(
    reference: RemoteProject, forge: KnownForge | None, *paths_and_models: tuple[str, Any]
) -> tuple[list[Any], str | None]:
    """Fetch several remote paths side by side; ``(results, first error sentence)``."""
    if forge is None:
        return [None] * len(paths_and_models), (
            f"The FORGE {reference.forge_name} is no longer configured here, so this project "
            "cannot be read."
        )
    app = current_app_object()
    client = peer_client(app, forge)
    results: list[Any] = fetch_all(
        app, [partial(client.get, path, model) for path, model in paths_and_models]
    )
    error = next((str(r) for r in results if isinstance(r, PeerError)), None)
    return [None if isinstance(r, PeerError) else r for r in results], error


def _project_path(reference: RemoteProject) -> str:
    return f"/projects/{segment(reference.remote_project_id)}"


@bp.get("/connected/<int:connection_id>")
def connected(connection_id: int) -> ResponseReturnValue:
    reference, forge = _reference_or_404(connection_id)
    (sets,), error = _remote(
        reference, forge, (f"{_project_path(reference)}/sets?per_page=100", PromptSetList)
    )
    return render_template(
        "forges/connected.html",
        reference=reference,
        sets=sets.items if sets else [],
        error=error,
        can_disconnect=g.role >= Role.EDITOR,
        nav="forges",
    )


@bp.post("/connected/<int:connection_id>/disconnect")
def disconnect(connection_id: int) -> ResponseReturnValue:
    reference, _ = _reference_or_404(connection_id)
    name, forge_name = reference.name, reference.forge_name
    try:
        unit_of_work(disconnect_project, db.session, signed_in_user(), reference)
    except PeeringError as e:
        abort(http_status(e.kind), str(e))
    flash(f"Disconnected {name} of {forge_name}. Nothing changed on {forge_name}.", "success")
    return redirect(url_for("forges.index")), 303


@bp.get("/connected/<int:connection_id>/sets/<remote_set_id>")
def remote_set(connection_id: int, remote_set_id: str) -> ResponseReturnValue:
    reference, forge = _reference_or_404(connection_id)
    base = f"{_project_path(reference)}/sets/{segment(remote_set_id)}"
    (prompt_set, prompts, versions), error = _remote(
        reference,
        forge,
        (base, PromptSet),
        (f"{base}/prompts?per_page=100", PromptList),
        (f"{base}/versions?per_page=100", VersionList),
    )
    return render_template(
        "forges/remote_set.html",
        reference=reference,
        remote_set_id=remote_set_id,
        prompt_set=prompt_set,
        prompts=prompts.items if prompts else [],
        versions=versions.items if versions else [],
        error=error,
        nav="forges",
    )


def _copy_targets(user_id: int) -> list[tuple[Project, Organisation]]:
    rows = db.session.execute(
        select(Project, Organisation, Membership.role_name)
        .join(Organisation, Organisation.id == Project.org_id)
        .join(Membership, (Membership.org_id == Project.org_id) & (Membership.user_id == user_id))
        .order_by(Organisation.name, Project.name)
    ).all()
    return [(p, o) for p, o, role in rows if Role.parse(role) >= Role.EDITOR]


def _version_path(reference: RemoteProject, remote_set_id: str, version: str) -> str:
    return f"{_project_path(reference)}/sets/{segment(remote_set_id)}/versions/{segment(version)}"


@dataclass(frozen=True)
class RemoteVersion:
    """One version of a connected project's set, as its page shows it: what the remote FORGE
    answered (``prompt_set`` and ``detail`` are None where it did not; ``error`` says why) and
    the local projects it can be copied into."""

    set_id: str
    version: str
    prompt_set: PromptSet | None
    detail: VersionDetail | None
    error: str | None
    targets: list[tuple[Project, Organisation]]


@bp.get("/connected/<int:connection_id>/sets/<remote_set_id>/versions/<remote_version>")
def remote_version(
    connection_id: int, remote_set_id: str, remote_version: str
) -> ResponseReturnValue:
    reference, forge = _reference_or_404(connection_id)
    base = f"{_project_path(reference)}/sets/{segment(remote_set_id)}"
    (prompt_set, detail), error = _remote(
        reference,
        forge,
        (base, PromptSet),
        (_version_path(reference, remote_set_id, remote_version), VersionDetail),
    )
    targets = _copy_targets(signed_in_user().id)
    page = RemoteVersion(remote_set_id, remote_version, prompt_set, detail, error, targets)
    suggested = f"{prompt_set.name} (from {reference.forge_name})" if prompt_set else ""
    return render_template(
        "forges/remote_version.html",
        reference=reference,
        page=page,
        suggested=suggested[:120],
        nav="forges",
    )


@bp.post("/connected/<int:connection_id>/sets/<remote_set_id>/versions/<remote_version>/copy")
def copy(connection_id: int, remote_set_id: str, remote_version: str) -> ResponseReturnValue:
    reference, forge = _reference_or_404(connection_id)
    back = url_for(
        "forges.remote_version",
        connection_id=reference.id,
        remote_set_id=remote_set_id,
        remote_version=remote_version,
    )
    user = signed_in_user()
    target_id = _uuid(request.form.get("project_id", ""))
    target = db.session.get(Project, target_id) if target_id is not None else None
    if target is None or member_role(user, target.org_id) is None:
        flash("Choose one of your projects to copy the version into.", "error")
        return redirect(back), 303
    if forge is None:
        flash(f"The FORGE {reference.forge_name} is no longer configured here.", "error")
        return redirect(back), 303
    prompt_set = _peered(
        copy_version,
        user,
        forge,
        reference=reference,
        remote_set_id=remote_set_id,
        version=remote_version,
        target=target,
        name=request.form.get("name", ""),
    )
    if prompt_set is None:
        return redirect(back), 303
    flash(
        f"Copied version {remote_version} of {reference.name} into {target.name} as the live "
        f"draft {prompt_set.name}; its history records where it came from.",
        "success",
    )
    return redirect(url_for("prompt_sets.show", project_id=target.id, set_id=prompt_set.id)), 303


def _uuid(text: str) -> Any:
    import uuid

    try:
        return uuid.UUID(text)
    except ValueError:
        return None
