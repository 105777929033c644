"""Validation of prompt sets: ids, shapes, JSON metadata and templates in the client's sandbox.

    >>> from publisher import validate_prompts
    >>> validate_prompts({"hi": {"template": "Hi {{ name }}"}})["hi"]["variables"]
    ['name']

Every problem is collected before anything is raised, so one run of ``anvil-publish`` (or one
FORGE save) shows all of them. Large sets are validated on every core, since parsing one
template costs a fraction of a millisecond and a set can hold tens of thousands.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from jinja2 import TemplateSyntaxError, nodes

from anvil_client.errors import TemplateError, ValidationError
from anvil_client.wire import ENVIRONMENT, PROMPT_ID_MAX, ROLES, is_prompt_id, parse_template
from anvil_client.wire._render import MAX_PROMPT_SET_CHARS, undeclared_names

__all__ = ["PromptFiles", "SourceLocation", "validate_prompts"]

PROMPT_FIELDS = ("template", "messages", "metadata", "variables")
MESSAGE_FIELDS = ("role", "template")
PARALLEL_THRESHOLD = 2000
_CHUNKS_PER_WORKER = 4


@dataclass(frozen=True)
class SourceLocation:
    """Where a prompt came from: file, line of its id, and where each template's text starts.

    ``templates`` maps ``"template"`` or ``"messages.<index>"`` to ``(line, literal_block)``;
    for a YAML literal block (``|``) template line *k* is file line ``line + k - 1``.
    """

    file: str
    line: int | None = None
    templates: Mapping[str, tuple[int, bool]] = field(default_factory=dict)

    def where(self, template_key: str | None = None, template_line: int | None = None) -> str:
        line = self.line
        if template_key is not None and template_key in self.templates:
            start, literal = self.templates[template_key]
            line = start + template_line - 1 if literal and template_line else start
        return f"{self.file}:{line}" if line is not None else self.file


class PromptFiles(dict[str, dict[str, Any]]):
    """Prompts loaded from files: a plain ``dict`` that also knows where each prompt came from.

    :func:`validate_prompts` (and so ``build_bundle``) uses ``locations`` to name the file and
    line of every problem.
    """

    def __init__(
        self,
        prompts: Iterable[tuple[str, dict[str, Any]]] = (),
        locations: Mapping[str, SourceLocation] | None = None,
    ) -> None:
        super().__init__(prompts)
        self.locations: dict[str, SourceLocation] = dict(locations or {})


def validate_prompts(prompts: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Validate a prompt set and return the prompt objects exactly as they go in a bundle.

    Each returned prompt has ``template`` or ``messages``, ``variables`` (derived from the
    templates with Jinja2's parser, sorted; any given ``variables`` are ignored) and ``metadata``
    (a JSON object, ``{}`` when absent). Input order is kept.

    Raises:
        ValidationError: listing every problem, each naming the prompt id (and the file and
            line when the prompts come from :func:`~publisher.load_prompt_files`).
    """
    if not isinstance(prompts, Mapping):
        raise ValidationError(
            [f"a prompt set must be a mapping of id to prompt, got {_kind(prompts)}"]
        )
    total = sum(_template_chars(value) for value in prompts.values())
    if total > MAX_PROMPT_SET_CHARS:
        raise ValidationError(
            [
                f"the templates of this prompt set hold {total:,} characters; at most "
                f"{MAX_PROMPT_SET_CHARS:,} are allowed"
            ]
        )
    locations: Mapping[str, SourceLocation] = getattr(prompts, "locations", None) or {}
    items = [
        (key, value, locations.get(key) if isinstance(key, str) else None)
        for key, value in prompts.items()
    ]
    results = _validate_items(items)
    normalized: dict[str, dict[str, Any]] = {}
    problems: list[str] = []
    for prompt_id, prompt, prompt_problems in results:
        problems.extend(prompt_problems)
        if prompt is not None:
            normalized[prompt_id] = prompt
    if problems:
        raise ValidationError(problems)
    return normalized


