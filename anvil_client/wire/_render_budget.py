"""The budgets of one render: steps, CPU time, call depth and the size of every string built.

Jinja2's sandbox bounds neither CPU nor memory. These functions are what the sandbox
(``_render_sandbox``) calls before an operation that could allocate or run without bound, and
what every loop step and call draws on; ``_render`` sets the limits of one render
(``LIMITS``) around it. Every refusal is a ``SecurityError`` with one sentence.
"""

from __future__ import annotations

import re
import time
from collections.abc import Collection, Iterable, Iterator, Mapping
from contextvars import ContextVar
from typing import Any

from jinja2 import nodes
from jinja2.exceptions import SecurityError

DEFAULT_MAX_OUTPUT = 1024 * 1024
#: Longest template accepted anywhere (client, publisher, FORGE), in characters.
MAX_TEMPLATE_CHARS = 256 * 1024
#: Most template text one prompt set (or one prompt's messages) may hold, in characters.
MAX_PROMPT_SET_CHARS = 8 * 1024 * 1024
#: Deepest nesting of a template's parse tree (brackets, operators, filters, blocks).
MAX_NESTING = 32
#: Deepest nesting of ``{% %}`` blocks (for, if, macro, call, filter, with, set…).
MAX_BLOCK_NESTING = 16
#: Loop steps and calls one render may make, across all loops, macros and recursion.
DEFAULT_MAX_STEPS = 250_000
#: Deepest nesting of calls in one render (macros calling macros, recursive loops…).
MAX_CALL_DEPTH = 50
#: CPU seconds one render may use.
DEFAULT_MAX_SECONDS = 1.0

_MAX_INT_BITS = 64 * 1024

# --- the per-render limits ---------------------------------------------------------------------


class Limits:
    """What one render may still spend: steps, CPU time, and the size of any string."""

    __slots__ = ("cap", "cpu_limit", "cpu_start", "depth", "steps", "wall_check")

    def __init__(self, cap: int, steps: int = DEFAULT_MAX_STEPS) -> None:
        self.cap = cap
        self.steps = steps
        self.depth = 0
        self.cpu_limit = DEFAULT_MAX_SECONDS
        # The CPU clock is slow to read, so it is read only at the first step and whenever the
        # (cheap) wall clock says the time could be up: CPU time never runs faster than it.
        self.cpu_start: float | None = None
        self.wall_check = 0.0


LIMITS: ContextVar[Limits | None] = ContextVar("anvil_render_limits", default=None)


def current_cap() -> int:
    limits = LIMITS.get()
    return DEFAULT_MAX_OUTPUT if limits is None else limits.cap


def charge(limits: Limits) -> None:
    """Spend one step of the render's budget (a loop step or a call)."""
    limits.steps -= 1
    if limits.steps < 0 or time.monotonic() > limits.wall_check:
        _check_limits(limits)


def _check_limits(limits: Limits) -> None:
    if limits.steps < 0:
        raise SecurityError(
            f"the template runs too many loop iterations and calls (at most {DEFAULT_MAX_STEPS:,})"
        )
    now = time.thread_time()
    if limits.cpu_start is None:
        limits.cpu_start = now
    used = now - limits.cpu_start
    if used > limits.cpu_limit:
        raise SecurityError(
            f"the template ran for more than {limits.cpu_limit:g} s of CPU time and was stopped"
        )
    limits.wall_check = time.monotonic() + (limits.cpu_limit - used)


def too_large(what: str) -> SecurityError:
    return SecurityError(
        f"the result of {what} would be too large (over {current_cap():,} characters)"
    )


def _text_size(value: Any, cap: int) -> int:
    """An estimate of ``len(str(value))``, computed without building it (stops past ``cap``).

    Containers count their items and separators; ``str()`` of a list holding the same 1 MB
    string a thousand times would be a gigabyte, though the list itself is small. (Escapes in
    the ``repr`` of strings inside containers may make the text a few times longer: bounded.)
    """
    total = 0
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str | bytes):
            total += len(item) + 2
        elif isinstance(item, int | float | bool) or item is None:
            total += 24 if not isinstance(item, int) else item.bit_length() // 3 + 2
        elif isinstance(item, range):
            total += 40
        elif isinstance(item, Mapping):
            total += 2 + 4 * len(item)
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, Collection):
            total += 2 + 2 * len(item)
            stack.extend(item)
        else:
            total += 64
        if total > cap:
            return total
    return total


def check_text(value: Any, what: str) -> None:
    if type(value) is not str and _text_size(value, current_cap()) > current_cap():
        raise too_large(what)


def checked_str(value: Any) -> str:
    """``str(value)`` for the output of ``{{ … }}``, refused when it would be too large."""
    kind = type(value)
    if kind is str:
        return value  # type: ignore[no-any-return]
    if kind is int or kind is float:
        return str(value)
    check_text(value, "converting a value to text")
    return str(value)


