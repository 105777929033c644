"""The prompt editor's model: form data → a checked prompt (previews: :mod:`.previews`).

    >>> draft = PromptDraft(key="welcome.message", kind="text", template="Hi {{ name }}")
    >>> checked = check_draft(draft)
    >>> checked.variables, checked.problems
    (['name'], [])

Validation uses the same code as publishing: each template is parsed by
``anvil_client.wire.parse_template`` (so errors carry the template's line) and the whole prompt
by ``publisher.validate_prompts``; previews render with ``anvil_client.wire.compile_prompt``.
Templates are untrusted: each is at most 256 KiB and a prompt's at most 8 MiB in all
(``anvil_client.wire._render`` bounds their nesting, and nothing is evaluated while checking),
and a preview checks and renders entirely in a forked child
(:func:`forge_app.services.previews.render_preview`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from anvil_client.errors import TemplateError, ValidationError
from anvil_client.wire import (
    PROMPT_ID_MAX,
    ROLES,
    is_prompt_id,
    spec_variables,
)
from anvil_client.wire._render import MAX_PROMPT_SET_CHARS, MAX_TEMPLATE_CHARS

__all__ = [
    "KNOWN_METADATA",
    "CheckedPrompt",
    "MessageDraft",
    "Problem",
    "PromptDraft",
    "check_draft",
    "prompt_file_entry",
    "search_text_of",
]

KNOWN_METADATA = ("description", "model", "temperature", "max_tokens", "tags")
MAX_MESSAGES = 100


@dataclass
class MessageDraft:
    role: str = "user"
    template: str = ""


@dataclass
class PromptDraft:
    """What the editor form holds, as typed (numbers stay strings until checked)."""

    key: str = ""
    kind: str = "text"
    template: str = ""
    messages: list[MessageDraft] = field(default_factory=list)
    description: str = ""
    model: str = ""
    temperature: str = ""
    max_tokens: str = ""
    tags: str = ""
    extra_metadata: str = ""
    samples: dict[str, str] = field(default_factory=dict)
    revision: int | None = None

    @classmethod
    def from_form(cls, form: Mapping[str, str]) -> PromptDraft:
        """Read the editor form (``messages-<n>-role`` / ``messages-<n>-template`` rows,
        ``sample-<name>`` values). Empty chat rows are dropped."""
        messages: list[MessageDraft] = []
        indexes = sorted(
            {
                int(name.split("-")[1])
                for name in form
                if name.startswith("messages-") and name.split("-")[1].isdigit()
            }
        )
        for index in indexes[:MAX_MESSAGES]:
            template = _newlines(form.get(f"messages-{index}-template", ""))
            role = form.get(f"messages-{index}-role", "user")
            if template.strip() or form.get(f"messages-{index}-keep"):
                messages.append(MessageDraft(role=role, template=template))
        samples = {
            name[len("sample-") :]: _newlines(value)
            for name, value in form.items()
            if name.startswith("sample-") and len(name) > len("sample-")
        }
        revision = form.get("revision", "")
        return cls(
            key=form.get("key", "").strip(),
            kind="chat" if form.get("kind") == "chat" else "text",
            template=_newlines(form.get("template", "")),
            messages=messages,
            description=form.get("description", "").strip(),
            model=form.get("model", "").strip(),
            temperature=form.get("temperature", "").strip(),
            max_tokens=form.get("max_tokens", "").strip(),
            tags=form.get("tags", "").strip(),
            extra_metadata=form.get("extra_metadata", "").strip(),
            samples=samples,
            revision=int(revision) if revision.isdigit() else None,
        )

    @classmethod
    def from_entry(
        cls,
        key: str,
        entry: Mapping[str, Any],
        *,
        samples: Mapping[str, str] | None = None,
        revision: int | None = None,
    ) -> PromptDraft:
        """The form state of a stored prompt (prompt-file shape: template|messages, metadata).

        Metadata whose value does not fit its field (say, ``tags: "a, b"`` from a file) stays
        in the extra-metadata JSON, so editing never changes what was not touched.
        """
        metadata = dict(entry.get("metadata") or {})
        draft = cls(key=key, samples=dict(samples or {}), revision=revision)
        if entry.get("messages") is not None:
            draft.kind = "chat"
            draft.messages = [
                MessageDraft(role=str(m.get("role", "user")), template=str(m.get("template", "")))
                for m in entry["messages"]
            ]
        else:
            draft.template = str(entry.get("template") or "")
        for name in ("description", "model"):
            value = metadata.get(name)
            if isinstance(value, str) and value and value == value.strip():
                setattr(draft, name, metadata.pop(name))
        temperature = metadata.get("temperature")
        if isinstance(temperature, int | float) and not isinstance(temperature, bool):
            draft.temperature = _number_text(metadata.pop("temperature"))
        max_tokens = metadata.get("max_tokens")
        if isinstance(max_tokens, int) and not isinstance(max_tokens, bool):
            draft.max_tokens = str(metadata.pop("max_tokens"))
        tags = metadata.get("tags")
        if (
            isinstance(tags, list)
            and tags
            and len(set(tags)) == len(tags)
            and all(isinstance(t, str) and t and t.strip() == t and "," not in t for t in tags)
        ):
            draft.tags = ", ".join(metadata.pop("tags"))
        if metadata:
            draft.extra_metadata = json.dumps(
                metadata, indent=2, ensure_ascii=False, sort_keys=True
            )
        return draft

    @property
    def message_rows(self) -> list[MessageDraft]:
        """Rows to show in the chat editor: the messages, or one empty system+user pair."""
        if self.messages:
            return self.messages
        return [MessageDraft("system", ""), MessageDraft("user", "")]


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a draft. ``field`` names the form field (``template``,
    ``messages-2-template``, ``temperature``…); ``line`` is the template's line, if known."""

    field: str
    message: str
    line: int | None = None

    def as_json(self) -> dict[str, Any]:
        return {"field": self.field, "message": self.message, "line": self.line}


