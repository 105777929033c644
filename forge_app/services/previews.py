"""Previews of a prompt draft: checked and rendered with its sample values in the client's
own sandbox, in a forked child with a deadline and a memory limit (:mod:`forge_app.isolation`).

    >>> render_preview(PromptDraft(key="hi", kind="text", template="Hi {{ name }}"),
    ...                slots=slots).messages                             # doctest: +SKIP
    [{'role': 'text', 'content': 'Hi ⟨name⟩'}]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from jinja2 import ChainableUndefined

from anvil_client.errors import RenderError
from anvil_client.wire import Message, PromptSpec, compile_prompt
from forge_app.isolation import IsolationBusy, IsolationError, Slots, run_isolated
from forge_app.services.editing import Problem, PromptDraft, check_draft

__all__ = ["PREVIEW_LIMIT", "Preview", "SamplePlaceholder", "render_preview"]

#: The most characters a preview renders.
PREVIEW_LIMIT = 64 * 1024


@dataclass(frozen=True)
class Preview:
    """A rendered preview: ``messages`` ([{role, content}]) or ``problems``."""

    messages: list[dict[str, str]]
    variables: list[str]
    missing: list[str]
    problems: list[Problem]

    def as_json(self) -> dict[str, Any]:
        return {
            "ok": not self.problems,
            "messages": self.messages,
            "variables": self.variables,
            "missing": self.missing,
            "problems": [p.as_json() for p in self.problems],
        }


class SamplePlaceholder(ChainableUndefined):
    """The preview's value for a variable without a sample: printed as ``⟨name⟩``.

    It is an *undefined* value, not text, so placeholder text never feeds a computation:
    ``{{ items|length }}`` is 0, loops over it run no step, ``{% if name %}`` is false and
    ``default(…)`` applies, as for a variable the application leaves out. Arithmetic on it
    stops the preview with a request for a sample value.
    """

    __slots__ = ()

    def __str__(self) -> str:
        return f"⟨{self._undefined_name}⟩"


def render_preview(draft: PromptDraft, *, slots: Slots | None = None) -> Preview:
    """Check and render a draft with its sample values in the client's sandbox.

    A variable without a sample (absent or empty) is a :class:`SamplePlaceholder`, shown as
    ``⟨name⟩`` the same way for text and chat prompts, new or saved. The key
    and metadata are not needed for a preview, so only template problems are reported. All the
    work on the templates happens in a forked child with a deadline and a memory limit.

    Raises:
        IsolationBusy: if every preview slot of this process (``slots``) is taken.
    """
    if draft.kind == "chat":
        empty = not any(m.template.strip() for m in draft.messages)
    else:
        empty = not draft.template.strip()
    if empty:
        return Preview([], [], [], [])
    try:
        return run_isolated(_preview_in_child, draft, slots=slots)
    except IsolationBusy:
        raise
    except IsolationError as e:
        return Preview([], [], [], [Problem("preview", str(e))])


def _preview_in_child(draft: PromptDraft) -> Preview:
    """Runs in the isolated child: check, then compile and render with the client's own code."""
    checked = check_draft(draft)
    template_problems = [
        p for p in checked.problems if p.field.startswith(("template", "messages"))
    ]
    if template_problems:
        # Variables of the last good text stay listed, so sample values typed are not lost.
        kept = sorted(set(checked.variables) | set(draft.samples))
        return Preview([], kept, [], template_problems)
    missing = [v for v in checked.variables if not draft.samples.get(v)]
    values: dict[str, Any] = {
        v: draft.samples[v] if draft.samples.get(v) else SamplePlaceholder(name=v)
        for v in checked.variables
    }
    if draft.kind == "chat":
        spec = PromptSpec(
            template=None,
            messages=tuple(Message(m.role, m.template) for m in draft.messages),
            variables=tuple(checked.variables),
            metadata={},
        )
    else:
        spec = PromptSpec(draft.template, None, tuple(checked.variables), {})
    prompt_id = draft.key or "preview"
    try:
        messages = compile_prompt(prompt_id, spec).render_messages(values, max_output=PREVIEW_LIMIT)
    except RenderError as e:
        message = str(e)
        needed = [v for v in missing if f"'{v}' is undefined" in message]
        if needed:
            message = (
                f"Give {needed[0]} a sample value to see this preview: the template computes "
                "with it."
            )
        return Preview([], checked.variables, missing, [Problem("preview", message)])
    if draft.kind == "text":
        messages = [{"role": "text", "content": messages[0]["content"]}]
    return Preview(messages, checked.variables, missing, [])