def checked_concat(pieces: Iterable[Any]) -> str:
    """``"".join`` for Jinja2's buffers (macros, ``{% set %}`` and ``{% filter %}`` blocks,
    ``caller()``, ``render()``), refused when the result would be too large."""
    cap = current_cap()
    if type(pieces) is list:
        if sum(map(len, pieces)) > cap:
            raise too_large("joining the template's output")
        return "".join(pieces)
    parts = []
    size = 0
    for piece in pieces:
        size += len(piece)
        if size > cap:
            raise too_large("joining the template's output")
        parts.append(piece)
    return "".join(parts)


def checked_tilde(parts: tuple[Any, ...]) -> str:
    """The ``~`` operator (Jinja2's ``str_join``), refused when the result would be too large."""
    texts = [p if type(p) is str else checked_str(p) for p in parts]
    if sum(map(len, texts)) > current_cap():
        raise too_large("~")
    return "".join(texts)


BUDGET_NAME = "__anvil_loop_budget__"


def is_budgeted(node: nodes.Node) -> bool:
    return (
        isinstance(node, nodes.Call)
        and isinstance(node.node, nodes.Name)
        and node.node.name == BUDGET_NAME
    )


def budgeted(iterable: Iterable[Any]) -> Iterator[Any]:
    """Iterate, charging each step to the current render's budget.

    Nested loops over ``range(100000)`` would otherwise run for hours inside ``prompt()``.
    """
    limits = LIMITS.get()
    if limits is None:
        yield from iterable
        return
    monotonic = time.monotonic
    for item in iterable:
        limits.steps -= 1  # charge, inlined: this runs for every step of every loop
        if limits.steps < 0 or monotonic() > limits.wall_check:
            _check_limits(limits)
        yield item


# Largest width, count or repeat a template may ask a string operation for.
_MAX_SIZE_ARGUMENT = 100_000
_WIDE_FORMAT_RE = re.compile(r"\d{6,}")
_NUMBER_RE = re.compile(r"\d+")


def check_size_arguments(args: Iterable[Any], kwargs: Mapping[str, Any]) -> None:
    for value in args:
        if isinstance(value, int) and abs(value) > _MAX_SIZE_ARGUMENT:
            raise SecurityError("a size argument is too large")
    for value in kwargs.values():
        if isinstance(value, int) and abs(value) > _MAX_SIZE_ARGUMENT:
            raise SecurityError("a size argument is too large")


def check_format_string(fmt: str) -> None:
    if _WIDE_FORMAT_RE.search(fmt):
        raise SecurityError("a format width or precision is too large")


def check_fields(fmt: str, fields: int, values: Iterable[Any], what: str) -> None:
    """A format string with ``fields`` fields, each as wide as the widest value or width."""
    if not fields:
        return
    cap = current_cap()
    widest = 0
    for value in values:
        kind = type(value)
        size = len(value) if kind is str else 32 if kind is float else _text_size(value, cap)
        widest = max(widest, size)
    width = max(map(int, _NUMBER_RE.findall(fmt)), default=0)
    if len(fmt) + fields * (widest + width) > cap:
        raise too_large(what)


def check_percent(fmt: str, values: Any) -> None:
    check_format_string(fmt)
    if isinstance(values, tuple):
        items: Iterable[Any] = values
    elif isinstance(values, Mapping):
        items = values.values()
    else:
        items = (values,)
    check_fields(fmt, fmt.count("%"), items, "%")


def check_replace(text: Any, old: Any, new: Any) -> None:
    if isinstance(text, str) and isinstance(old, str) and isinstance(new, str):
        cap = current_cap()
        growth = len(new) - len(old)
        if growth > 0 and old and len(text) + text.count(old) * growth > cap:
            raise too_large("replace")
        if not old and len(text) + (len(text) + 1) * len(new) > cap:
            raise too_large("replace")


def check_join(separator: str, items: list[Any]) -> None:
    cap = current_cap()
    size = len(separator) * max(len(items) - 1, 0)
    for item in items:
        if size > cap:
            break
        size += len(item) if type(item) is str else _text_size(item, cap)
    if size > cap:
        raise too_large("join")


def check_sum(left: Any, right: Any) -> None:
    if (
        isinstance(left, str | bytes | list | tuple)
        and isinstance(right, str | bytes | list | tuple)
        and len(left) + len(right) > current_cap()
    ):
        raise too_large("+")


def check_power(base: Any, exponent: Any) -> None:
    if (
        isinstance(base, int)
        and isinstance(exponent, int)
        and abs(base) > 1
        and exponent * base.bit_length() > _MAX_INT_BITS
    ):
        raise too_large("**")


def check_product(left: Any, right: Any) -> None:
    if isinstance(left, int) and isinstance(right, int):
        if left.bit_length() + right.bit_length() > _MAX_INT_BITS:
            raise too_large("*")
        return
    for seq, count in ((left, right), (right, left)):
        if (
            isinstance(seq, str | bytes | list | tuple)
            and isinstance(count, int)
            and len(seq) * count > current_cap()
        ):
            raise too_large("*")