@dataclass
class CheckedPrompt:
    """A draft after checking: ``entry`` (prompt-file shape) is set only when there are no
    problems; ``variables`` are found even when other fields have problems."""

    entry: dict[str, Any] | None
    variables: list[str]
    problems: list[Problem]

    @property
    def ok(self) -> bool:
        return not self.problems and self.entry is not None


def check_draft(draft: PromptDraft) -> CheckedPrompt:
    """Check every field of a draft and collect every problem."""
    problems: list[Problem] = []
    key_problem = _key_problem(draft.key)
    if key_problem is not None:
        problems.append(Problem("key", key_problem))
    sources = _template_sources(draft, problems)
    variables = _variables(sources, problems)
    metadata = _metadata(draft, problems)
    entry: dict[str, Any] | None = None
    if not problems:
        entry = prompt_entry_of(draft, metadata)
        try:
            from publisher import validate_prompts

            validate_prompts({draft.key: entry})
        except ValidationError as e:  # anything the field checks above did not catch
            problems.extend(Problem("prompt", p) for p in e.problems)
            entry = None
    return CheckedPrompt(entry=entry, variables=sorted(variables), problems=problems)


def _key_problem(key: str) -> str | None:
    if not key:
        return "Give the prompt an id, like welcome.message."
    if is_prompt_id(key):
        return None
    if len(key) > PROMPT_ID_MAX:
        return f"The id is {len(key)} characters long; at most {PROMPT_ID_MAX}."
    return (
        "Use lowercase letters, digits and _, with dot-separated parts that may also "
        "hold - (like support.reply-v2)."
    )


def _template_sources(draft: PromptDraft, problems: list[Problem]) -> list[tuple[str, str]]:
    """The draft's templates as (field, text), after the checks of its shape (at most
    :data:`MAX_PROMPT_SET_CHARS` in all, else none to read)."""
    sources: list[tuple[str, str]] = []
    if draft.kind == "chat":
        if not draft.messages:
            problems.append(Problem("messages", "A chat prompt needs at least one message."))
        for index, row in enumerate(draft.messages):
            if row.role not in ROLES:
                problems.append(
                    Problem(f"messages-{index}-role", f"Role must be one of {', '.join(ROLES)}.")
                )
            sources.append((f"messages-{index}-template", row.template))
    else:
        if not draft.template.strip():
            problems.append(Problem("template", "The template is empty."))
        sources.append(("template", draft.template))
    total = sum(len(source) for _, source in sources)
    if total > MAX_PROMPT_SET_CHARS:
        problems.append(
            Problem(
                "template" if draft.kind != "chat" else "messages",
                f"The templates hold {total:,} characters; at most {MAX_PROMPT_SET_CHARS:,} "
                "are allowed in one prompt.",
            )
        )
        return []  # too much to read at all
    return sources


