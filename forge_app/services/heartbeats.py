"""Heartbeats in: the body of ``POST /api/v1/live/heartbeat`` (DESIGN §7) and the upsert of a
:class:`~forge_app.models.instances.LiveInstance`.

    >>> unsafe_character("web-1\\u202e")
    'U+202E'

The API (:mod:`forge_app.services.heartbeat_ingest`) validates a body with
:class:`HeartbeatBody`, counts it against the limits shared by
every FORGE process (:mod:`forge_app.services.heartbeat_limits`), and upserts
the instance (:func:`record_heartbeat`, which refuses a new instance beyond the per-token cap).
What the instances then serve, and whether they should, is :mod:`forge_app.services.instances`.
"""

from __future__ import annotations

import functools
import json
import unicodedata
import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator
from pydantic import ValidationError as PydanticValidationError
from sqlalchemy import Table, bindparam, func, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from anvil_client.wire import (
    HEARTBEAT_MAX_SIZE,
    RELEASES_MAX,
    SEMVER_RE,
)
from forge_app.models import utcnow
from forge_app.models.instances import LiveInstance
from forge_app.usage import UsageReport

__all__ = [
    "HeartbeatBody",
    "HeartbeatError",
    "TooManyInstances",
    "instance_values",
    "parse_heartbeat",
    "record_heartbeat",
    "record_rejected_heartbeat",
    "unsafe_character",
    "update_known_instance",
]

_UUID = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
_SHA256 = r"^[0-9a-f]{64}$"
# pydantic's (Rust) regex engine: "$" is the very end of the text, "\\Z" does not exist.
_CHANNEL = r"^[a-z0-9][a-z0-9-]{0,31}$"
#: Control (Cc), format (Cf: bidi overrides and isolates, zero-width characters), surrogate
#: and line/paragraph separator characters: none of them belongs in a host name or a version,
#: and each can make one row of the Instances page look like another.
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
LAST_ERROR_MAX = 4096


def unsafe_character(text: str) -> str | None:
    """The first control, bidi or other invisible formatting character (as ``U+XXXX``)."""
    for char in text:
        if unicodedata.category(char) in _UNSAFE_CATEGORIES:
            return f"U+{ord(char):04X}"
    return None


def _refuse_unsafe(value: str) -> str:
    found = unsafe_character(value)
    if found is not None:
        raise ValueError(f"it contains a control or bidirectional character ({found})")
    return value


def _clean_error(text: str) -> str:
    """An error message is kept, made harmless: line breaks and other controls become one
    space, invisible formatting (bidi) characters go."""
    out: list[str] = []
    for char in text:
        category = unicodedata.category(char)
        if category in ("Cc", "Zl", "Zp"):
            if out and out[-1] != " ":
                out.append(" ")
        elif category not in ("Cf", "Cs"):
            out.append(char)
    return "".join(out).strip()


class HeartbeatError(ValueError):
    """A heartbeat body that is not exactly DESIGN §7's; the message is one sentence."""


class TooManyInstances(Exception):
    """The token already reports the most distinct instances allowed."""


