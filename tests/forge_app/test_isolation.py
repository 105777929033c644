"""Previews render in a forked child with a deadline and a memory limit."""

from __future__ import annotations

import pytest

from anvil_client.errors import MissingVariable
from anvil_client.wire import PromptSpec, compile_prompt
from anvil_client.wire import _render as render_module
from forge_app.isolation import IsolationBusy, IsolationError, Slots, run_isolated
from forge_app.services.editing import PromptDraft
from forge_app.services.previews import render_preview


def _render(source: str, values: dict[str, object]) -> str:
    return compile_prompt("p", PromptSpec(source, None, (), {})).render(values)


def test_result_comes_back_from_the_child() -> None:
    assert run_isolated(_render, "Hi {{ name }}", {"name": "Ann"}) == "Hi Ann"


def test_errors_raised_in_the_child_are_raised_in_the_parent() -> None:
    with pytest.raises(MissingVariable, match="name"):
        run_isolated(_render, "Hi {{ name }}", {})


def _spin() -> None:
    while True:
        pass


def test_a_runaway_computation_is_stopped_at_the_deadline() -> None:
    with pytest.raises(IsolationError, match="longer than"):
        run_isolated(_spin, timeout=0.5)


def test_memory_is_limited_in_the_child() -> None:
    def hog() -> int:
        blocks = [bytearray(32 * 1024 * 1024) for _ in range(64)]  # 2 GiB
        return len(blocks)

    with pytest.raises(IsolationError, match="memory"):
        run_isolated(hog, extra_memory=128 * 1024 * 1024)


# Under the sandbox's loop budget, but each step sorts 900,000 numbers: hours of CPU.
SLOW_TEMPLATE = "{% for a in range(100000) %}{% set x = ([3, 1, 2] * 300000) | sort %}{% endfor %}"


def test_preview_reports_a_runaway_template_as_a_problem() -> None:
    draft = PromptDraft(key="x.loop", kind="text", template=SLOW_TEMPLATE)
    preview = render_preview(draft)
    assert preview.messages == []
    # The sandbox's CPU limit stops it; on a busy machine the preview's wall-clock deadline
    # may come first. Either way it is a problem, and no output.
    assert any(
        ("CPU time" in p.message and "x.loop" in p.message) or "longer than" in p.message
        for p in preview.problems
    ), preview.problems


def test_the_deadline_stops_what_the_sandbox_would_let_run(monkeypatch: pytest.MonkeyPatch) -> None:
    # Without the sandbox's CPU limit (inherited by the forked child), the deadline still holds.
    monkeypatch.setattr(render_module, "DEFAULT_MAX_SECONDS", 3600.0)
    draft = PromptDraft(key="x.loop", kind="text", template=SLOW_TEMPLATE)
    preview = render_preview(draft)
    assert preview.messages == []
    assert any("longer than" in p.message for p in preview.problems)


def test_a_preview_never_reads_the_template_in_the_calling_process(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Checking and rendering both happen in the child (which appends to its own copy).
    parsed: list[str] = []
    original = render_module.parse_template

    def recording(source: str) -> object:
        parsed.append(source)
        return original(source)

    monkeypatch.setattr(render_module, "parse_template", recording)
    preview = render_preview(PromptDraft(key="k", template="{{ a }}!", samples={"a": "1"}))
    assert preview.messages == [{"role": "text", "content": "1!"}]
    assert parsed == []
    render_module.template_variables("{{ b }}")
    assert parsed == ["{{ b }}"]  # the recorder does see calls made in this process


def test_at_most_the_given_number_of_children_run_at_once() -> None:
    slots = Slots(1)
    with slots.take(), pytest.raises(IsolationBusy, match="already running"):
        run_isolated(sum, [1], slots=slots)
    assert run_isolated(sum, [1, 2], slots=slots) == 3  # the slot is free again


def test_a_busy_preview_is_raised_for_the_caller_to_answer() -> None:
    slots = Slots(1)
    draft = PromptDraft(key="k", template="{{ a }}")
    with slots.take(), pytest.raises(IsolationBusy):
        render_preview(draft, slots=slots)
