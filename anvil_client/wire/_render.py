"""Sandboxed rendering shared by the client, the publisher's validation and the FORGE preview.

    >>> from anvil_client.wire import compile_prompt, PromptSpec
    >>> compile_prompt("x", PromptSpec("Hi {{ name }}", None, ("name",), {})).render({"name": "Al"})
    'Hi Al'

One environment for everyone (DESIGN §7): ``ImmutableSandboxedEnvironment`` with
``StrictUndefined``, no autoescape, trailing newlines kept. Templates made only of text and
``{{ name }}`` placeholders take a fast path (a prepared ``str.format_map`` pattern) that gives
byte-identical output.

Templates are untrusted text, and Jinja2's sandbox bounds neither CPU nor memory, so:

* reading a template is bounded: at most ``MAX_TEMPLATE_CHARS`` characters, nesting at most
  ``MAX_NESTING`` deep (``MAX_BLOCK_NESTING`` for ``{% %}`` blocks), and nothing is evaluated
  while compiling (Jinja2's constant folding is off everywhere, introspection included);
* rendering is bounded: every loop step and every call (macros and recursion included) draws
  on one per-render budget of ``DEFAULT_MAX_STEPS`` that also stops after
  ``DEFAULT_MAX_SECONDS`` of CPU time; calls nest at most ``MAX_CALL_DEPTH`` deep (so Python's
  recursion limit is never what stops a template); and no string a template builds (``~``,
  ``+``, ``*``, ``%``, ``format``, ``join``, ``replace``, filters, macro and block output…)
  may grow past the output cap (``DEFAULT_MAX_OUTPUT``, or the render's own cap if larger).

Every failure is a :class:`TemplateError` (reading) or a :class:`RenderError` (rendering) with
one sentence; never a RecursionError or a MemoryError.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from contextvars import ContextVar
from typing import Any

import jinja2
from jinja2 import StrictUndefined, TemplateSyntaxError, UndefinedError, nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import SecurityError
from jinja2.filters import make_attrgetter
from jinja2.runtime import LoopContext
from jinja2.sandbox import ImmutableSandboxedEnvironment

from anvil_client.errors import MissingVariable, RenderError, TemplateError
from anvil_client.wire._models import PromptSpec

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
_UNDEFINED_RE = re.compile(r"^'([^']+)' is undefined$")
# ``self`` is the TemplateReference in every template, whatever the variables say.
_SPECIAL_NAMES = frozenset({"self"})


# --- the per-render limits ---------------------------------------------------------------------


class _Limits:
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


_LIMITS: ContextVar[_Limits | None] = ContextVar("anvil_render_limits", default=None)


def _cap() -> int:
    limits = _LIMITS.get()
    return DEFAULT_MAX_OUTPUT if limits is None else limits.cap


def _charge(limits: _Limits) -> None:
    """Spend one step of the render's budget (a loop step or a call)."""
    limits.steps -= 1
    if limits.steps < 0 or time.monotonic() > limits.wall_check:
        _check_limits(limits)


def _check_limits(limits: _Limits) -> None:
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


def _too_large(what: str) -> SecurityError:
    return SecurityError(f"the result of {what} would be too large (over {_cap():,} characters)")


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


def _check_text(value: Any, what: str) -> None:
    if type(value) is not str and _text_size(value, _cap()) > _cap():
        raise _too_large(what)


def _checked_str(value: Any) -> str:
    """``str(value)`` for the output of ``{{ … }}``, refused when it would be too large."""
    kind = type(value)
    if kind is str:
        return value  # type: ignore[no-any-return]
    if kind is int or kind is float:
        return str(value)
    _check_text(value, "converting a value to text")
    return str(value)


def _checked_concat(pieces: Iterable[Any]) -> str:
    """``"".join`` for Jinja2's buffers (macros, ``{% set %}`` and ``{% filter %}`` blocks,
    ``caller()``, ``render()``), refused when the result would be too large."""
    cap = _cap()
    if type(pieces) is list:
        if sum(map(len, pieces)) > cap:
            raise _too_large("joining the template's output")
        return "".join(pieces)
    parts = []
    size = 0
    for piece in pieces:
        size += len(piece)
        if size > cap:
            raise _too_large("joining the template's output")
        parts.append(piece)
    return "".join(parts)