class ServedRelease(BaseModel):
    """One entry an instance serves, as it reports it."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    prompt_set_id: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    version: Annotated[str, StringConstraints(min_length=1, max_length=256)]
    content_sha256: Annotated[str, StringConstraints(pattern=_SHA256)]

    @field_validator("prompt_set_id")
    @classmethod
    def _safe_id(cls, value: str) -> str:
        return _refuse_unsafe(value)

    @field_validator("version")
    @classmethod
    def _semver(cls, value: str) -> str:
        _refuse_unsafe(value)
        if not SEMVER_RE.match(value):
            raise ValueError("it is not a semantic version")
        return value


class HeartbeatBody(BaseModel):
    """DESIGN §7's heartbeat: every field present (``null`` where allowed), nothing else."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    instance_id: Annotated[str, StringConstraints(pattern=_UUID)]
    hostname: Annotated[str, StringConstraints(max_length=255)]
    project_id: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    channel: Annotated[str, StringConstraints(pattern=_CHANNEL)]
    mode: Literal["accepting", "frozen"]
    sequence: Annotated[int, Field(ge=0, le=2**62)] | None
    releases: Annotated[list[ServedRelease], Field(max_length=RELEASES_MAX)]
    last_error: Annotated[str, StringConstraints(max_length=LAST_ERROR_MAX)] | None
    client_version: Annotated[str, StringConstraints(max_length=64)]
    #: Optional prompt usage since the last accepted report (issue 11, forge_app.usage).
    usage: UsageReport | None = None

    @field_validator("hostname", "client_version")
    @classmethod
    def _safe_text(cls, value: str) -> str:
        return _refuse_unsafe(value)

    @field_validator("last_error")
    @classmethod
    def _harmless_error(cls, value: str | None) -> str | None:
        return None if value is None else _clean_error(value)

    @field_validator("releases")
    @classmethod
    def _each_set_once(cls, value: list[ServedRelease]) -> list[ServedRelease]:
        seen: set[str] = set()
        for entry in value:
            if entry.prompt_set_id in seen:
                raise ValueError(f"it names prompt set {entry.prompt_set_id[:128]!r} twice")
            seen.add(entry.prompt_set_id)
        return sorted(value, key=lambda e: e.prompt_set_id)


def parse_heartbeat(data: bytes) -> HeartbeatBody:
    """Validate a heartbeat body.

    Raises:
        HeartbeatError: naming the first problem (too large, not JSON, a missing, unknown or
            mistyped field, a control or bidi character).
    """
    if len(data) > HEARTBEAT_MAX_SIZE:
        raise HeartbeatError(f"the heartbeat body is larger than {HEARTBEAT_MAX_SIZE} bytes")
    try:
        return HeartbeatBody.model_validate_json(data)
    except PydanticValidationError as e:
        raise HeartbeatError(_first_problem(e)) from None


def _first_problem(error: PydanticValidationError) -> str:
    problems = error.errors(include_url=False, include_input=False)
    if not problems:
        return "the heartbeat body is invalid"
    problem = problems[0]
    kind = problem.get("type", "")
    location = ".".join(str(part) for part in problem.get("loc", ()) if not isinstance(part, int))
    if kind == "json_invalid":
        return "the heartbeat body is not valid JSON"
    if not location:
        return "the heartbeat body must be a JSON object"
    if kind == "missing":
        return f"the heartbeat has no field {location!r}"
    if kind == "extra_forbidden":
        return f"the heartbeat has an unknown field {location!r}"
    message = str(problem.get("msg", "is invalid")).rstrip(".").removeprefix("Value error, ")
    return f"field {location!r} of the heartbeat is invalid: {message}"


# --- recording ----------------------------------------------------------------------------


@functools.cache
def _known_instance_statement() -> Any:
    table: Table = LiveInstance.__table__  # type: ignore[assignment]
    return (
        update(table)
        .where(
            table.c.project_id == bindparam("w_project_id"),
            table.c.instance_id == bindparam("w_instance_id"),
            table.c.token_id == bindparam("w_token_id"),
        )
        .values(
            hostname=bindparam("hostname"),
            channel=bindparam("channel"),
            mode=bindparam("mode"),
            sequence=bindparam("sequence"),
            releases_json=bindparam("releases_json"),
            last_error=bindparam("last_error"),
            client_version=bindparam("client_version"),
            last_seen_at=bindparam("last_seen_at"),
            token_rejected_at=None,
            archived_at=None,
        )
        .returning(table.c.id)
    )


def instance_values(body: HeartbeatBody, *, json_text: bool = False) -> dict[str, Any]:
    """The columns of an instance's row that a heartbeat sets (``releases_json`` as JSON text
    for a plain SQL statement, else as a list)."""
    releases = [entry.model_dump() for entry in body.releases]
    return {
        "hostname": body.hostname,
        "channel": body.channel,
        "mode": body.mode,
        "sequence": body.sequence,
        "releases_json": json.dumps(releases) if json_text else releases,
        "last_error": body.last_error,
        "client_version": body.client_version,
    }


