"""Usage counting (issue 11): renders, errors and reported outcomes per prompt and served entry.

    >>> from anvil_client._usage import Usage
    >>> Usage().counter("welcome.message", None).renders
    0

``prompt()`` holds one :class:`Counter` per ``(prompt_id, content_sha256)`` next to the
compiled prompt and adds to it without a lock: ``+=`` on an attribute is not atomic across
threads, so two threads rendering the same prompt at the same instant may undercount by one
(a report, never an update; per-thread counters would cost more on every call). Counters only
grow; :meth:`Usage.take_report` turns what grew since the last report into the deltas of the
heartbeat's ``usage`` key (/work/notes/USAGE_CONTRACT.md, README "Usage reports"): one report
is resent unchanged (same ``report_id``) until a heartbeat carrying it is accepted, counts made
meanwhile go into the next one, so nothing is lost and nothing is counted twice.

Variable NAMES (never values) are sampled: the background thread arms every counter once a
second (:meth:`Usage.arm_sampling`) and the next render notes its names, so a prompt rendered
less than once a second has every call's names, a busy one one call's per second; every failed
render notes them too. A set look-up on every call would cost more than the render budget
allows (README "Usage reports" has the numbers).
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any

#: Distinct sorted name sets kept per prompt and report, and names per set (the contract's cap).
VARIABLE_SETS_MAX = 8
VARIABLE_NAMES_MAX = 32
#: A longer name is not an identifier an application passes on purpose: it is left out.
VARIABLE_NAME_MAX_LENGTH = 64
#: Distinct (prompt id, entry) counters per client; beyond it everything lands in ``other``.
COUNTERS_MAX = 2000
#: The usage part of one heartbeat body at most (the whole body stays within 16 KiB).
USAGE_MAX_SIZE = 8 * 1024
#: A prompt id longer than this is shortened (ids are dotted names, far shorter).
PROMPT_ID_MAX_LENGTH = 200

_OTHER_ID = "\x00other"  # the key of the shared overflow counter: never a real prompt id


class Counter:
    """What happened to one prompt id served from one entry (``content_sha256``, ``None``
    for a fallback template or a prompt that is not served). Every number only grows."""

    __slots__ = (
        "call_errors",
        "calls",
        "content_sha256",
        "errors",
        "input_tokens",
        "latency_ms",
        "names",
        "output_tokens",
        "passed",
        "prompt_id",
        "renders",
        "sample",
    )

    def __init__(self, prompt_id: str, content_sha256: str | None) -> None:
        self.prompt_id = prompt_id
        self.content_sha256 = content_sha256
        self.renders = 0
        self.errors: dict[str, int] = {}
        self.calls = 0
        self.call_errors = 0
        self.input_tokens = 0
        self.output_tokens = 0
        self.latency_ms = 0.0
        self.names: set[tuple[str, ...]] = set()  # since the last report
        self.passed: set[tuple[str, ...]] = set()  # the same, as passed (unsorted)
        self.sample = True  # the next render notes its variable names

    def note_names(self, variables: Iterable[str]) -> None:
        """Remember the set of variable names passed (at most 8 sets x 32 names per report)."""
        names = self.names
        if len(names) >= VARIABLE_SETS_MAX:
            return
        passed = tuple(variables)
        if passed in self.passed:
            return  # the usual case: the same call site again, in the same order
        kept = sorted(n for n in passed if len(n) <= VARIABLE_NAME_MAX_LENGTH)
        names.add(tuple(kept[:VARIABLE_NAMES_MAX]))
        if len(self.passed) < 4 * VARIABLE_SETS_MAX:
            self.passed.add(passed)

    def failed(self, error: BaseException, variables: Iterable[str] = ()) -> None:
        """Count a failed render by its exception class name (and note the names passed)."""
        name = type(error).__name__
        self.errors[name] = self.errors.get(name, 0) + 1
        self.note_names(variables)

    def outcome(
        self,
        *,
        input_tokens: int | None,
        output_tokens: int | None,
        latency_ms: float | None,
        error: object,
    ) -> None:
        self.calls += 1
        if error is not None and error is not False:
            self.call_errors += 1
        if input_tokens:
            self.input_tokens += input_tokens
        if output_tokens:
            self.output_tokens += output_tokens
        if latency_ms:
            self.latency_ms += latency_ms


_NUMBERS = ("renders", "calls", "call_errors", "input_tokens", "output_tokens", "latency_ms")


class _Delta:
    """What counters gained over some time (a plain class: a dataclass costs import time)."""

    __slots__ = (
        "call_errors",
        "calls",
        "errors",
        "input_tokens",
        "latency_ms",
        "names",
        "output_tokens",
        "renders",
    )

    def __init__(
        self,
        *,
        errors: dict[str, int] | None = None,
        names: set[tuple[str, ...]] | None = None,
    ) -> None:
        self.renders = 0
        self.errors: dict[str, int] = {} if errors is None else errors
        self.calls = 0
        self.call_errors = 0
        self.input_tokens = 0
        self.output_tokens = 0
        self.latency_ms = 0.0
        self.names: set[tuple[str, ...]] = set() if names is None else names

    @property
    def weight(self) -> int:
        return self.renders + self.calls

    def is_empty(self) -> bool:
        return not (
            self.renders
            or self.errors
            or self.calls
            or self.call_errors
            or self.input_tokens
            or self.output_tokens
            or self.latency_ms
            or self.names
        )

    def add(self, other: _Delta) -> None:
        for name in _NUMBERS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for error, count in other.errors.items():
            self.errors[error] = self.errors.get(error, 0) + count
        for names in other.names:
            if len(self.names) < VARIABLE_SETS_MAX:
                self.names.add(names)


class Report:
    """One ``usage`` value: sent as is until a heartbeat carrying it is accepted."""

    __slots__ = ("body", "report_id")

    def __init__(self, report_id: int, body: dict[str, Any]) -> None:
        self.report_id = report_id
        self.body = body


class Usage:
    """Every counter of one client, and the report being delivered."""

    def __init__(self, *, first_report_id: int = 1, started: str | None = None) -> None:
        self._lock = threading.Lock()  # creation and reports only; never taken by prompt()
        self._counters: dict[tuple[str, str | None], Counter] = {}
        self._seen: dict[tuple[str, str | None], tuple[Any, ...]] = {}
        self._unsent: dict[tuple[str, str | None], _Delta] = {}
        self._pending: Report | None = None
        self._next_id = first_report_id
        self._window_start: str | None = started  # the "from" of the first report

    def counter(self, prompt_id: str, content_sha256: str | None) -> Counter:
        """The counter of ``(prompt_id, content_sha256)``, created on first use (past
        :data:`COUNTERS_MAX` distinct ones, the shared ``other`` counter)."""
        key = (prompt_id, content_sha256)
        counter = self._counters.get(key)
        if counter is None:
            with self._lock:
                counter = self._counters.get(key)
                if counter is None:
                    if len(self._counters) >= COUNTERS_MAX:
                        key = (_OTHER_ID, None)
                        counter = self._counters.get(key)
                    if counter is None:
                        counter = Counter(key[0][:PROMPT_ID_MAX_LENGTH], key[1])
                        self._counters[key] = counter
        return counter

    def arm_sampling(self) -> None:
        """Let every counter note the variable names of its next render."""
        for counter in list(self._counters.values()):
            counter.sample = True

    @property
    def pending(self) -> Report | None:
        return self._pending

    def take_report(self, now: str) -> Report | None:
        """The report to send with the next heartbeat: the one not yet accepted, else a new
        one with everything counted since (``None`` when there is nothing to report)."""
        with self._lock:
            if self._pending is not None:
                return self._pending
            self._collect()
            entries = {k: d for k, d in self._unsent.items() if not d.is_empty()}
            if not entries:
                self._unsent.clear()
                self._window_start = now
                return None
            # Ids grow with the wall clock (ms) too: a process that takes over the heartbeats
            # of this instance continues above what the previous one sent.
            self._next_id = max(self._next_id, time.time_ns() // 1_000_000)
            body = _report_body(self._next_id, self._window_start or now, now, entries)
            self._pending = Report(self._next_id, body)
            self._next_id += 1
            self._unsent.clear()
            self._window_start = now
            return self._pending

    def accepted(self, report: Report) -> None:
        """A heartbeat carrying ``report`` got 204: it is delivered."""
        with self._lock:
            if self._pending is report:
                self._pending = None

    def hand_over(self) -> bytes | None:
        """A process that does not send heartbeats: everything counted since the last call,
        as bytes for the disk cache's usage spool (``None`` when nothing was counted)."""
        with self._lock:
            self._collect()
            entries = [
                _spool_entry(key, delta)
                for key, delta in self._unsent.items()
                if not delta.is_empty()
            ]
            self._unsent.clear()
        if not entries:
            return None
        return json.dumps(entries, separators=(",", ":")).encode("utf-8")

    def take_over(self, data: bytes) -> None:
        """Add what another process of this instance handed over (garbage is ignored)."""
        try:
            entries = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            return
        if not isinstance(entries, list):
            return
        with self._lock:
            for item in entries:
                parsed = _parse_spool_entry(item)
                if parsed is None:
                    continue
                key, delta = parsed
                if key not in self._unsent and len(self._unsent) >= COUNTERS_MAX:
                    key = (_OTHER_ID, None)
                unsent = self._unsent.get(key)
                if unsent is None:
                    self._unsent[key] = delta
                else:
                    unsent.add(delta)

    @property
    def next_report_id(self) -> int:
        return self._next_id

    def _collect(self) -> None:
        """Move what every counter gained since the last look into ``_unsent``."""
        for key, counter in list(self._counters.items()):
            errors = dict(counter.errors)
            numbers = tuple(getattr(counter, name) for name in _NUMBERS)
            names, counter.names = counter.names, set()
            counter.passed = set()
            before = self._seen.get(key)
            self._seen[key] = (numbers, errors)
            if before is None:
                before = ((0,) * len(_NUMBERS), {})
            gained = _Delta(
                errors={
                    e: n - before[1].get(e, 0) for e, n in errors.items() if n > before[1].get(e, 0)
                },
                names=names,
            )
            for name, now_value, then_value in zip(_NUMBERS, numbers, before[0], strict=True):
                setattr(gained, name, now_value - then_value)
            if gained.is_empty():
                continue
            unsent = self._unsent.get(key)
            if unsent is None:
                self._unsent[key] = gained
            else:
                unsent.add(gained)


