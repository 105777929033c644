"""Local references to projects of other FORGEs, and copies of their versions with their
provenance (the remote reads go through :mod:`forge_app.peering`).

    >>> reference = connect_project(session, user, forge=forge, client=client,
    ...                             remote_project_id=pid, org=org)      # doctest: +SKIP

Each action is audited; the copy's history records the source FORGE, project, set, version and
content hash. Whatever goes wrong is one :class:`PeeringError` sentence.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from forge_app.audit import record_event
from forge_app.config import KnownForge
from forge_app.errors import ForgeError, Kind
from forge_app.models import Organisation, Project, PromptSet, Role, SetStatus, User
from forge_app.models.peering import RemoteProject
from forge_app.peering import PeerClient, PeerError, segment
from forge_app.rest._schemas import VersionDetail
from forge_app.services.drafts import replace_prompts
from forge_app.services.workflow import require_role

__all__ = [
    "PeeringError",
    "checked_snapshot",
    "connect_project",
    "copy_version",
    "disconnect_project",
]


class PeeringError(ForgeError):
    """A local peering action (connect, disconnect, copy) that did not happen."""

    default_kind = Kind.INVALID


def _require_role(user: User, org_id: int, minimum: Role, action: str) -> None:
    from forge_app.authz import member_role

    role = member_role(user, org_id)
    if role is None:
        raise PeeringError(
            "There is no such organisation, or you are not a member.", kind=Kind.NOT_FOUND
        )
    require_role(role, minimum, action, error=PeeringError)


def _remote(client: PeerClient, path: str, model: type[Any]) -> Any:
    try:
        return client.get(path, model)
    except PeerError as e:
        raise PeeringError(str(e), kind=Kind.REMOTE) from e


def _add_unique(session: Session, obj: RemoteProject | PromptSet, taken: str) -> None:
    """Add ``obj``; the database's unique constraint decides a race (``taken``: conflict)."""
    session.add(obj)
    try:
        session.flush()
    except IntegrityError:
        session.rollback()
        raise PeeringError(taken, kind=Kind.CONFLICT) from None


def connect_project(
    session: Session,
    user: User,
    *,
    forge: KnownForge,
    client: PeerClient,
    remote_project_id: str,
    org: Organisation,
) -> RemoteProject:
    """Create a local reference to a remote project in ``org`` (no data is copied); audited.

    Raises:
        PeeringError: for a role below editor, an already connected project, or a remote
            project that cannot be read (with the remote's one sentence).
    """
    from forge_app.rest._schemas import ProjectSummary

    _require_role(user, org.id, Role.EDITOR, "connect remote projects")
    remote = _remote(client, f"/projects/{segment(remote_project_id)}", ProjectSummary)
    exists = select(RemoteProject.id).where(
        RemoteProject.org_id == org.id,
        RemoteProject.forge_name == forge.name,
        RemoteProject.remote_project_id == str(remote.id),
    )
    already = f"{remote.name[:120]} of {forge.name} is already connected to {org.name}."
    if session.scalar(exists):
        raise PeeringError(already, kind=Kind.CONFLICT)
    reference = RemoteProject(
        org_id=org.id,
        forge_name=forge.name,
        remote_project_id=str(remote.id),
        remote_org_name=remote.org_name[:200],
        name=remote.name[:200],
        created_by_id=user.id,
    )
    _add_unique(session, reference, already)
    record_event(
        "remote_project.connect",
        reference,
        org_id=org.id,
        actor=user,
        details={"forge": forge.name, "remote_project_id": str(remote.id), "name": remote.name},
        session=session,
    )
    return reference


def disconnect_project(session: Session, user: User, reference: RemoteProject) -> None:
    """Remove the reference (nothing remote changes); audited.

    Raises:
        PeeringError: for a role below editor.
    """
    _require_role(user, reference.org_id, Role.EDITOR, "disconnect remote projects")
    record_event(
        "remote_project.disconnect",
        reference,
        org_id=reference.org_id,
        actor=user,
        details={
            "forge": reference.forge_name,
            "remote_project_id": reference.remote_project_id,
            "name": reference.name,
        },
        session=session,
    )
    session.delete(reference)