def _template_chars(prompt: Any) -> int:
    """How many characters of template text one (not yet validated) prompt holds."""
    if not isinstance(prompt, Mapping):
        return 0
    sources = [prompt.get("template")]
    messages = prompt.get("messages")
    if isinstance(messages, list):
        sources.extend(m.get("template") for m in messages if isinstance(m, Mapping))
    return sum(len(source) for source in sources if isinstance(source, str))


_Item = tuple[Any, Any, "SourceLocation | None"]
_Result = tuple[str, "dict[str, Any] | None", list[str]]


def _validate_items(items: Sequence[_Item], *, parallel: bool | None = None) -> list[_Result]:
    workers = min(os.cpu_count() or 1, 8)
    single_threaded = threading.active_count() == 1
    if parallel is None:
        # Large sets in a CLI run or a benchmark use every core; a threaded server (the FORGE)
        # validates in-process rather than growing worker processes.
        parallel = len(items) >= PARALLEL_THRESHOLD and single_threaded
    if not parallel or workers < 2:
        return _validate_chunk(items)
    size = math.ceil(len(items) / (workers * _CHUNKS_PER_WORKER))
    chunks = [items[i : i + size] for i in range(0, len(items), size)]
    try:
        import multiprocessing

        # fork() is cheap (children inherit the imports) but only safe in a single-threaded
        # process; beside other threads, a fork server is.
        context = multiprocessing.get_context("fork" if single_threaded else "forkserver")
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            return [result for part in pool.map(_validate_chunk, chunks) for result in part]
    except (OSError, RuntimeError, ValueError):  # no fork here (or a broken pool): stay serial
        return _validate_chunk(items)


def _validate_chunk(items: Sequence[_Item]) -> list[_Result]:
    cache: _Cache = {}
    return [_validate_one(key, value, location, cache) for key, value, location in items]


_Cache = dict[str, tuple[list[str], str | None, int | None]]


class _PromptCheck:
    """The problems found in one prompt, each labelled with its id (and file and line)."""

    def __init__(self, prompt_id: Any, location: SourceLocation | None, cache: _Cache) -> None:
        self.prompt_id = prompt_id
        self.location = location
        self.cache = cache
        self.problems: list[str] = []
        self.variables: set[str] = set()

    def problem(
        self, message: str, template_key: str | None = None, line: int | None = None
    ) -> None:
        label = f"prompt {str(self.prompt_id)[: PROMPT_ID_MAX + 12]!r}"
        if self.location is not None:
            label = f"{self.location.where(template_key, line)}: {label}"
        self.problems.append(f"{label}: {message}")

    def check_template(self, source: Any, key: str, what: str) -> None:
        if not isinstance(source, str):
            self.problem(f"{what} must be a string, got {_kind(source)}", key)
            return
        text_problem = _string_problem(source)
        if text_problem:
            self.problem(f"{what} {text_problem}", key)
            return
        variables, error, line = _template_variables(source, self.cache)
        if error is not None:
            self.problem(f"{what} line {line}: {error}" if line else f"{what}: {error}", key, line)
        self.variables.update(variables)

    def body(self, prompt: Mapping[str, Any], unknown: list[str]) -> dict[str, Any]:
        """``template`` or ``messages``, checked."""
        template, messages = prompt.get("template"), prompt.get("messages")
        if template is not None and messages is not None:
            self.problem("has both 'template' and 'messages'; give exactly one")
        elif template is None and messages is None:
            hint = (
                " (ids are flat: write 'a.b:' instead of nesting 'b' under 'a')" if unknown else ""
            )
            self.problem(f"has neither 'template' nor 'messages'{hint}")
        elif template is not None:
            self.check_template(template, "template", "template")
            return {"template": template}
        else:
            return {"messages": _check_messages(messages, self.problem, self.check_template)}
        return {}

    def metadata(self, prompt: Mapping[str, Any]) -> Mapping[str, Any]:
        """The prompt's metadata (``{}`` when absent or not a mapping), checked."""
        metadata = prompt.get("metadata")
        if metadata is None:
            return {}
        if not isinstance(metadata, Mapping):
            self.problem(f"metadata must be a mapping (a JSON object), got {_kind(metadata)}")
            return {}
        metadata_problem = _json_problem(metadata, "metadata")
        if metadata_problem:
            self.problem(metadata_problem)
        return metadata