def _report_body(
    report_id: int, start: str, end: str, entries: Mapping[tuple[str, str | None], _Delta]
) -> dict[str, Any]:
    """The contract's ``usage`` object, the heaviest prompts first, the tail in ``other``
    so that it stays within :data:`USAGE_MAX_SIZE` bytes of compact JSON."""
    other = _Delta()
    ranked = []
    for (prompt_id, content), delta in entries.items():
        if prompt_id == _OTHER_ID:
            other.add(delta)
        else:
            ranked.append((prompt_id, content, delta))
    ranked.sort(key=lambda item: (-item[2].weight, item[0], item[1] or ""))
    prompts = [_prompt_entry(p, c, d) for p, c, d in ranked]
    body: dict[str, Any] = {
        "report_id": report_id,
        "from": start,
        "to": end,
        "prompts": prompts,
        "other": _other_entry(other),
    }
    if _size(body) > USAGE_MAX_SIZE:
        # Keep the heaviest entries whose compact JSON fits; the rest go into ``other`` (its
        # numbers may grow by a few digits: a margin is kept for them).
        budget = USAGE_MAX_SIZE - _size({**body, "prompts": []}) - 160
        kept = 0
        for entry in prompts:
            budget -= _size(entry) + 1
            if budget < 0:
                break
            kept += 1
        for _, _, delta in ranked[kept:]:
            other.add(delta)
        body["prompts"] = prompts[:kept]
        body["other"] = _other_entry(other)
    return body