def _variables(sources: list[tuple[str, str]], problems: list[Problem]) -> set[str]:
    """The variables the templates use; a template too long or not valid is a problem."""
    variables: set[str] = set()
    for name, source in sources:
        if len(source) > MAX_TEMPLATE_CHARS:
            problems.append(
                Problem(
                    name,
                    f"The template is {len(source):,} characters long; at most "
                    f"{MAX_TEMPLATE_CHARS:,} are allowed.",
                )
            )
            continue
        try:
            variables.update(spec_variables(source, None))
        except TemplateError as e:
            message = str(e)
            prefix = f"line {e.lineno}: "
            if message.startswith(prefix):
                message = message[len(prefix) :]
            problems.append(Problem(name, message[:1].upper() + message[1:], e.lineno))
    return variables


def prompt_entry_of(draft: PromptDraft, metadata: dict[str, Any]) -> dict[str, Any]:
    entry: dict[str, Any] = {"metadata": metadata}
    if draft.kind == "chat":
        entry["messages"] = [{"role": m.role, "template": m.template} for m in draft.messages]
    else:
        entry["template"] = draft.template
    return entry


def _metadata(draft: PromptDraft, problems: list[Problem]) -> dict[str, Any]:
    metadata = _extra_metadata(draft.extra_metadata, problems)
    if draft.description:
        metadata["description"] = draft.description
    if draft.model:
        metadata["model"] = draft.model
    if draft.temperature:
        temperature = _number(draft.temperature)
        if not 0 <= temperature <= 2:
            problems.append(Problem("temperature", "Temperature is a number from 0 to 2."))
        else:
            metadata["temperature"] = temperature
    if draft.max_tokens:
        if not draft.max_tokens.isdigit() or int(draft.max_tokens) < 1:
            problems.append(Problem("max_tokens", "Max tokens is a whole number above 0."))
        else:
            metadata["max_tokens"] = int(draft.max_tokens)
    tags = [t.strip() for t in draft.tags.split(",") if t.strip()] if draft.tags else []
    if tags:
        metadata["tags"] = list(dict.fromkeys(tags))
    return metadata


def _extra_metadata(text: str, problems: list[Problem]) -> dict[str, Any]:
    """The JSON object of the extra metadata field (empty: none, or a problem)."""
    if not text:
        return {}
    try:
        extra = json.loads(text)
    except ValueError as e:
        problems.append(Problem("extra_metadata", f"This is not valid JSON: {e}."))
        return {}
    if not isinstance(extra, dict):
        problems.append(Problem("extra_metadata", 'Give a JSON object, like {"team": "growth"}.'))
        return {}
    return dict(extra)


def _number(text: str) -> float:
    """``text`` as an int or float (NaN if it is neither)."""
    try:
        return int(text) if text.isdigit() else float(text)
    except ValueError:
        return math.nan


def prompt_file_entry(
    kind: str,
    template: str | None,
    messages: list[dict[str, str]] | None,
    meta: Mapping[str, Any],
) -> dict[str, Any]:
    """A stored prompt in prompt-file shape (what export writes and bundles are built from)."""
    entry: dict[str, Any] = {"metadata": dict(meta)}
    if kind == "chat":
        entry["messages"] = [{"role": m["role"], "template": m["template"]} for m in messages or []]
    else:
        entry["template"] = template or ""
    return entry


def search_text_of(key: str, entry: Mapping[str, Any]) -> str:
    """Lower-cased text that project search matches against (id, templates, description)."""
    parts = [key]
    if entry.get("template") is not None:
        parts.append(str(entry["template"]))
    for message in entry.get("messages") or []:
        parts.append(str(message.get("template", "")))
    metadata = entry.get("metadata") or {}
    if isinstance(metadata.get("description"), str):
        parts.append(metadata["description"])
    return "\n".join(parts).lower()


def _newlines(text: str) -> str:
    """Browsers send CRLF in textareas; templates use LF."""
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _number_text(value: float | int) -> str:
    return repr(value)
