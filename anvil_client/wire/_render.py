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
from collections.abc import Mapping
from typing import Any

import jinja2
from jinja2 import TemplateSyntaxError, UndefinedError, nodes
from jinja2.exceptions import SecurityError

from anvil_client.errors import MissingVariable, RenderError, TemplateError
from anvil_client.wire._models import PromptSpec
from anvil_client.wire._render_budget import (
    DEFAULT_MAX_OUTPUT,
    DEFAULT_MAX_SECONDS,
    DEFAULT_MAX_STEPS,
    LIMITS,
    MAX_BLOCK_NESTING,
    MAX_CALL_DEPTH,
    MAX_NESTING,
    MAX_PROMPT_SET_CHARS,
    MAX_TEMPLATE_CHARS,
    Limits,
)
from anvil_client.wire._render_sandbox import ENVIRONMENT, AnvilSandbox, undeclared_names

__all__ = [
    "DEFAULT_MAX_OUTPUT",
    "DEFAULT_MAX_SECONDS",
    "DEFAULT_MAX_STEPS",
    "ENVIRONMENT",
    "MAX_BLOCK_NESTING",
    "MAX_CALL_DEPTH",
    "MAX_NESTING",
    "MAX_PROMPT_SET_CHARS",
    "MAX_TEMPLATE_CHARS",
    "AnvilSandbox",
    "CompiledPrompt",
    "check_template_size",
    "compile_prompt",
    "parse_template",
    "spec_variables",
    "template_variables",
    "undeclared_names",
]

_UNDEFINED_RE = re.compile(r"^'([^']+)' is undefined$")
# ``self`` is the TemplateReference in every template, whatever the variables say.
_SPECIAL_NAMES = frozenset({"self"})


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
        token = LIMITS.set(Limits(max(max_output, DEFAULT_MAX_OUTPUT)))
        try:
            for piece in template.root_render_func(template.new_context(dict(variables))):
                size += len(piece)
                if size > max_output:
                    raise SecurityError("output is larger than the render limit")
                parts.append(piece)
        finally:
            LIMITS.reset(token)
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