def _checked_tilde(parts: tuple[Any, ...]) -> str:
    """The ``~`` operator (Jinja2's ``str_join``), refused when the result would be too large."""
    texts = [p if type(p) is str else _checked_str(p) for p in parts]
    if sum(map(len, texts)) > _cap():
        raise _too_large("~")
    return "".join(texts)


# --- compiling without evaluating anything ------------------------------------------------------


class _CodeGenerator(CodeGenerator):
    """Jinja2's code generator, minus compile-time evaluation and plus the size checks.

    Jinja2 folds constant expressions while compiling, even with the optimizer off (output
    nodes are always tried as constants): ``{{ ('x' * 30000) | join('y' * 100000) }}`` would
    allocate gigabytes in whichever process merely compiles or inspects the template. Here only
    literal text is constant; everything else runs at render time, under the render's limits.
    """

    def _output_child_to_const(self, node: nodes.Expr, frame: Frame, finalize: Any) -> str:
        if not isinstance(node, nodes.TemplateData):
            raise nodes.Impossible()
        return super()._output_child_to_const(node, frame, finalize)

    def _output_child_pre(self, node: nodes.Expr, frame: Frame, finalize: Any) -> None:
        if frame.eval_ctx.volatile or frame.eval_ctx.autoescape or finalize.src is not None:
            super()._output_child_pre(node, frame, finalize)
        else:
            self.write("environment.anvil_str(")

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        if frame.eval_ctx.volatile or frame.eval_ctx.autoescape:
            super().visit_Concat(node, frame)
            return
        self.write("environment.anvil_tilde((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


class _TrackingGenerator(_CodeGenerator):
    """``jinja2.meta``'s introspection, on the code generator above (so it folds nothing)."""

    def __init__(self, environment: jinja2.Environment) -> None:
        super().__init__(environment, "<introspection>", "<introspection>", optimized=False)
        self.undeclared: set[str] = set()

    def write(self, x: str) -> None:
        """Write nothing."""

    def enter_frame(self, frame: Frame) -> None:
        super().enter_frame(frame)
        for _, (action, param) in frame.symbols.loads.items():
            if action == "resolve" and param not in self.environment.globals:
                self.undeclared.add(param)


def undeclared_names(tree: nodes.Template) -> set[str]:
    """``jinja2.meta.find_undeclared_variables`` without compile-time evaluation.

    Raises:
        TemplateSyntaxError: what Jinja2's code generator refuses (a loop variable assigned…).
    """
    generator = _TrackingGenerator(ENVIRONMENT)
    generator.visit(tree)
    return generator.undeclared


# --- the sandbox -------------------------------------------------------------------------------


class AnvilSandbox(ImmutableSandboxedEnvironment):
    """The sandbox with operations that cannot allocate or run without bound.

    Jinja2's sandbox blocks unsafe attributes but bounds neither CPU nor memory, so the
    operations that can multiply the size of their input are checked before they run:
    ``*``, ``**``, ``%`` and ``+``; ``~``; size arguments of string methods and filters
    (``ljust``, ``center``, ``zfill``, ``indent``…); widths and fields in format strings;
    ``replace``, ``join``, ``expandtabs``; the text of containers. Every call and loop step
    draws on the render's budget.
    """

    code_generator_class = _CodeGenerator
    intercepted_binops = frozenset({"*", "**", "%", "+"})
    concat = staticmethod(_checked_concat)

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.anvil_str = _checked_str
        self.anvil_tilde = _checked_tilde

    def call_binop(
        self, context: jinja2.runtime.Context, operator: str, left: Any, right: Any
    ) -> Any:
        if operator == "+":
            _check_sum(left, right)
        elif operator == "*":
            _check_product(left, right)
        elif operator == "**":
            _check_power(left, right)
        elif operator == "%" and isinstance(left, str):
            _check_percent(left, right)
        return super().call_binop(context, operator, left, right)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        limits = _LIMITS.get()
        if limits is None:
            return __self._checked_call(__context, __obj, args, kwargs)
        _charge(limits)
        if limits.depth >= MAX_CALL_DEPTH:
            raise SecurityError(
                f"the template nests calls more than {MAX_CALL_DEPTH} deep (endless recursion?)"
            )
        limits.depth += 1
        try:
            return __self._checked_call(__context, __obj, args, kwargs)
        finally:
            limits.depth -= 1

    def _checked_call(
        self, context: Any, obj: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        if isinstance(obj, LoopContext) and args:  # ``loop(children)`` in a recursive loop
            args = (_budgeted(args[0]), *args[1:])
        owner = getattr(obj, "__self__", None)
        if isinstance(owner, str | bytes | list | tuple):
            _check_size_arguments(args, kwargs)
            name = getattr(obj, "__name__", "")
            if name == "replace" and len(args) >= 2:
                _check_replace(owner, args[0], args[1])
            elif name == "join" and args and isinstance(owner, str):
                items = list(args[0])
                _check_join(owner, items)
                args = (items, *args[1:])
            elif name == "expandtabs" and isinstance(owner, str):
                size = args[0] if args else kwargs.get("tabsize", 8)
                if isinstance(size, int) and len(owner) + owner.count("\t") * size > _cap():
                    raise _too_large("expandtabs")
        return super().call(context, obj, *args, **kwargs)

    def _generate(
        self,
        source: nodes.Template,
        name: str | None,
        filename: str | None,
        defer_init: bool = False,
    ) -> str:
        # Every ``{% for %}`` iterates through the per-render budget (see _budgeted).
        for loop in source.find_all(nodes.For):
            if not _is_budgeted(loop.iter):
                loop.iter = nodes.Call(
                    nodes.Name(_BUDGET_NAME, "load", lineno=loop.lineno),
                    [loop.iter],
                    [],
                    None,
                    None,
                    lineno=loop.lineno,
                )
        return super()._generate(source, name, filename, defer_init=defer_init)

    def wrap_str_format(self, value: Any) -> Any:
        wrapped = super().wrap_str_format(value)
        if wrapped is None:
            return None
        fmt = value.__self__
        _check_format_string(fmt)
        is_map = value.__name__ == "format_map"
        nested = _NESTED_SPEC_RE.search(fmt) is not None

        def checked(*args: Any, **kwargs: Any) -> Any:
            mapping = args[0] if is_map and args and isinstance(args[0], Mapping) else {}
            values = (*args, *kwargs.values(), *mapping.values())
            if nested:  # widths taken from the arguments: ``'{:>{w}}'.format(x, w=...)``
                _check_size_arguments(values, {})
            _check_fields(fmt, fmt.count("{"), values, "format")
            return wrapped(*args, **kwargs)

        return checked


_BUDGET_NAME = "__anvil_loop_budget__"


def _is_budgeted(node: nodes.Node) -> bool:
    return (
        isinstance(node, nodes.Call)
        and isinstance(node.node, nodes.Name)
        and node.node.name == _BUDGET_NAME
    )


def _budgeted(iterable: Iterable[Any]) -> Iterator[Any]:
    """Iterate, charging each step to the current render's budget.

    Nested loops over ``range(100000)`` would otherwise run for hours inside ``prompt()``.
    """
    limits = _LIMITS.get()
    if limits is None:
        yield from iterable
        return
    monotonic = time.monotonic
    for item in iterable:
        limits.steps -= 1  # _charge, inlined: this runs for every step of every loop
        if limits.steps < 0 or monotonic() > limits.wall_check:
            _check_limits(limits)
        yield item


# Largest width, count or repeat a template may ask a string operation for.
_MAX_SIZE_ARGUMENT = 100_000
_WIDE_FORMAT_RE = re.compile(r"\d{6,}")
_NUMBER_RE = re.compile(r"\d+")
_NESTED_SPEC_RE = re.compile(r"\{[^{}]*:[^{}]*\{")


def _check_size_arguments(args: Iterable[Any], kwargs: Mapping[str, Any]) -> None:
    for value in args:
        if isinstance(value, int) and abs(value) > _MAX_SIZE_ARGUMENT:
            raise SecurityError("a size argument is too large")
    for value in kwargs.values():
        if isinstance(value, int) and abs(value) > _MAX_SIZE_ARGUMENT:
            raise SecurityError("a size argument is too large")


def _check_format_string(fmt: str) -> None:
    if _WIDE_FORMAT_RE.search(fmt):
        raise SecurityError("a format width or precision is too large")


def _check_fields(fmt: str, fields: int, values: Iterable[Any], what: str) -> None:
    """A format string with ``fields`` fields, each as wide as the widest value or width."""
    if not fields:
        return
    cap = _cap()
    widest = 0
    for value in values:
        kind = type(value)
        size = len(value) if kind is str else 32 if kind is float else _text_size(value, cap)
        widest = max(widest, size)
    width = max(map(int, _NUMBER_RE.findall(fmt)), default=0)
    if len(fmt) + fields * (widest + width) > cap:
        raise _too_large(what)


def _check_percent(fmt: str, values: Any) -> None:
    _check_format_string(fmt)
    if isinstance(values, tuple):
        items: Iterable[Any] = values
    elif isinstance(values, Mapping):
        items = values.values()
    else:
        items = (values,)
    _check_fields(fmt, fmt.count("%"), items, "%")


def _check_replace(text: Any, old: Any, new: Any) -> None:
    if isinstance(text, str) and isinstance(old, str) and isinstance(new, str):
        cap = _cap()
        growth = len(new) - len(old)
        if growth > 0 and old and len(text) + text.count(old) * growth > cap:
            raise _too_large("replace")
        if not old and len(text) + (len(text) + 1) * len(new) > cap:
            raise _too_large("replace")


def _check_join(separator: str, items: list[Any]) -> None:
    cap = _cap()
    size = len(separator) * max(len(items) - 1, 0)
    for item in items:
        if size > cap:
            break
        size += len(item) if type(item) is str else _text_size(item, cap)
    if size > cap:
        raise _too_large("join")


def _check_sum(left: Any, right: Any) -> None:
    if (
        isinstance(left, str | bytes | list | tuple)
        and isinstance(right, str | bytes | list | tuple)
        and len(left) + len(right) > _cap()
    ):
        raise _too_large("+")


def _check_power(base: Any, exponent: Any) -> None:
    if (
        isinstance(base, int)
        and isinstance(exponent, int)
        and abs(base) > 1
        and exponent * base.bit_length() > _MAX_INT_BITS
    ):
        raise _too_large("**")


def _check_product(left: Any, right: Any) -> None:
    if isinstance(left, int) and isinstance(right, int):
        if left.bit_length() + right.bit_length() > _MAX_INT_BITS:
            raise _too_large("*")
        return
    for seq, count in ((left, right), (right, left)):
        if (
            isinstance(seq, str | bytes | list | tuple)
            and isinstance(count, int)
            and len(seq) * count > _cap()
        ):
            raise _too_large("*")


# --- filters ------------------------------------------------------------------------------------

# Filters that turn their value into text: a container's text is checked before it is built,
# and the result after.
_TEXT_FILTERS = frozenset(
    {
        "capitalize",
        "center",
        "e",
        "escape",
        "forceescape",
        "format",
        "indent",
        "lower",
        "pprint",
        "replace",
        "safe",
        "string",
        "striptags",
        "title",
        "tojson",
        "trim",
        "truncate",
        "upper",
        "urlencode",
        "urlize",
        "wordcount",
        "wordwrap",
        "xmlattr",
    }
)
# Filters whose integer arguments are sizes (widths, counts).
_SIZED_FILTERS = frozenset(
    {"center", "indent", "wordwrap", "truncate", "batch", "slice", "filesizeformat", "format"}
)


def _indent_check(value: Any, width: Any = 4, *args: Any, **kwargs: Any) -> None:
    text = value if isinstance(value, str) else ""
    per_line = len(width) if isinstance(width, str) else width if isinstance(width, int) else 0
    if len(text) + (text.count("\n") + 1) * per_line > _cap():
        raise _too_large("indent")


def _wordwrap_check(value: Any, width: Any = 79, *args: Any, **kwargs: Any) -> None:
    wrapstring = kwargs.get("wrapstring", args[1] if len(args) > 1 else None)
    if isinstance(value, str) and isinstance(width, int):
        breaks = len(value) // max(width, 1) + value.count("\n") + 1
        extra = len(wrapstring) if isinstance(wrapstring, str) else 2
        if len(value) + breaks * extra > _cap():
            raise _too_large("wordwrap")


def _format_check(value: Any, *args: Any, **kwargs: Any) -> None:
    if isinstance(value, str):
        _check_percent(value, kwargs or args)


def _replace_check(value: Any, old: Any = None, new: Any = None, *args: Any, **kw: Any) -> None:
    _check_replace(value, old, new)


def _join_items(value: Any, d: Any, attribute: Any) -> list[Any]:
    items = list(value)
    if attribute is not None:
        items = [make_attrgetter(ENVIRONMENT, attribute)(item) for item in items]
    _check_join(d if isinstance(d, str) else "", items)
    return items


_FILTER_CHECKS: dict[str, Callable[..., None]] = {
    "indent": _indent_check,
    "wordwrap": _wordwrap_check,
    "format": _format_check,
    "replace": _replace_check,
}


def _guard_filter(name: str) -> None:
    original = ENVIRONMENT.filters[name]
    skip = 1 if hasattr(original, "jinja_pass_arg") else 0
    sized = name in _SIZED_FILTERS
    check = _FILTER_CHECKS.get(name)
    is_join = name == "join"

    def guarded(*args: Any, **kwargs: Any) -> Any:
        if len(args) > skip:
            value = args[skip]
            if sized:
                _check_size_arguments(args[skip + 1 :], kwargs)
            if type(value) is not str:
                _check_text(value, f"the {name} filter")
            if check is not None:
                check(*args[skip:], **kwargs)
            if is_join:  # join(value, d="", attribute=None): the items are checked, then joined
                rest = args[skip + 1 :]
                separator = kwargs.get("d", rest[0] if rest else "")
                attribute = kwargs.get("attribute", rest[1] if len(rest) > 1 else None)
                items = _join_items(value, separator, attribute)
                args, kwargs = (*args[:skip], items, separator), {}
        result = original(*args, **kwargs)
        if type(result) is str and len(result) > _cap():
            raise _too_large(f"the {name} filter")
        return result

    guarded.__name__ = getattr(original, "__name__", name)
    if hasattr(original, "jinja_pass_arg"):
        guarded.jinja_pass_arg = original.jinja_pass_arg  # type: ignore[attr-defined]
    ENVIRONMENT.filters[name] = guarded


ENVIRONMENT = AnvilSandbox(
    undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True, optimized=False
)
ENVIRONMENT.globals[_BUDGET_NAME] = _budgeted
# ``lipsum`` only generates text: nothing a prompt needs, and a way to ask for a lot of it.
del ENVIRONMENT.globals["lipsum"]
# Only filters that build text (or take sizes) are guarded: ``length``, ``sum``, ``sort``… return
# nothing larger than their input, and stay as fast as Jinja2 made them.
for _name in sorted(_TEXT_FILTERS | _SIZED_FILTERS | {"join"}):
    _guard_filter(_name)


# --- reading templates -------------------------------------------------------------------------

# Statements that open a block (their body is nested code in the compiled template).
_BLOCK_NODES = (
    nodes.For,
    nodes.If,
    nodes.Macro,
    nodes.CallBlock,
    nodes.FilterBlock,
    nodes.With,
    nodes.Block,
    nodes.AssignBlock,
    nodes.Scope,
    nodes.ScopedEvalContextModifier,
)


def check_template_size(source: str) -> None:
    """Raises: TemplateError: if the template is longer than ``MAX_TEMPLATE_CHARS``."""
    if len(source) > MAX_TEMPLATE_CHARS:
        raise TemplateError(
            f"the template is {len(source):,} characters long; at most "
            f"{MAX_TEMPLATE_CHARS:,} are allowed"
        )


# A tag's text. The tree is at most a few levels deeper than the number of block tags plus the
# longest tag (each level of an expression takes at least one character), as long as the
# matches are the real tags: no strings, comments, raw blocks or brackets can hide a tag's end.
_TAG_RE = re.compile(r"\{\{(.*?)\}\}|\{%(.*?)%\}", re.DOTALL)
_UNSURE_RE = re.compile(r"['\"]|\{\{|\{%|%\}|#\}")


def _surely_shallow(source: str) -> bool:
    """Whether the template is too small to nest past the limits (so the tree needs no walk)."""
    blocks = source.count("{%")
    if blocks > MAX_BLOCK_NESTING:
        return False
    longest = 0
    for match in _TAG_RE.finditer(source):
        inner = match.group(1) if match.group(1) is not None else match.group(2)
        if (
            _UNSURE_RE.search(inner)
            or inner.count("(") != inner.count(")")
            or inner.count("[") != inner.count("]")
            or inner.count("{") != inner.count("}")
        ):
            return False
        longest = max(longest, len(inner))
    return blocks + longest + 4 <= MAX_NESTING


def _check_nesting(tree: nodes.Template) -> None:
    """Refuse trees deeper than the compiler (and Python's) recursion can take."""
    stack: list[tuple[nodes.Node, int, int]] = [(tree, 0, 0)]
    while stack:
        node, depth, blocks = stack.pop()
        if isinstance(node, _BLOCK_NODES):
            blocks += 1
            if blocks > MAX_BLOCK_NESTING:
                raise _nesting_error(f"blocks more than {MAX_BLOCK_NESTING} deep", node.lineno)
        if depth > MAX_NESTING:
            raise _nesting_error(f"more than {MAX_NESTING} levels deep", node.lineno)
        for child in node.iter_child_nodes():
            stack.append((child, depth + 1, blocks))


def _nesting_error(what: str, lineno: int | None) -> TemplateError:
    message = f"the template nests {what}; simplify it"
    return TemplateError(f"line {lineno}: {message}" if lineno else message, lineno=lineno)


def parse_template(source: str) -> nodes.Template:
    """Parse a template in the shared sandbox, within the size and nesting limits.

    Raises:
        TemplateError: with the line number of the first syntax error, or naming the limit
            the template is over.
    """
    check_template_size(source)
    try:
        tree = ENVIRONMENT.parse(source)
    except TemplateSyntaxError as e:
        raise TemplateError(f"line {e.lineno}: {e.message}", lineno=e.lineno) from None
    except RecursionError:
        raise _nesting_error("too deeply", None) from None
    except ValueError as e:  # a number longer than Python converts (4,300 digits)
        if "integer string conversion" in str(e):
            raise TemplateError("the template holds a number with too many digits") from None
        raise TemplateError(f"the template cannot be read: {e}") from None
    if not _surely_shallow(source):
        _check_nesting(tree)
    return tree


def _undeclared_sorted(tree: nodes.Template) -> list[str]:
    try:
        return sorted(undeclared_names(tree))
    except TemplateSyntaxError as e:  # what the code generator refuses (loop as a target…)
        raise TemplateError(f"line {e.lineno}: {e.message}", lineno=e.lineno) from None
    except RecursionError:
        raise _nesting_error("too deeply", None) from None


def template_variables(source: str) -> list[str]:
    """Undeclared variables of a template, sorted (DESIGN §3).

    Raises:
        TemplateError: if the template does not parse or is over a limit.
    """
    return _undeclared_sorted(parse_template(source))


def spec_variables(template: str | None, messages: list[tuple[str, str]] | None) -> list[str]:
    """Sorted union of the variables of a text prompt or of every chat message.

    Raises:
        TemplateError: for the first template that does not parse or is over a limit.
    """
    sources = [template] if template is not None else [text for _, text in messages or []]
    total = sum(len(source) for source in sources)
    if total > MAX_PROMPT_SET_CHARS:
        raise TemplateError(
            f"the templates hold {total:,} characters; at most {MAX_PROMPT_SET_CHARS:,} are allowed"
        )
    found: set[str] = set()
    for source in sources:
        found.update(template_variables(source))
    return sorted(found)


class _Compiled:
    """One template, compiled once: a ``format_map`` pattern or a Jinja2 template."""

    __slots__ = ("_pattern", "_source", "_template")

    def __init__(self, source: str) -> None:
        tree = parse_template(source)
        self._source = source
        self._pattern = _fast_pattern(tree)
        self._template: jinja2.Template | None = None
        if self._pattern is None:
            try:
                self._template = ENVIRONMENT.from_string(tree)
            except TemplateSyntaxError as e:  # e.g. a block defined twice
                raise TemplateError(f"line {e.lineno}: {e.message}", lineno=e.lineno) from None
            except RecursionError:
                raise _nesting_error("too deeply", None) from None
            except Exception as e:  # Python refusing the generated code, say
                raise TemplateError(
                    f"the template does not compile: {type(e).__name__}: {e}"
                ) from None

    @property
    def fast(self) -> bool:
        return self._pattern is not None

    @property
    def names(self) -> frozenset[str]:
        """The names the template reads from its variables (computed only to report an error)."""
        return frozenset(template_variables(self._source))

    def render(self, variables: Mapping[str, Any], max_output: int) -> str:
        if self._pattern is not None:
            # ``format_map`` on a plain dict, as Jinja2 copies the variables into one too.
            given = variables if type(variables) is dict else dict(variables)
            text = self._pattern.format_map(given)
            if len(text) > max_output:
                raise SecurityError("output is larger than the render limit")
            return text
        template = self._template
        assert template is not None
        parts = []
        size = 0
        # Intermediate strings get the larger of this render's cap and the default, so a preview
        # (a small output cap) refuses exactly what the client would.
        token = _LIMITS.set(_Limits(max(max_output, DEFAULT_MAX_OUTPUT)))
        try:
            for piece in template.root_render_func(template.new_context(dict(variables))):
                size += len(piece)
                if size > max_output:
                    raise SecurityError("output is larger than the render limit")
                parts.append(piece)
        finally:
            _LIMITS.reset(token)
        return "".join(parts)


def _fast_pattern(tree: nodes.Template) -> str | None:
    """A ``str.format_map`` pattern when the template is only text and ``{{ name }}``.

    Built from Jinja2's own parse tree, so newline normalisation, whitespace control,
    comments and ``raw`` blocks are exactly Jinja2's. ``!s`` makes formatting call ``str()``,
    as Jinja2's output does. Names Jinja2 resolves specially (``self``, globals such as
    ``range``) keep the Jinja2 path.
    """
    pieces: list[str] = []
    for statement in tree.body:
        if not isinstance(statement, nodes.Output):
            return None
        for node in statement.nodes:
            if type(node) is nodes.TemplateData:
                pieces.append(node.data.replace("{", "{{").replace("}", "}}"))
            elif (
                type(node) is nodes.Name
                and node.ctx == "load"
                and node.name not in _SPECIAL_NAMES
                and node.name not in ENVIRONMENT.globals
            ):
                pieces.append("{" + node.name + "!s}")
            else:
                return None
    return "".join(pieces)


class CompiledPrompt:
    """A prompt ready to render; compiled on first use, once per bundle."""

    __slots__ = ("_messages", "_text", "prompt_id", "spec")

    def __init__(self, prompt_id: str, spec: PromptSpec) -> None:
        self.prompt_id = prompt_id
        self.spec = spec
        try:
            if spec.template is not None:
                self._text: _Compiled | None = _Compiled(spec.template)
                self._messages: tuple[tuple[str, _Compiled], ...] = ()
            else:
                assert spec.messages is not None
                total = sum(len(m.template) for m in spec.messages)
                if total > MAX_PROMPT_SET_CHARS:
                    raise TemplateError(
                        f"the messages hold {total:,} characters; at most "
                        f"{MAX_PROMPT_SET_CHARS:,} are allowed"
                    )
                self._text = None
                self._messages = tuple((m.role, _Compiled(m.template)) for m in spec.messages)
        except TemplateError as e:
            raise RenderError(f"prompt {prompt_id!r} has a broken template: {e}") from None

    @property
    def fast_path(self) -> bool:
        """Whether every template of this prompt renders by ``str.format_map`` (no Jinja2)."""
        compiled = [self._text] if self._text is not None else [c for _, c in self._messages]
        return all(c.fast for c in compiled)

    def render(self, variables: Mapping[str, Any], max_output: int = DEFAULT_MAX_OUTPUT) -> str:
        """Render a text prompt (a chat prompt renders its messages joined by blank lines).

        Raises:
            MissingVariable: naming the prompt and the variable not given.
            RenderError: for any other failure inside the template.
        """
        if self._text is not None:
            return self._guarded(self._text, variables, max_output)
        return "\n\n".join(m["content"] for m in self.render_messages(variables, max_output))

    def render_messages(
        self, variables: Mapping[str, Any], max_output: int = DEFAULT_MAX_OUTPUT
    ) -> list[dict[str, str]]:
        """Render a chat prompt to ``[{"role", "content"}]`` (a text prompt is one user message).

        Raises:
            MissingVariable: naming the prompt and the variable not given.
            RenderError: for any other failure inside the template.
        """
        if self._text is not None:
            return [{"role": "user", "content": self._guarded(self._text, variables, max_output)}]
        return [
            {"role": role, "content": self._guarded(compiled, variables, max_output)}
            for role, compiled in self._messages
        ]

    def _guarded(self, compiled: _Compiled, variables: Mapping[str, Any], max_output: int) -> str:
        try:
            return compiled.render(variables, max_output)
        except (KeyError, UndefinedError) as e:
            error = self._missing(compiled, variables, e)
        except SecurityError as e:
            error = RenderError(f"prompt {self.prompt_id!r} was stopped by the sandbox: {e}")
        except RecursionError:
            error = RenderError(f"prompt {self.prompt_id!r} recursed too deeply")
        except MemoryError:
            error = RenderError(f"prompt {self.prompt_id!r} ran out of memory while rendering")
        except Exception as e:  # any error raised inside a template is a render error
            error = RenderError(
                f"prompt {self.prompt_id!r} failed to render: {type(e).__name__}: {e}"
            )
        raise error

    def _missing(
        self, compiled: _Compiled, variables: Mapping[str, Any], e: Exception
    ) -> RenderError:
        missing = sorted(name for name in compiled.names if name not in variables)
        if missing:
            named = _undefined_name(e)
            variable = named if named in missing else missing[0]
            return MissingVariable(
                f"prompt {self.prompt_id!r} needs variable {variable!r}, which was not given",
                prompt_id=self.prompt_id,
                variable=variable,
            )
        return RenderError(f"prompt {self.prompt_id!r} failed to render: {e}")


def _undefined_name(error: Exception) -> str | None:
    """The variable a ``KeyError`` (fast path) or ``UndefinedError`` (Jinja2) is about."""
    if isinstance(error, KeyError):
        return str(error.args[0]) if error.args else None
    match = _UNDEFINED_RE.match(str(error))
    return match.group(1) if match else None


def compile_prompt(prompt_id: str, spec: PromptSpec) -> CompiledPrompt:
    """Compile one prompt.

    Raises:
        RenderError: if a template does not compile or is over a limit.
    """
    return CompiledPrompt(prompt_id, spec)
