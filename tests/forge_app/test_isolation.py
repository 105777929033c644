"""Previews render in a forked child with a deadline and a memory limit."""

from __future__ import annotations

import pytest

from anvil_client.errors import MissingVariable
from anvil_client.wire import PromptSpec, compile_prompt
from forge_app.editing import PromptDraft, render_preview
from forge_app.isolation import IsolationError, run_isolated


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
    assert any("longer than" in p.message for p in preview.problems)
