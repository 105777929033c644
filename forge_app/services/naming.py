"""Named objects (projects, prompt sets, channels): create, rename or delete one (the name
unique in its parent), with its audit event, in one committed transaction.

    >>> from forge_app.services.naming import create_project
    >>> project = create_project(org, "Checkout", "", user=user)  # doctest: +SKIP

The database's unique constraint decides a race (two people creating the same name at once):
the loser gets :class:`NameTaken` and nothing was saved.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from forge_app.audit import record_event
from forge_app.errors import ForgeError, Kind
from forge_app.extensions import db
from forge_app.models import Organisation, Project, PromptSet, PromptSetVersion, SetStatus, User
from forge_app.models.distribution import Channel, Publication

__all__ = [
    "NameTaken",
    "create_channel",
    "create_named",
    "create_project",
    "create_prompt_set",
    "delete_channel",
    "delete_prompt_set",
    "rename",
    "update_project",
    "update_prompt_set",
]


class NameTaken(ForgeError):
    """The name is already used in the parent; ``str()`` says so in one sentence."""

    default_kind = Kind.CONFLICT


def create_named(
    obj: Project | PromptSet | Channel,
    *,
    taken: str,
    project: Project,
    details: dict[str, Any] | None = None,
) -> None:
    """Add ``obj`` unless its parent has one of its kind so named, record its ``*.create``
    audit event and commit.

    Raises:
        NameTaken: with ``taken`` as its sentence, if the name is used (now or by a race).
    """
    action, parent = _CREATES[type(obj)]
    model = type(obj)
    exists = select(model.id).where(
        getattr(model, parent) == getattr(obj, parent), model.name == obj.name
    )
    if db.session.scalar(exists) is not None:
        raise NameTaken(taken)
    try:
        db.session.add(obj)
        db.session.flush()
        record_event(action, obj, project=project, details=details)
        db.session.commit()
    except IntegrityError:  # created by someone else since the check above
        db.session.rollback()
        raise NameTaken(taken) from None


#: The audit action of a creation and the column naming the parent, by kind of object.
_CREATES: dict[type[Any], tuple[str, str]] = {
    Project: ("project.create", "org_id"),
    PromptSet: ("prompt_set.create", "project_id"),
    Channel: ("channel.create", "project_id"),
}


def rename(obj: Project | PromptSet, name: str, description: str, *, project: Project) -> None:
    """Give ``obj`` a new name and description, audit what changed, and commit.

    Raises:
        NameTaken: if another object of its kind in its parent has the name.
    """
    action, taken = _RENAMES[type(obj)]
    name, description = name.strip(), description.strip()
    changes: dict[str, Any] = {}
    if name != obj.name:
        changes["name"] = {"from": obj.name, "to": name}
    if description != obj.description:
        changes["description"] = "changed"
    obj.name, obj.description = name, description
    if changes:
        record_event(action, obj, project=project, details=changes)
    try:
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
        raise NameTaken(taken.format(name=name)) from None


#: The audit action of a rename and the sentence for a name taken, by kind of object.
_RENAMES: dict[type[Any], tuple[str, str]] = {
    Project: ("project.update", "Another project is already named {name!r}."),
    PromptSet: ("prompt_set.update", "Another prompt set is already named {name!r}."),
}


def update_project(project: Project, name: str, description: str) -> None:
    """Save a project's settings; raises :class:`NameTaken` if another project has the name."""
    rename(project, name, description, project=project)


def update_prompt_set(prompt_set: PromptSet, name: str, description: str) -> None:
    """Save a prompt set's settings; raises :class:`NameTaken` if another set has the name."""
    rename(prompt_set, name, description, project=prompt_set.project)


def create_project(org: Organisation, name: str, description: str, *, user: User) -> Project:
    """A new project of ``org``; raises :class:`NameTaken` if ``org`` has one so named."""
    name = name.strip()
    project = Project(
        org_id=org.id, name=name, description=description.strip(), created_by_id=user.id
    )
    taken = f"{org.name} already has a project named {name!r}."
    create_named(project, taken=taken, project=project)
    return project


def create_prompt_set(project: Project, name: str, description: str, *, user: User) -> PromptSet:
    """A new LIVE prompt set; raises :class:`NameTaken` if ``project`` has one so named."""
    name = name.strip()
    prompt_set = PromptSet(
        project_id=project.id,
        name=name,
        description=description.strip(),
        status=SetStatus.LIVE.value,
        revision=1,
        updated_by_id=user.id,
    )
    taken = f"This project already has a prompt set named {name!r}."
    create_named(prompt_set, taken=taken, project=project)
    return prompt_set


def create_channel(project: Project, name: str, *, user: User) -> Channel:
    """A new channel with its default policy; raises :class:`NameTaken` if it exists."""
    name = name.strip()
    channel = Channel(
        project_id=project.id,
        name=name,
        policy=Channel.default_policy(name),
        created_by_id=user.id,
    )
    taken = f"Channel {name} exists already."
    create_named(channel, taken=taken, project=project, details={"policy": channel.policy})
    return channel


def _delete(obj: PromptSet | Channel, *, action: str, project: Project) -> None:
    record_event(action, obj, project=project)
    db.session.delete(obj)
    db.session.commit()


def delete_prompt_set(prompt_set: PromptSet) -> None:
    """Delete a prompt set that has no versions (they may be in production), and commit.

    Raises:
        ForgeError: (conflict) if it has versions.
    """
    if db.session.scalar(
        select(PromptSetVersion.id).where(PromptSetVersion.prompt_set_id == prompt_set.id)
    ):
        raise ForgeError(
            "A prompt set with versions cannot be deleted: its versions may be in production."
        )
    _delete(prompt_set, action="prompt_set.delete", project=prompt_set.project)


def delete_channel(channel: Channel) -> None:
    """Delete a channel that is not a default one and never had a release, and commit.

    Raises:
        ForgeError: (conflict) for a default channel or one with releases (its history stays).
    """
    if channel.is_default:
        raise ForgeError(f"{channel.name} is a default channel and cannot be removed.")
    if db.session.scalar(select(Publication.id).where(Publication.channel_id == channel.id)):
        raise ForgeError(
            f"Channel {channel.name} has releases; instances following it keep the last one. "
            "It stays so its history is kept."
        )
    _delete(channel, action="channel.delete", project=channel.project)