def _prompt_entry(prompt_id: str, content: str | None, delta: _Delta) -> dict[str, Any]:
    return {
        "prompt_id": prompt_id,
        "content_sha256": content,
        "renders": delta.renders,
        "errors": dict(sorted(delta.errors.items())),
        "calls": delta.calls,
        "call_errors": delta.call_errors,
        "input_tokens": delta.input_tokens,
        "output_tokens": delta.output_tokens,
        "latency_ms": round(delta.latency_ms, 3),
        "variables": [list(names) for names in sorted(delta.names)],
    }


def _other_entry(delta: _Delta) -> dict[str, Any]:
    return {
        "renders": delta.renders,
        "errors": sum(delta.errors.values()),
        "calls": delta.calls,
        "call_errors": delta.call_errors,
        "input_tokens": delta.input_tokens,
        "output_tokens": delta.output_tokens,
        "latency_ms": round(delta.latency_ms, 3),
    }


def _spool_entry(key: tuple[str, str | None], delta: _Delta) -> dict[str, Any]:
    entry: dict[str, Any] = {name: getattr(delta, name) for name in _NUMBERS}
    entry.update(
        prompt_id=key[0],
        content_sha256=key[1],
        errors=delta.errors,
        variables=[list(n) for n in delta.names],
    )
    return entry


def _parse_spool_entry(item: object) -> tuple[tuple[str, str | None], _Delta] | None:
    if not isinstance(item, dict):
        return None
    prompt_id, content = item.get("prompt_id"), item.get("content_sha256")
    if not isinstance(prompt_id, str) or not isinstance(content, str | None):
        return None
    delta = _Delta()
    for name in _NUMBERS:
        value = item.get(name, 0)
        if not _is_count(value):
            return None
        setattr(delta, name, value if name == "latency_ms" else int(value))
    errors = item.get("errors", {})
    if not isinstance(errors, dict):
        return None
    for error, count in list(errors.items())[:64]:
        if isinstance(count, int) and not isinstance(count, bool) and count > 0:
            delta.errors[str(error)[:100]] = count
    _add_variable_sets(delta, item.get("variables", []))
    return (prompt_id[:PROMPT_ID_MAX_LENGTH], content), delta


def _is_count(value: object) -> bool:
    """A finite number >= 0 that is not a bool (a spooled token count or latency)."""
    return (
        not isinstance(value, bool)
        and isinstance(value, int | float)
        and value >= 0
        and math.isfinite(value)
    )


def _add_variable_sets(delta: _Delta, variables: object) -> None:
    if isinstance(variables, list):
        for names in variables[:VARIABLE_SETS_MAX]:
            if isinstance(names, list) and all(isinstance(n, str) for n in names):
                delta.names.add(tuple(sorted(names)[:VARIABLE_NAMES_MAX]))


def _size(body: Mapping[str, Any]) -> int:
    return len(json.dumps(body, separators=(",", ":")).encode("utf-8"))
