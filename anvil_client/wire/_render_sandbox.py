"""The one sandboxed Jinja2 environment (DESIGN §7): ``ENVIRONMENT``.

``ImmutableSandboxedEnvironment`` with ``StrictUndefined``, no autoescape, trailing newlines
kept, and a code generator that evaluates nothing while compiling (no constant folding, also
in ``undeclared_names``). Operations that can multiply the size of their input, filters that
build text, and every call and loop step are checked against the render's budget
(``_render_budget``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

import jinja2
from jinja2 import StrictUndefined, nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import SecurityError
from jinja2.filters import make_attrgetter
from jinja2.runtime import LoopContext
from jinja2.sandbox import ImmutableSandboxedEnvironment

from anvil_client.wire._render_budget import (
    BUDGET_NAME,
    LIMITS,
    MAX_CALL_DEPTH,
    budgeted,
    charge,
    check_fields,
    check_format_string,
    check_join,
    check_percent,
    check_power,
    check_product,
    check_replace,
    check_size_arguments,
    check_sum,
    check_text,
    checked_concat,
    checked_str,
    checked_tilde,
    current_cap,
    is_budgeted,
    too_large,
)

_NESTED_SPEC_RE = re.compile(r"\{[^{}]*:[^{}]*\{")


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
    concat = staticmethod(checked_concat)

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.anvil_str = checked_str
        self.anvil_tilde = checked_tilde

    def call_binop(
        self, context: jinja2.runtime.Context, operator: str, left: Any, right: Any
    ) -> Any:
        if operator == "+":
            check_sum(left, right)
        elif operator == "*":
            check_product(left, right)
        elif operator == "**":
            check_power(left, right)
        elif operator == "%" and isinstance(left, str):
            check_percent(left, right)
        return super().call_binop(context, operator, left, right)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        limits = LIMITS.get()
        if limits is None:
            return __self._checked_call(__context, __obj, args, kwargs)
        charge(limits)
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
            args = (budgeted(args[0]), *args[1:])
        owner = getattr(obj, "__self__", None)
        if isinstance(owner, str | bytes | list | tuple):
            check_size_arguments(args, kwargs)
            name = getattr(obj, "__name__", "")
            if name == "replace" and len(args) >= 2:
                check_replace(owner, args[0], args[1])
            elif name == "join" and args and isinstance(owner, str):
                items = list(args[0])
                check_join(owner, items)
                args = (items, *args[1:])
            elif name == "expandtabs" and isinstance(owner, str):
                size = args[0] if args else kwargs.get("tabsize", 8)
                if isinstance(size, int) and len(owner) + owner.count("\t") * size > current_cap():
                    raise too_large("expandtabs")
        return super().call(context, obj, *args, **kwargs)

    def _generate(
        self,
        source: nodes.Template,
        name: str | None,
        filename: str | None,
        defer_init: bool = False,
    ) -> str:
        # Every ``{% for %}`` iterates through the per-render budget (see budgeted).
        for loop in source.find_all(nodes.For):
            if not is_budgeted(loop.iter):
                loop.iter = nodes.Call(
                    nodes.Name(BUDGET_NAME, "load", lineno=loop.lineno),
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
        check_format_string(fmt)
        is_map = value.__name__ == "format_map"
        nested = _NESTED_SPEC_RE.search(fmt) is not None

        def checked(*args: Any, **kwargs: Any) -> Any:
            mapping = args[0] if is_map and args and isinstance(args[0], Mapping) else {}
            values = (*args, *kwargs.values(), *mapping.values())
            if nested:  # widths taken from the arguments: ``'{:>{w}}'.format(x, w=...)``
                check_size_arguments(values, {})
            check_fields(fmt, fmt.count("{"), values, "format")
            return wrapped(*args, **kwargs)

        return checked


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
    if len(text) + (text.count("\n") + 1) * per_line > current_cap():
        raise too_large("indent")


def _wordwrap_check(value: Any, width: Any = 79, *args: Any, **kwargs: Any) -> None:
    wrapstring = kwargs.get("wrapstring", args[1] if len(args) > 1 else None)
    if isinstance(value, str) and isinstance(width, int):
        breaks = len(value) // max(width, 1) + value.count("\n") + 1
        extra = len(wrapstring) if isinstance(wrapstring, str) else 2
        if len(value) + breaks * extra > current_cap():
            raise too_large("wordwrap")


def _format_check(value: Any, *args: Any, **kwargs: Any) -> None:
    if isinstance(value, str):
        check_percent(value, kwargs or args)


def _replace_check(value: Any, old: Any = None, new: Any = None, *args: Any, **kw: Any) -> None:
    check_replace(value, old, new)


def _join_items(value: Any, d: Any, attribute: Any) -> list[Any]:
    items = list(value)
    if attribute is not None:
        items = [make_attrgetter(ENVIRONMENT, attribute)(item) for item in items]
    check_join(d if isinstance(d, str) else "", items)
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
                check_size_arguments(args[skip + 1 :], kwargs)
            if type(value) is not str:
                check_text(value, f"the {name} filter")
            if check is not None:
                check(*args[skip:], **kwargs)
            if is_join:  # join(value, d="", attribute=None): the items are checked, then joined
                rest = args[skip + 1 :]
                separator = kwargs.get("d", rest[0] if rest else "")
                attribute = kwargs.get("attribute", rest[1] if len(rest) > 1 else None)
                items = _join_items(value, separator, attribute)
                args, kwargs = (*args[:skip], items, separator), {}
        result = original(*args, **kwargs)
        if type(result) is str and len(result) > current_cap():
            raise too_large(f"the {name} filter")
        return result

    guarded.__name__ = getattr(original, "__name__", name)
    if hasattr(original, "jinja_pass_arg"):
        guarded.jinja_pass_arg = original.jinja_pass_arg  # type: ignore[attr-defined]
    ENVIRONMENT.filters[name] = guarded


ENVIRONMENT = AnvilSandbox(
    undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True, optimized=False
)
ENVIRONMENT.globals[BUDGET_NAME] = budgeted
# ``lipsum`` only generates text: nothing a prompt needs, and a way to ask for a lot of it.
del ENVIRONMENT.globals["lipsum"]
# Only filters that build text (or take sizes) are guarded: ``length``, ``sum``, ``sort``… return
# nothing larger than their input, and stay as fast as Jinja2 made them.
for _name in sorted(_TEXT_FILTERS | _SIZED_FILTERS | {"join"}):
    _guard_filter(_name)