def copy_version(
    session: Session,
    user: User,
    *,
    reference: RemoteProject,
    client: PeerClient,
    remote_set_id: str,
    version: str,
    target: Project,
    name: str,
) -> PromptSet:
    """Copy a remote version into ``target`` as a new LIVE set, with its provenance.

    The remote answer's ``bundle`` must hash to its ``content_sha256`` and name the requested
    set and version; the prompts copied are those of that checked bundle. The new set's history
    (audit log) records the source FORGE, project, set, version and content hash.

    Raises:
        PeeringError: for a role below editor in ``target``, a name already taken, a remote
            that cannot be read, a hash that does not match, or prompts that do not validate.
    """
    _require_role(user, target.org_id, Role.EDITOR, "create prompt sets")
    name = name.strip()
    if not name or len(name) > 120:
        raise PeeringError("Give the new prompt set a name of 1 to 120 characters.")
    taken = f"{target.name} already has a prompt set named {name!r}."
    if session.scalar(
        select(PromptSet.id).where(PromptSet.project_id == target.id, PromptSet.name == name)
    ):
        raise PeeringError(taken, kind=Kind.CONFLICT)
    path = (
        f"/projects/{segment(reference.remote_project_id)}/sets/{segment(remote_set_id)}"
        f"/versions/{segment(version)}"
    )
    detail: VersionDetail = _remote(client, path, VersionDetail)
    snapshot = checked_snapshot(detail, remote_set_id=remote_set_id, version=version)
    prompt_set = PromptSet(
        project_id=target.id,
        name=name,
        description=(
            f"Copied from {reference.forge_name}: {reference.name} / version {detail.version}."
        )[:2000],
        status=SetStatus.LIVE.value,
        revision=1,
        updated_by_id=user.id,
    )
    _add_unique(session, prompt_set, taken)
    session.refresh(prompt_set)

    try:
        replace_prompts(session, prompt_set, snapshot, user, remove_missing=False)
    except ForgeError as e:
        session.rollback()
        raise PeeringError(f"The remote version's prompts do not validate here: {e}") from e
    provenance = {
        "forge": reference.forge_name,
        "project": reference.name,
        "remote_project_id": reference.remote_project_id,
        "remote_set_id": str(detail.prompt_set_id),
        "version": detail.version,
        "content_sha256": detail.content_sha256,
    }
    for action, details in (("prompt_set.create", None), ("prompt_set.copy", provenance)):
        record_event(
            action, prompt_set, project=target, actor=user, details=details, session=session
        )
    return prompt_set


def checked_snapshot(
    detail: VersionDetail, *, remote_set_id: str, version: str
) -> dict[str, dict[str, Any]]:
    """The prompts (prompt-file shape) of a remote version's bundle, after checking that the
    bundle hashes to ``content_sha256`` and is the requested set and version.

    Raises:
        PeeringError: if any of that does not hold.
    """
    data = detail.bundle.encode("utf-8")
    if hashlib.sha256(data).hexdigest() != detail.content_sha256:
        raise PeeringError(
            "The remote version's content does not match its content hash, so nothing was copied.",
            kind=Kind.REMOTE,
        )
    try:
        bundle = json.loads(data)
        snapshot = bundle["snapshot"]
        if not isinstance(snapshot, dict):
            raise TypeError("snapshot")
        same = bundle.get("version") == version == detail.version and str(
            bundle.get("prompt_set_id")
        ) == str(remote_set_id)
    except (ValueError, KeyError, TypeError):
        raise PeeringError(
            "The remote version's bundle is not readable.", kind=Kind.REMOTE
        ) from None
    if not same:
        raise PeeringError(
            "The remote answered with another set or version than asked for, so nothing was "
            "copied.",
            kind=Kind.REMOTE,
        )
    prompts: dict[str, dict[str, Any]] = {}
    for key, prompt in snapshot.items():
        if not isinstance(prompt, dict):
            raise PeeringError("The remote version's bundle is not readable.", kind=Kind.REMOTE)
        entry = {k: v for k, v in prompt.items() if k in ("template", "messages", "metadata")}
        entry.setdefault("metadata", {})
        prompts[str(key)] = entry
    return prompts
