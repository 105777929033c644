"""Prompt usage from heartbeats (issue 11): validate, record once, add up in time buckets
(reading them back is :mod:`forge_app.usage_reads`).

    >>> bucket_start(datetime(2026, 11, 30, 20, 7, 31, tzinfo=UTC), 300).isoformat()
    '2026-11-30T20:05:00+00:00'

A heartbeat may carry ``usage`` (``/work/notes/USAGE_CONTRACT.md``): the counts an instance
made since its last accepted report, with a per-instance, strictly increasing ``report_id``.
:func:`record_usage` records a report at most once per instance (a conditional update of
``live_instances.last_usage_report_id``, in the heartbeat's transaction), then adds the counts
to ``prompt_usage`` rows — one row per (project, channel, prompt, content, bucket), each added
to by one atomic ``INSERT … ON CONFLICT DO UPDATE`` (SQLite and PostgreSQL), rows in a fixed
order so that concurrent heartbeats cannot deadlock. ``caller_variables`` keeps the union of
the variable-name sets each instance passes to each prompt (at most 8 sets).

Settings: ``FORGE_USAGE_BUCKET_SECONDS`` (default 300), ``FORGE_USAGE_RETENTION_DAYS``
(default 30; older buckets and caller records are pruned during ingestion, at most every
10 minutes per process, or by :func:`prune_usage`).
"""

from __future__ import annotations

import functools
import json
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any, Protocol

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)
from sqlalchemy import Table, TextClause, Uuid, bindparam, delete, or_, text, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from forge_app.extensions import rows_changed
from forge_app.models import Project, UTCDateTime
from forge_app.models.instances import LiveInstance
from forge_app.models.usage import BUCKET_KEY, OTHER_PROMPT_ID, CallerVariables, PromptUsage

if TYPE_CHECKING:
    from forge_app.usage_reads import UsageBucket

__all__ = [
    "DEFAULT_BUCKET_SECONDS",
    "DEFAULT_RETENTION_DAYS",
    "UsageCounts",
    "UsageReport",
    "bucket_start",
    "project_uuid",
    "prune_usage",
    "record_usage",
    "stored_json",
]

DEFAULT_BUCKET_SECONDS = 300
DEFAULT_RETENTION_DAYS = 30
#: Variable-name sets kept per (instance, prompt), and names per set (the contract's caps).
VARIABLE_SETS_MAX = 8
VARIABLE_NAMES_MAX = 32
PRUNE_EVERY = 600.0

_SHA256 = r"^[0-9a-f]{64}$"
_COUNT_MAX = 2**53
Count = Annotated[int, Field(ge=0, le=_COUNT_MAX)]
Name = Annotated[str, StringConstraints(min_length=1, max_length=128)]
VariableName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")]


def _safe(value: str) -> str:
    from forge_app.services.heartbeats import unsafe_character

    found = unsafe_character(value)
    if found is not None:
        raise ValueError(f"it contains a control or bidirectional character ({found})")
    return value


class OtherCounts(BaseModel):
    """Counts without a prompt (``other``: the merged tail of a report). ``errors`` is a
    total here, or ``{class: n}`` like a prompt's."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    renders: Count = 0
    errors: Annotated[dict[Name, Count], Field(max_length=32)] | Count = 0
    calls: Count = 0
    call_errors: Count = 0
    input_tokens: Count = 0
    output_tokens: Count = 0
    latency_ms: Annotated[float, Field(ge=0, le=1e15, allow_inf_nan=False)] = 0.0

    @field_validator("errors")
    @classmethod
    def _safe_names(cls, value: dict[str, int] | int) -> dict[str, int] | int:
        if isinstance(value, dict):
            for name in value:
                _safe(name)
        return value

    def error_total(self) -> int:
        return sum(self.errors.values()) if isinstance(self.errors, dict) else self.errors

    def error_classes(self) -> dict[str, int]:
        if isinstance(self.errors, dict):
            return {name: n for name, n in self.errors.items() if n}
        return {}


class PromptCounts(OtherCounts):
    """One prompt's counts in a report."""

    prompt_id: Name
    content_sha256: Annotated[str, StringConstraints(pattern=_SHA256)] | None = None
    variables: Annotated[
        list[Annotated[list[VariableName], Field(max_length=VARIABLE_NAMES_MAX)]],
        Field(max_length=VARIABLE_SETS_MAX),
    ] = Field(default_factory=list)

    @field_validator("prompt_id")
    @classmethod
    def _safe_id(cls, value: str) -> str:
        return _safe(value)


