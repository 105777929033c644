"""Sandboxed rendering shared by the client, the publisher's validation and the FORGE preview.

    >>> from anvil_client.wire import compile_prompt, PromptSpec
    >>> compile_prompt("x", PromptSpec("Hi {{ name }}", None, ("name",), {})).render({"name": "Al"})
    'Hi Al'

One environment for everyone (DESIGN §7): ``ImmutableSandboxedEnvironment`` with
``StrictUndefined``, no autoescape, trailing newlines kept. ``*`` and ``**`` are intercepted and
capped, and output is capped, because the sandbox itself bounds neither CPU nor memory.
Templates made only of text and ``{{ name }}`` placeholders take a fast path (a prepared
``str.format_map`` pattern) that gives byte-identical output.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from contextvars import ContextVar
from typing import Any

import jinja2
from jinja2 import StrictUndefined, TemplateSyntaxError, UndefinedError, meta, nodes
from jinja2.exceptions import SecurityError
from jinja2.runtime import LoopContext
from jinja2.sandbox import ImmutableSandboxedEnvironment

from anvil_client.errors import MissingVariable, RenderError, TemplateError
from anvil_client.wire._models import PromptSpec

DEFAULT_MAX_OUTPUT = 1024 * 1024
_MAX_INT_BITS = 64 * 1024
_UNDEFINED_RE = re.compile(r"^'([^']+)' is undefined$")
# ``self`` is the TemplateReference in every template, whatever the variables say.
_SPECIAL_NAMES = frozenset({"self"})


class AnvilSandbox(ImmutableSandboxedEnvironment):
    """The sandbox with operations that cannot allocate without bound.

    Jinja2's sandbox blocks unsafe attributes but bounds neither CPU nor memory, so the
    operations that can multiply the size of their input are checked before they run:
    ``*``, ``**`` and ``%``; size arguments of string methods and filters (``ljust``,
    ``center``, ``zfill``, ``indent``…); widths in format strings; ``replace``.
    """

    intercepted_binops = frozenset({"*", "**", "%"})

    def call_binop(
        self, context: jinja2.runtime.Context, operator: str, left: Any, right: Any
    ) -> Any:
        if operator == "**":
            _check_power(left, right)
        elif operator == "*":
            _check_product(left, right)
        elif operator == "%" and isinstance(left, str):
            _check_format_string(left)
        return super().call_binop(context, operator, left, right)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(__obj, LoopContext) and args:  # ``loop(children)`` in a recursive loop
            args = (_budgeted(args[0]), *args[1:])
        owner = getattr(__obj, "__self__", None)
        if isinstance(owner, str | bytes | list | tuple):
            _check_size_arguments(args, kwargs)
            if getattr(__obj, "__name__", "") == "replace" and len(args) >= 2:
                _check_replace(owner, args[0], args[1])
        return super().call(__context, __obj, *args, **kwargs)

    def _generate(
        self,
        source: nodes.Template,
        name: str | None,
        filename: str | None,
        defer_init: bool = False,
    ) -> str:
        # Every ``{% for %}`` iterates through the per-render loop budget (see _budgeted).
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
        nested = _NESTED_SPEC_RE.search(fmt) is not None

        def checked(*args: Any, **kwargs: Any) -> Any:
            if nested:  # widths taken from the arguments: ``'{:>{w}}'.format(x, w=...)``
                mapping = args[0] if args and isinstance(args[0], Mapping) else {}
                _check_size_arguments(args, {**kwargs, **mapping})
            return wrapped(*args, **kwargs)

        return checked


# How many loop iterations one render may run, across all loops (nested loops multiply).
DEFAULT_MAX_ITERATIONS = 250_000
_BUDGET_NAME = "__anvil_loop_budget__"
_LOOP_BUDGET: ContextVar[list[int] | None] = ContextVar("anvil_loop_budget", default=None)


def _is_budgeted(node: nodes.Node) -> bool:
    return (
        isinstance(node, nodes.Call)
        and isinstance(node.node, nodes.Name)
        and node.node.name == _BUDGET_NAME
    )


def _budgeted(iterable: Iterable[Any]) -> Iterator[Any]:
    """Iterate, charging each step to the current render's budget.

    The sandbox bounds memory through the guards below but nothing bounds CPU: nested loops
    over ``range(100000)`` would run for hours inside ``prompt()``. A render that exceeds
    ``DEFAULT_MAX_ITERATIONS`` steps in total stops with a SecurityError.
    """
    budget = _LOOP_BUDGET.get()
    if budget is None:
        yield from iterable
        return
    for item in iterable:
        budget[0] -= 1
        if budget[0] < 0:
            raise SecurityError("the template runs too many loop iterations")
        yield item


# Largest width, count or repeat a template may ask a string operation for.
_MAX_SIZE_ARGUMENT = 100_000
_WIDE_FORMAT_RE = re.compile(r"\d{6,}")
_NESTED_SPEC_RE = re.compile(r"\{[^{}]*:[^{}]*\{")


def _check_size_arguments(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    for value in (*args, *kwargs.values()):
        if isinstance(value, int) and abs(value) > _MAX_SIZE_ARGUMENT:
            raise SecurityError("a size argument is too large")


def _check_format_string(fmt: str) -> None:
    if _WIDE_FORMAT_RE.search(fmt):
        raise SecurityError("a format width or precision is too large")


def _check_replace(text: Any, old: Any, new: Any) -> None:
    if isinstance(text, str) and isinstance(old, str) and isinstance(new, str):
        growth = len(new) - len(old)
        if growth > 0 and old and len(text) + text.count(old) * growth > DEFAULT_MAX_OUTPUT:
            raise SecurityError("the result of replace would be too large")
        if not old and len(text) * len(new) > DEFAULT_MAX_OUTPUT:
            raise SecurityError("the result of replace would be too large")


def _guard_filter(name: str, size_check: Any = None) -> None:
    original = ENVIRONMENT.filters[name]

    def guarded(*args: Any, **kwargs: Any) -> Any:
        _check_size_arguments(args[1:], kwargs)
        if size_check is not None:
            size_check(*args)
        return original(*args, **kwargs)

    guarded.__name__ = original.__name__
    for marker in ("jinja_pass_arg",):
        if hasattr(original, marker):
            setattr(guarded, marker, getattr(original, marker))
    ENVIRONMENT.filters[name] = guarded


def _format_filter_check(value: Any, *args: Any, **kwargs: Any) -> None:
    if isinstance(value, str):
        _check_format_string(value)


def _replace_filter_check(*args: Any) -> None:
    # do_replace(eval_ctx, s, old, new, count=None)
    if len(args) >= 4:
        _check_replace(args[1], args[2], args[3])


def _check_power(base: Any, exponent: Any) -> None:
    if (
        isinstance(base, int)
        and isinstance(exponent, int)
        and abs(base) > 1
        and exponent * base.bit_length() > _MAX_INT_BITS
    ):
        raise SecurityError("the result of ** would be too large")


def _check_product(left: Any, right: Any) -> None:
    if isinstance(left, int) and isinstance(right, int):
        if left.bit_length() + right.bit_length() > _MAX_INT_BITS:
            raise SecurityError("the result of * would be too large")
        return
    for seq, count in ((left, right), (right, left)):
        if (
            isinstance(seq, str | bytes | list | tuple)
            and isinstance(count, int)
            and len(seq) * count > DEFAULT_MAX_OUTPUT
        ):
            raise SecurityError("the result of * would be too large")


ENVIRONMENT = AnvilSandbox(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)
ENVIRONMENT.globals[_BUDGET_NAME] = _budgeted
for _name in ("center", "indent", "wordwrap", "truncate", "batch", "slice", "filesizeformat"):
    _guard_filter(_name)
_guard_filter("format", _format_filter_check)
_guard_filter("replace", _replace_filter_check)
_lipsum: Any = ENVIRONMENT.globals["lipsum"]


def _bounded_lipsum(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> Any:
    _check_size_arguments((n * max,), {})
    return _lipsum(n=n, html=html, min=min, max=max)


ENVIRONMENT.globals["lipsum"] = _bounded_lipsum


def parse_template(source: str) -> nodes.Template:
    """Parse a template in the shared sandbox.

    Raises:
        TemplateError: with the line number of the first syntax error.
    """
    try:
        return ENVIRONMENT.parse(source)
    except TemplateSyntaxError as e:
        raise TemplateError(f"line {e.lineno}: {e.message}", lineno=e.lineno) from e


def template_variables(source: str) -> list[str]:
    """Undeclared variables of a template, sorted (DESIGN §3).

    Raises:
        TemplateError: if the template does not parse.
    """
    return sorted(meta.find_undeclared_variables(parse_template(source)))


def spec_variables(template: str | None, messages: list[tuple[str, str]] | None) -> list[str]:
    """Sorted union of the variables of a text prompt or of every chat message.

    Raises:
        TemplateError: for the first template that does not parse.
    """
    sources = [template] if template is not None else [text for _, text in messages or []]
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
                raise TemplateError(f"line {e.lineno}: {e.message}", lineno=e.lineno) from e
            except Exception as e:  # Jinja2's optimizer evaluates constants while compiling
                raise TemplateError(f"template does not compile: {e}") from e

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
        budget = _LOOP_BUDGET.set([DEFAULT_MAX_ITERATIONS])
        try:
            for piece in template.root_render_func(template.new_context(dict(variables))):
                size += len(piece)
                if size > max_output:
                    raise SecurityError("output is larger than the render limit")
                parts.append(piece)
        finally:
            _LOOP_BUDGET.reset(budget)
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
                self._text = None
                self._messages = tuple((m.role, _Compiled(m.template)) for m in spec.messages)
        except TemplateError as e:
            raise RenderError(f"prompt {prompt_id!r} has a broken template: {e}") from e

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
            missing = sorted(name for name in compiled.names if name not in variables)
            if missing:
                named = _undefined_name(e)
                variable = named if named in missing else missing[0]
                raise MissingVariable(
                    f"prompt {self.prompt_id!r} needs variable {variable!r}, which was not given",
                    prompt_id=self.prompt_id,
                    variable=variable,
                ) from None
            raise RenderError(f"prompt {self.prompt_id!r} failed to render: {e}") from None
        except SecurityError as e:
            raise RenderError(
                f"prompt {self.prompt_id!r} was stopped by the sandbox: {e}"
            ) from None
        except RecursionError:
            raise RenderError(f"prompt {self.prompt_id!r} recursed too deeply") from None
        except Exception as e:  # any error raised inside a template is a render error
            raise RenderError(
                f"prompt {self.prompt_id!r} failed to render: {type(e).__name__}: {e}"
            ) from None


def _undefined_name(error: Exception) -> str | None:
    """The variable a ``KeyError`` (fast path) or ``UndefinedError`` (Jinja2) is about."""
    if isinstance(error, KeyError):
        return str(error.args[0]) if error.args else None
    match = _UNDEFINED_RE.match(str(error))
    return match.group(1) if match else None


def compile_prompt(prompt_id: str, spec: PromptSpec) -> CompiledPrompt:
    """Compile one prompt.

    Raises:
        RenderError: if a template does not compile.
    """
    return CompiledPrompt(prompt_id, spec)