def _validate_one(
    prompt_id: Any, prompt: Any, location: SourceLocation | None, cache: _Cache
) -> _Result:
    check = _PromptCheck(prompt_id, location, cache)
    if not isinstance(prompt_id, str):
        check.problem(f"the id must be a string, got {_kind(prompt_id)} (quote it in YAML)")
        return str(prompt_id), None, check.problems
    if not is_prompt_id(prompt_id):
        check.problem(_bad_id_reason(prompt_id))
    if not isinstance(prompt, Mapping):
        check.problem(f"must be a mapping with 'template' or 'messages', got {_kind(prompt)}")
        return prompt_id, None, check.problems
    unknown = [str(k) for k in prompt if k not in PROMPT_FIELDS]
    for name in unknown:
        check.problem(
            f"unknown field {name!r} (a prompt has 'template' or 'messages', and 'metadata')"
        )
    out = check.body(prompt, unknown)
    metadata = check.metadata(prompt)
    if check.problems:
        return prompt_id, None, check.problems
    out["variables"] = sorted(check.variables)
    out["metadata"] = _plain_json(metadata)
    return prompt_id, out, check.problems


def _check_messages(messages: Any, problem: Any, check_template: Any) -> list[dict[str, str]]:
    if not isinstance(messages, list) or not messages:
        problem(f"messages must be a non-empty list of {{role, template}}, got {_kind(messages)}")
        return []
    out = []
    for index, message in enumerate(messages):
        what = f"message {index + 1}"
        key = f"messages.{index}"
        if not isinstance(message, Mapping):
            problem(f"{what} must be a mapping with 'role' and 'template', got {_kind(message)}")
            continue
        for name in message:
            if name not in MESSAGE_FIELDS:
                problem(f"{what} has unknown field {str(name)!r} (use 'role' and 'template')")
        role = message.get("role")
        if role not in ROLES:
            problem(f"{what} has role {role!r}; roles are {', '.join(ROLES)}")
        else:
            what = f"{what} ({role})"
        if "template" not in message:
            problem(f"{what} has no 'template'")
            continue
        check_template(message["template"], key, what)
        out.append({"role": role, "template": message["template"]})
    return out


def _template_variables(source: str, cache: _Cache) -> tuple[list[str], str | None, int | None]:
    """(variables, error, error line) of one template; identical templates are parsed once."""
    hit = cache.get(source)
    if hit is None:
        hit = _analyse(source)
        cache[source] = hit
    return hit


def _analyse(source: str) -> tuple[list[str], str | None, int | None]:
    try:
        tree = parse_template(source)
    except TemplateError as e:
        message = str(e)
        if e.lineno is not None and message.startswith(f"line {e.lineno}: "):
            message = message[len(f"line {e.lineno}: ") :]
        return [], message, e.lineno
    # Stricter than Jinja2, which accepts an unknown filter inside {% if %} until that branch
    # renders: in a prompt it is always a mistake, so it fails here rather than in production.
    for node in tree.find_all((nodes.Filter, nodes.Test)):
        if isinstance(node, nodes.Filter) and node.name not in ENVIRONMENT.filters:
            return [], f"unknown filter {node.name!r}", node.lineno
        if isinstance(node, nodes.Test) and node.name not in ENVIRONMENT.tests:
            return [], f"unknown test {node.name!r}", node.lineno
    try:
        return _undeclared(tree), None, None
    except TemplateSyntaxError as e:  # what the code generator refuses (loop as a target, …)
        return [], e.message or str(e), e.lineno
    except RecursionError:  # parse_template bounds nesting, so this is only a last resort
        return [], "the template nests too deeply; simplify it", None
    except Exception as e:  # whatever else the code generator refuses
        return [], f"does not compile: {type(e).__name__}: {e}", None