class UsageReport(BaseModel):
    """A heartbeat's ``usage`` key."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, populate_by_name=True)

    report_id: Annotated[int, Field(ge=0, le=2**62)]
    from_: Annotated[AwareDatetime, Field(alias="from")]
    to: AwareDatetime
    prompts: Annotated[list[PromptCounts], Field(max_length=1000)]
    other: OtherCounts | None = None

    @model_validator(mode="after")
    def _window(self) -> UsageReport:
        if self.to < self.from_:
            raise ValueError("'to' is before 'from'")
        return self


def _table(model: Any) -> Table:
    table: Table = model.__table__
    return table


def project_uuid(project: Project | uuid.UUID) -> uuid.UUID:
    """The id of ``project`` (given as a row or an id)."""
    return project if isinstance(project, uuid.UUID) else project.id


def bucket_start(moment: datetime, seconds: int) -> datetime:
    """The start of the bucket of ``seconds`` that holds ``moment`` (UTC, aligned to the epoch)."""
    stamp = int(moment.timestamp())
    return datetime.fromtimestamp(stamp - stamp % seconds, UTC)


_COUNTED = (
    "renders",
    "render_errors",
    "calls",
    "call_errors",
    "input_tokens",
    "output_tokens",
    "latency_ms",
)


@dataclass
class UsageCounts:
    """Summed usage: renders and calls, their errors (``errors``: a count per error class),
    tokens and latency."""

    renders: int = 0
    render_errors: int = 0
    calls: int = 0
    call_errors: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    latency_ms: float = 0.0
    errors: dict[str, int] = field(default_factory=dict)

    def add(self, counts: OtherCounts) -> None:
        """Add one report's counts (a prompt's, or its ``other`` tail)."""
        self.renders += counts.renders
        self.render_errors += counts.error_total()
        self.calls += counts.calls
        self.call_errors += counts.call_errors
        self.input_tokens += counts.input_tokens
        self.output_tokens += counts.output_tokens
        self.latency_ms += counts.latency_ms
        self._add_errors(counts.error_classes())

    def add_stored(self, bucket: UsageBucket) -> None:
        """Add the counts of a stored bucket."""
        for name in _COUNTED:
            setattr(self, name, getattr(self, name) + getattr(bucket, name))
        self._add_errors(bucket.errors)

    def _add_errors(self, errors: Mapping[str, int]) -> None:
        for name, n in errors.items():
            self.errors[name] = self.errors.get(name, 0) + n

    def empty(self) -> bool:
        return not any(getattr(self, name) for name in _COUNTED)


def _insert(session: Session | Connection) -> Any:
    bind = session if isinstance(session, Connection) else session.get_bind()
    return postgresql_insert if bind.dialect.name == "postgresql" else sqlite_insert


class InstanceRef(Protocol):
    """What :func:`record_usage` needs of an instance: a LiveInstance, or its row id and id."""

    @property
    def id(self) -> int: ...

    @property
    def instance_id(self) -> str: ...


def record_usage(
    session: Session | Connection,
    project: Project | uuid.UUID,
    instance: LiveInstance | InstanceRef,
    channel: str,
    usage: UsageReport | Mapping[str, Any],
    now: datetime,
    *,
    bucket_seconds: int = DEFAULT_BUCKET_SECONDS,
    retention_days: int = DEFAULT_RETENTION_DAYS,
) -> bool:
    """Record one usage report of ``instance`` (flushed, in the caller's transaction).

    Returns False, changing nothing, when the instance already recorded this report (or a
    later one). The counts go to the bucket of the report's ``to`` time, or of ``now`` when
    the client's clock is ahead or the window ended before the retention period.
    """
    project_id = project_uuid(project)
    report = usage if isinstance(usage, UsageReport) else UsageReport.model_validate(usage)
    if isinstance(session, Session) and instance.id is None:
        session.flush()
    table = _table(LiveInstance)
    claimed = session.execute(
        update(table)
        .where(
            table.c.id == instance.id,
            or_(
                table.c.last_usage_report_id.is_(None),
                table.c.last_usage_report_id < report.report_id,
            ),
        )
        .values(last_usage_report_id=report.report_id)
    )
    if not rows_changed(claimed):
        return False
    moment = report.to
    if moment > now or moment < now - timedelta(days=retention_days):
        moment = now
    start = bucket_start(moment, bucket_seconds)
    rows: dict[tuple[str, str], UsageCounts] = {}
    variables: dict[str, set[tuple[str, ...]]] = {}
    for prompt in report.prompts:
        key = (prompt.prompt_id, prompt.content_sha256 or "")
        rows.setdefault(key, UsageCounts()).add(prompt)
        if prompt.variables:
            variables.setdefault(prompt.prompt_id, set()).update(
                tuple(sorted(set(names))) for names in prompt.variables
            )
    if report.other is not None:
        rows.setdefault((OTHER_PROMPT_ID, ""), UsageCounts()).add(report.other)
    _add_counts(session, project_id, channel, start, rows)
    _add_variables(session, project_id, instance.instance_id, channel, variables, now)
    _maybe_prune(session, now, retention_days)
    return True


#: Short bind names (psycopg caches the parsing of statements under 4 KiB only).
_SHORT = dict(zip(_COUNTED, "abcdefg", strict=True))


@functools.lru_cache(maxsize=64)
def _counts_sql(rows: int) -> TextClause:
    """The usage upsert of ``rows`` rows, the same SQL on PostgreSQL and SQLite (>= 3.35):
    plain text, because a multi-row INSERT built with SQLAlchemy is compiled anew each time."""
    values = ",".join(
        f"(:pj,:ch,:i{i},:h{i},:bk," + ",".join(f":{_SHORT[n]}{i}" for n in _COUNTED) + ",'{}')"
        for i in range(rows)
    )
    columns = ", ".join([*BUCKET_KEY, *_COUNTED, "errors_json"])
    updates = ", ".join(f"{name} = prompt_usage.{name} + excluded.{name}" for name in _COUNTED)
    return text(
        f"INSERT INTO prompt_usage ({columns}) VALUES {values} "  # noqa: S608 - names are ours
        f"ON CONFLICT ({', '.join(BUCKET_KEY)}) "
        f"DO UPDATE SET {updates} "
        "RETURNING id, prompt_id, content_sha256, errors_json"
    ).bindparams(bindparam("pj", type_=Uuid()), bindparam("bk", type_=UTCDateTime()))


def _add_counts(
    session: Session | Connection,
    project_id: uuid.UUID,
    channel: str,
    start: datetime,
    rows: Mapping[tuple[str, str], UsageCounts],
) -> None:
    ordered = [(key, row) for key, row in sorted(rows.items()) if not row.empty()]
    if not ordered:
        return
    params: dict[str, Any] = {"pj": project_id, "ch": channel, "bk": start}
    for i, ((prompt_id, sha), row) in enumerate(ordered):
        params[f"i{i}"] = prompt_id
        params[f"h{i}"] = sha
        for name in _COUNTED:
            value = getattr(row, name)
            params[f"{_SHORT[name]}{i}"] = float(value) if name == "latency_ms" else value
    table = _table(PromptUsage)
    found = session.execute(_counts_sql(len(ordered)), params).all()
    # Error classes: the upsert above locked each row until this transaction ends (PostgreSQL
    # row locks; SQLite's one writer), so merging the JSON here cannot lose a concurrent count.
    # A new row starts with "{}" and gets its classes here too.
    for row_id, prompt_id, sha, stored in found:
        errors = rows[(prompt_id, sha)].errors
        if not errors:
            continue
        merged = stored_json(stored, {})
        if not isinstance(merged, dict):
            merged = {}
        for name, n in errors.items():
            merged[name] = int(merged.get(name, 0)) + n
        session.execute(
            update(table)
            .where(table.c.id == row_id)
            .values(errors_json=json.dumps(merged, sort_keys=True))
        )


def stored_json(text: str | None, default: Any) -> Any:
    """A JSON column's value, or ``default`` if it is empty or not JSON."""
    try:
        return json.loads(text or "")
    except ValueError:
        return default


def _add_variables(
    session: Session | Connection,
    project_id: uuid.UUID,
    instance_id: str,
    channel: str,
    variables: Mapping[str, set[tuple[str, ...]]],
    now: datetime,
) -> None:
    table = _table(CallerVariables)
    for prompt_id in sorted(variables):
        sets = variables[prompt_id]
        if _recently_written((project_id, instance_id, prompt_id), frozenset(sets)):
            continue
        fresh = sorted(sets)[:VARIABLE_SETS_MAX]
        statement = _insert(session)(CallerVariables).values(
            project_id=project_id,
            instance_id=instance_id,
            channel=channel,
            prompt_id=prompt_id,
            variables_json=json.dumps([list(s) for s in fresh]),
            last_seen_at=now,
        )
        stored = session.execute(
            statement.on_conflict_do_update(
                index_elements=[table.c.project_id, table.c.instance_id, table.c.prompt_id],
                set_={"channel": channel, "last_seen_at": now},
            ).returning(table.c.id, table.c.variables_json)
        ).one()
        known = {tuple(s) for s in stored_json(stored[1], []) if isinstance(s, list)}
        if sets <= known:
            continue
        # The report's sets first, then the ones seen before, up to the cap.
        union = sorted(sets) + sorted(known - sets)
        keep = sorted(union[:VARIABLE_SETS_MAX])
        session.execute(
            update(table)
            .where(table.c.id == stored[0])
            .values(variables_json=json.dumps([list(s) for s in keep]))
        )


#: (project, instance, prompt) -> (the sets this process last stored, when): the same sets
#: again within VARIABLES_REWRITE seconds are not written again (``last_seen_at`` may lag by
#: that much; the retention is days).
_written: OrderedDict[tuple[Any, str, str], tuple[frozenset[tuple[str, ...]], float]]
_written = OrderedDict()
_written_lock = threading.Lock()
VARIABLES_REWRITE = 600.0
_WRITTEN_MAX = 50_000


def _recently_written(key: tuple[Any, str, str], sets: frozenset[tuple[str, ...]]) -> bool:
    moment = time.monotonic()
    with _written_lock:
        known = _written.get(key)
        if known is not None and known[0] == sets and moment - known[1] < VARIABLES_REWRITE:
            return True
        _written[key] = (sets, moment)
        _written.move_to_end(key)
        while len(_written) > _WRITTEN_MAX:
            _written.popitem(last=False)
        return False


_prune_lock = threading.Lock()
_last_prune = [0.0]


def _maybe_prune(session: Session | Connection, now: datetime, retention_days: int) -> None:
    moment = time.monotonic()
    with _prune_lock:
        if _last_prune[0] and moment - _last_prune[0] < PRUNE_EVERY:
            return
        _last_prune[0] = moment
    prune_usage(session, now=now, retention_days=retention_days)


def prune_usage(
    session: Session | Connection, *, now: datetime, retention_days: int = DEFAULT_RETENTION_DAYS
) -> int:
    """Delete usage buckets and caller records older than the retention (the caller commits).
    Returns how many bucket rows went."""
    cutoff = now - timedelta(days=retention_days)
    result = session.execute(
        delete(PromptUsage)
        .where(PromptUsage.bucket_start < cutoff)
        .execution_options(synchronize_session=False)
    )
    session.execute(
        delete(CallerVariables)
        .where(CallerVariables.last_seen_at < cutoff)
        .execution_options(synchronize_session=False)
    )
    return rows_changed(result)
