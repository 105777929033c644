"""LIVE instances: heartbeats in, "what does each instance serve, and should it?" out.

    >>> limiter = SlidingWindowLimiter(limit=1, window=60)
    >>> limiter.hit(("token", "instance")), limiter.hit(("token", "instance")) > 0
    (0.0, True)

The heartbeat API (``POST /api/v1/live/heartbeat``, DESIGN §7) validates its body with
:class:`HeartbeatBody`, limits each (token, instance) with a :class:`SlidingWindowLimiter` and
upserts a :class:`~forge_app.models.instances.LiveInstance`. The instances page and the publish
status page ask :func:`describe_instances` which release each instance should serve (rollouts
included: :func:`anvil_client.wire.in_rollout` with the instance id), whether it does, and
whether it has gone silent.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from pydantic import ValidationError as PydanticValidationError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from anvil_client.wire import in_rollout
from forge_app.models import utcnow
from forge_app.models.instances import LiveInstance

__all__ = [
    "DEFAULT_HEARTBEAT_LIMIT",
    "DEFAULT_HEARTBEAT_WINDOW",
    "DEFAULT_STALE_SECONDS",
    "MAX_HEARTBEAT_BODY",
    "HeartbeatBody",
    "HeartbeatError",
    "InstanceView",
    "ReleaseTarget",
    "SlidingWindowLimiter",
    "describe_instances",
    "parse_heartbeat",
    "publication_state",
    "record_heartbeat",
    "record_rejected_heartbeat",
    "summarise",
]

#: DESIGN §7: a heartbeat body is at most 4 KiB.
MAX_HEARTBEAT_BODY = 4096
#: Heartbeats accepted per (token, instance) and window. A client sends one at start, one per
#: apply or error change and one every 300 s, so 12 a minute leaves room for bursts.
DEFAULT_HEARTBEAT_LIMIT = 12
DEFAULT_HEARTBEAT_WINDOW = 60.0
#: An instance not heard from for this long is shown as stale (FORGE_INSTANCE_STALE_SECONDS).
#: Clients report every 300 s by default, so 15 minutes is three missed heartbeats.
DEFAULT_STALE_SECONDS = 15 * 60

_UUID = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
_SHA256 = r"^[0-9a-f]{64}$"
_PRINTABLE = r"^[^\x00-\x1f\x7f]*$"
# pydantic's (Rust) regex engine: "$" is the very end of the text, "\\Z" does not exist.
_CHANNEL = r"^[a-z0-9][a-z0-9-]{0,31}$"


class HeartbeatError(ValueError):
    """A heartbeat body that is not exactly DESIGN §7's; the message is one sentence."""


class HeartbeatBody(BaseModel):
    """DESIGN §7's heartbeat: every field present (``null`` where allowed), nothing else."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    instance_id: Annotated[str, StringConstraints(pattern=_UUID)]
    hostname: Annotated[str, StringConstraints(max_length=255, pattern=_PRINTABLE)]
    project_id: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    channel: Annotated[str, StringConstraints(pattern=_CHANNEL)]
    mode: Literal["accepting", "frozen"]
    sequence: Annotated[int, Field(ge=0, le=2**62)] | None
    version: Annotated[str, StringConstraints(min_length=1, max_length=256)] | None
    content_sha256: Annotated[str, StringConstraints(pattern=_SHA256)] | None
    last_error: Annotated[str, StringConstraints(max_length=MAX_HEARTBEAT_BODY)] | None
    client_version: Annotated[str, StringConstraints(max_length=64, pattern=_PRINTABLE)]


def parse_heartbeat(data: bytes) -> HeartbeatBody:
    """Validate a heartbeat body.

    Raises:
        HeartbeatError: naming the first problem (too large, not JSON, a missing, unknown or
            mistyped field).
    """
    if len(data) > MAX_HEARTBEAT_BODY:
        raise HeartbeatError(f"the heartbeat body is larger than {MAX_HEARTBEAT_BODY} bytes")
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
    message = str(problem.get("msg", "is invalid")).rstrip(".")
    return f"field {location!r} of the heartbeat is invalid: {message}"


class SlidingWindowLimiter:
    """At most ``limit`` events per key within any ``window`` seconds (in this process).

    Thread-safe; remembers at most ``max_keys`` keys (the least recently used go first), so an
    endless stream of made-up keys cannot exhaust memory. With several server processes each
    has its own window, so the effective limit is ``limit`` times the number of processes.
    """

    def __init__(
        self,
        limit: int = DEFAULT_HEARTBEAT_LIMIT,
        window: float = DEFAULT_HEARTBEAT_WINDOW,
        *,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if limit < 1 or window <= 0:
            raise ValueError("limit and window must be positive")
        self.limit = limit
        self.window = window
        self._max_keys = max_keys
        self._clock = clock
        self._events: OrderedDict[Any, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def hit(self, key: Any) -> float:
        """Count one event for ``key``; 0 if allowed, else the seconds until one would be."""
        now = self._clock()
        with self._lock:
            events = self._events.get(key)
            if events is None:
                events = self._events[key] = deque()
                while len(self._events) > self._max_keys:
                    self._events.popitem(last=False)
            else:
                self._events.move_to_end(key)
            while events and events[0] <= now - self.window:
                events.popleft()
            if len(events) >= self.limit:
                return max(events[0] + self.window - now, 0.001)
            events.append(now)
            return 0.0


# --- recording ----------------------------------------------------------------------------


def record_heartbeat(
    session: Session,
    *,
    project_id: uuid.UUID,
    token_id: str,
    body: HeartbeatBody,
    now: datetime | None = None,
) -> LiveInstance:
    """Create or update the instance's row from an accepted heartbeat (the caller commits)."""
    now = now or utcnow()
    instance = _find(session, project_id, body.instance_id)
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
    return instance


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
    instance.version = body.version
    instance.content_sha256 = body.content_sha256
    instance.last_error = body.last_error
    instance.client_version = body.client_version
    instance.last_seen_at = now