# Node types that neither bind names nor open scopes: in a template made only of these, every
# loaded name that is not a global is undeclared, which is what jinja2.meta reports.
_PLAIN_NODES = (
    nodes.Template,
    nodes.Output,
    nodes.TemplateData,
    nodes.Const,
    nodes.If,
    nodes.Filter,
    nodes.Test,
    nodes.Getattr,
    nodes.Getitem,
    nodes.Slice,
    nodes.Compare,
    nodes.Operand,
    nodes.BinExpr,
    nodes.UnaryExpr,
    nodes.Concat,
    nodes.CondExpr,
    nodes.List,
    nodes.Dict,
    nodes.Pair,
    nodes.Keyword,
    nodes.Call,
)
_SPECIAL_NAMES = frozenset({"self", "loop", "caller", "varargs", "kwargs", "super"})


def _undeclared(tree: nodes.Template) -> list[str]:
    """``jinja2.meta.find_undeclared_variables``, sorted, with a fast path for plain templates.

    Running Jinja2's code generator costs as much as parsing; templates without loops,
    assignments, macros, blocks or constant sub-expressions need only a walk of the tree.
    Anything else goes through Jinja2's introspection (which evaluates nothing: see
    ``anvil_client.wire._render.undeclared_names``).

    Raises:
        TemplateSyntaxError: what Jinja2's code generator refuses.
    """
    names: set[str] = set()
    try:
        _collect(tree, names)
    except _Fallback:
        return sorted(undeclared_names(tree))  # Jinja2's introspection, without constant folding
    return sorted(names)


class _Fallback(Exception):
    """The fast walk cannot vouch for this template."""


def _collect(node: nodes.Node, names: set[str]) -> bool:
    """Add the loaded names under ``node``; True if there is any (so nothing can be folded)."""
    if isinstance(node, nodes.Name):
        if node.ctx != "load" or node.name in _SPECIAL_NAMES:
            raise _Fallback
        if node.name not in ENVIRONMENT.globals:
            names.add(node.name)
        return True
    if isinstance(node, nodes.Const | nodes.TemplateData):
        return False
    if not (
        isinstance(node, _PLAIN_NODES) or (isinstance(node, nodes.Tuple) and node.ctx == "load")
    ):
        raise _Fallback
    found = False
    for child in node.iter_child_nodes():
        found = _collect(child, names) or found
    if not found and isinstance(node, nodes.Expr):
        raise _Fallback
    return found


def _bad_id_reason(prompt_id: str) -> str:
    if len(prompt_id) > PROMPT_ID_MAX:
        return f"id is {len(prompt_id)} characters long; at most {PROMPT_ID_MAX} are allowed"
    return (
        "id is invalid: use lowercase letters, digits and '_', with dotted segments that may "
        "also hold '-' (like 'support.chat-v2')"
    )


def _string_problem(text: str) -> str | None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid Unicode text (it holds a lone surrogate)"
    return None


def _json_problem(value: Any, path: str, depth: int = 0) -> str | None:
    """Why ``value`` is not plain JSON (string keys, finite numbers), or None."""
    if depth > 64:
        return f"{path} is nested too deeply"
    if value is None or isinstance(value, bool | int):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{path} holds {value}, which JSON cannot carry"
    if isinstance(value, str):
        problem = _string_problem(value)
        return f"{path} {problem}" if problem else None
    if isinstance(value, Mapping):
        return _json_mapping_problem(value, path, depth)
    if isinstance(value, list | tuple):
        return _first_problem(
            _json_problem(item, f"{path}[{index}]", depth + 1) for index, item in enumerate(value)
        )
    return f"{path} holds a {_kind(value)}, which is not JSON (quote dates and times in YAML)"


def _json_mapping_problem(value: Mapping[Any, Any], path: str, depth: int) -> str | None:
    for key, item in value.items():
        if not isinstance(key, str):
            return f"{path} has a key {key!r} that is not a string (quote it in YAML)"
        found = _json_problem(item, f"{path}.{key}", depth + 1)
        if found:
            return found
    return None


def _first_problem(problems: Iterable[str | None]) -> str | None:
    """The first problem of a lazy sequence (later items are not checked)."""
    return next((found for found in problems if found), None)


def _plain_json(value: Any) -> Any:
    """A deep copy made of dict, list, str, int, float, bool and None only."""
    if isinstance(value, Mapping):
        return {key: _plain_json(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain_json(item) for item in value]
    return value


def _kind(value: Any) -> str:
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    return "nothing" if value is None else type(value).__name__
