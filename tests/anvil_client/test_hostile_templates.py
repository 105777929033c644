"""Hostile templates end within seconds as one clear error (or a bounded result) in the client.

They run in a child process with an address-space limit (see ``hostile_templates``), as an
independent check would: never a MemoryError, a RecursionError or a hang.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from anvil_client.wire import DEFAULT_MAX_OUTPUT
from tests.anvil_client.hostile_templates import HOSTILE, run_hostile


@pytest.fixture(scope="module")
def results() -> dict[str, dict[str, Any]]:
    return run_hostile("client", HOSTILE)


@pytest.fixture(scope="module")
def prompt_results() -> dict[str, dict[str, Any]]:
    return run_hostile("prompt", HOSTILE)


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_a_hostile_template_ends_as_a_clear_error_or_a_bounded_result(
    results: dict[str, dict[str, Any]], name: str
) -> None:
    _assert_clean(name, results[name])


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_prompt_of_a_published_hostile_template_ends_the_same_way(
    prompt_results: dict[str, dict[str, Any]], results: dict[str, dict[str, Any]], name: str
) -> None:
    _assert_clean(name, prompt_results[name])
    assert prompt_results[name]["outcome"] == results[name]["outcome"]


def _assert_clean(name: str, result: dict[str, Any]) -> None:
    if result["outcome"] == "ok":
        assert result["size"] <= DEFAULT_MAX_OUTPUT
        return
    assert result["outcome"] in ("RenderError", "MissingVariable"), result
    message = result["message"]
    assert f"'hostile.{name}'" in message  # it names the prompt
    for raw in ("MemoryError", "RecursionError", "Traceback", "maximum recursion"):
        assert raw not in message


# Which guard stops what: each of these must be an error, not a (bounded) success.
EXPECTED = {
    "join_folded": "would be too large",
    "macro_exponential": "CPU time|too many loop iterations and calls",
    "set_doubling": "would be too large",
    "join_multiplies": "would be too large",
    "parentheses": "nests",
    "nested_ifs": "nests",
    "nested_lists": "nests",
    "nested_fors": "nests blocks more than 16 deep",
    "plus_chain": "nests more than 32 levels deep",
    "filter_chain": "nests more than 32 levels deep",
    "lipsum": "lipsum",
    "endless_recursion": "nests calls more than 50 deep",
    "loops_nested": "too many loop iterations",
    "loop_heavy_body": "CPU time|too many loop iterations and calls",
    "list_text": "would be too large",
    "macro_output": "would be too large",
    "caller_output": "would be too large",
    "huge_template": "at most 262,144 are allowed",
}


@pytest.mark.parametrize(("name", "fragment"), sorted(EXPECTED.items()))
def test_each_limit_says_which_limit_it_is(
    results: dict[str, dict[str, Any]], name: str, fragment: str
) -> None:
    assert results[name]["outcome"] != "ok"
    assert re.search(fragment, results[name]["message"])