def update_known_instance(
    connection: Connection,
    *,
    project_id: uuid.UUID,
    token_id: str,
    body: HeartbeatBody,
    now: datetime,
) -> int | None:
    """The common case in one statement: the instance already reported with this very token,
    so no cap applies; update its row as :func:`record_heartbeat` would. Returns the row's id,
    or None when there is no such row (then :func:`record_heartbeat` decides)."""
    found = connection.execute(
        _known_instance_statement(),
        {
            **instance_values(body),
            "w_project_id": project_id,
            "w_instance_id": body.instance_id,
            "w_token_id": token_id,
            "last_seen_at": now,
        },
    ).scalar()
    return None if found is None else int(found)


def record_heartbeat(
    session: Session,
    *,
    project_id: uuid.UUID,
    token_id: str,
    body: HeartbeatBody,
    now: datetime | None = None,
    max_instances: int | None = None,
) -> LiveInstance:
    """Create or update the instance's row from an accepted heartbeat (the caller commits).

    Raises:
        TooManyInstances: if this token would report more than ``max_instances`` distinct
            instances that are not archived.
    """
    now = now or utcnow()
    instance = _find(session, project_id, body.instance_id)
    if max_instances is not None and (instance is None or instance.token_id != token_id):
        _check_cap(session, token_id, max_instances)
    if instance is None:
        instance = LiveInstance(
            project_id=project_id, instance_id=body.instance_id, first_seen_at=now
        )
        try:
            with session.begin_nested():
                _apply(instance, token_id, body, now)
                session.add(instance)
        except IntegrityError:
            # Two first heartbeats of one instance raced; the other created the row.
            instance = _find(session, project_id, body.instance_id)
            if instance is None:  # pragma: no cover - the row that conflicted is gone again
                raise
            _apply(instance, token_id, body, now)
    else:
        _apply(instance, token_id, body, now)
    instance.token_rejected_at = None
    instance.archived_at = None
    return instance


def _check_cap(session: Session, token_id: str, max_instances: int) -> None:
    count = session.scalar(
        select(func.count(LiveInstance.id)).where(
            LiveInstance.token_id == token_id, LiveInstance.archived_at.is_(None)
        )
    )
    if (count or 0) >= max_instances:
        raise TooManyInstances(
            f"this ACCESS_TOKEN already reports {max_instances} instances, the most allowed "
            "(FORGE_MAX_INSTANCES_PER_TOKEN); an owner can forget silent ones"
        )


def record_rejected_heartbeat(
    session: Session,
    *,
    project_id: uuid.UUID,
    token_id: str,
    body: HeartbeatBody,
    now: datetime | None = None,
) -> LiveInstance | None:
    """A heartbeat signed with a *revoked* token: update the instance that used that token, so
    the FORGE shows it as revoked with the error it reports. Never creates a row."""
    now = now or utcnow()
    instance = _find(session, project_id, body.instance_id)
    if instance is None or instance.token_id != token_id:
        return None
    _apply(instance, token_id, body, now)
    instance.token_rejected_at = now
    instance.archived_at = None
    return instance


def _find(session: Session, project_id: uuid.UUID, instance_id: str) -> LiveInstance | None:
    return session.scalar(
        select(LiveInstance).where(
            LiveInstance.project_id == project_id, LiveInstance.instance_id == instance_id
        )
    )


def _apply(instance: LiveInstance, token_id: str, body: HeartbeatBody, now: datetime) -> None:
    instance.token_id = token_id
    instance.hostname = body.hostname
    instance.channel = body.channel
    instance.mode = body.mode
    instance.sequence = body.sequence
    instance.releases = [entry.model_dump() for entry in body.releases]
    instance.last_error = body.last_error
    instance.client_version = body.client_version
    instance.last_seen_at = now