# --- what each instance should serve ------------------------------------------------------


@dataclass(frozen=True)
class ReleaseTarget:
    """What a channel's pointer at ``sequence`` tells instances to serve.

    Without a rollout every instance serves ``content_sha256``; with one, an instance in the
    rollout bucket (DESIGN §4) serves it and the others ``previous_content_sha256``.
    ``previous_*`` are None when unknown (the signed history could not be read).
    """

    channel: str
    sequence: int
    version: str
    content_sha256: str
    rollout_percent: int | None = None
    previous_version: str | None = None
    previous_content_sha256: str | None = None

    def expected_for(self, instance_id: str) -> tuple[str | None, str | None]:
        """``(version, content_sha256)`` the instance should serve (None, None if unknown)."""
        percent = self.rollout_percent
        if percent is None or in_rollout(instance_id, self.content_sha256, percent):
            return self.version, self.content_sha256
        return self.previous_version, self.previous_content_sha256


State = Literal["applied", "pending", "error", "superseded"]


@dataclass(frozen=True)
class InstanceView:
    """One instance as the FORGE shows it, judged against its channel's release."""

    instance: LiveInstance
    stale: bool
    revoked: bool
    expected_version: str | None
    expected_content: str | None
    drift: bool
    behind: bool

    @property
    def problems(self) -> list[str]:
        found = []
        if self.revoked:
            found.append("revoked")
        if self.stale:
            found.append("stale")
        if self.drift:
            found.append("drift")
        if self.instance.last_error:
            found.append("error")
        return found

    def to_json(self) -> dict[str, Any]:
        instance = self.instance
        return {
            "instance_id": instance.instance_id,
            "hostname": instance.hostname,
            "channel": instance.channel,
            "mode": instance.mode,
            "sequence": instance.sequence,
            "version": instance.version,
            "content_sha256": instance.content_sha256,
            "last_error": instance.last_error,
            "client_version": instance.client_version,
            "first_seen_at": _iso(instance.first_seen_at),
            "last_seen_at": _iso(instance.last_seen_at),
            "token_id": instance.token_id,
            "stale": self.stale,
            "revoked": self.revoked,
            "drift": self.drift,
            "behind": self.behind,
            "expected_version": self.expected_version,
        }


def describe_instances(
    instances: Iterable[LiveInstance],
    *,
    targets: Mapping[str, ReleaseTarget],
    revoked_tokens: set[str],
    stale_after: timedelta,
    now: datetime | None = None,
) -> list[InstanceView]:
    """Judge each instance against its channel's current release (``targets`` by channel)."""
    now = now or utcnow()
    views = []
    for instance in instances:
        target = targets.get(instance.channel)
        version = content = None
        if target is not None:
            version, content = target.expected_for(instance.instance_id)
        drift = content is not None and instance.content_sha256 != content
        behind = (
            target is not None
            and not drift
            and (instance.sequence is None or instance.sequence < target.sequence)
        )
        views.append(
            InstanceView(
                instance=instance,
                stale=now - instance.last_seen_at > stale_after,
                revoked=instance.token_id in revoked_tokens
                or instance.token_rejected_at is not None,
                expected_version=version,
                expected_content=content,
                drift=drift,
                behind=behind,
            )
        )
    return views


def publication_state(view: InstanceView, target: ReleaseTarget) -> tuple[State, str | None]:
    """Whether ``view``'s instance applied the publication ``target``, and a short note.

    Applied: it accepted a pointer at least as new and serves the content meant for it (its
    rollout bucket). Superseded: it moved on to a newer publication with other content.
    Error: it accepted this very pointer but serves other content than its bucket's, or it has
    not applied it and reports an error (its message is the note). Pending otherwise.
    """
    instance = view.instance
    version, content = target.expected_for(instance.instance_id)
    sequence = instance.sequence if instance.sequence is not None else -1
    if sequence >= target.sequence:
        if content is None or instance.content_sha256 == content:
            return "applied", None
        if sequence > target.sequence:
            return "superseded", f"now on sequence {sequence} ({instance.version or 'nothing'})"
        return "error", (
            f"serves {instance.version or 'other content'} where this publication gives it "
            f"{version or 'other content'}"
        )
    if instance.last_error:
        return "error", instance.last_error
    if view.revoked:
        return "error", "its ACCESS_TOKEN was revoked"
    if view.stale:
        return "pending", "silent: no heartbeat for a while"
    note = f"waiting for version {version}" if version else None
    return "pending", note


def summarise(states: Sequence[str]) -> dict[str, int]:
    counts = {"applied": 0, "pending": 0, "error": 0, "superseded": 0}
    for state in states:
        counts[state] = counts.get(state, 0) + 1
    counts["total"] = len(states)
    return counts


def _iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.isoformat().replace("+00:00", "Z")
