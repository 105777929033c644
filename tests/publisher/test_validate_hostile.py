"""Hostile templates in ``validate_prompts`` and ``anvil-publish``: bounded, one sentence each.

Validation reads templates and evaluates nothing (no constant folding), so a template that
would allocate gigabytes when folded validates in milliseconds; what is too large or nested
too deeply is one problem naming the prompt. Run under an address-space limit, as an
independent check would: never a MemoryError, a RecursionError or a hang.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from anvil_client.errors import ValidationError
from anvil_client.wire import ENVIRONMENT
from anvil_client.wire._render import MAX_PROMPT_SET_CHARS, MAX_TEMPLATE_CHARS
from publisher import validate_prompts
from tests.anvil_client.hostile_templates import HOSTILE, MEMORY_LIMIT, ROOT, run_hostile

REFUSED = {
    "parentheses": "nests too deeply",
    "nested_ifs": "nests too deeply",
    "nested_lists": "nests too deeply",
    "nested_fors": "nests blocks more than 16 deep",
    "plus_chain": "nests more than 32 levels deep",
    "filter_chain": "nests more than 32 levels deep",
    "conditional_chain": "nests too deeply",
    "huge_template": "at most 262,144 are allowed",
}


@pytest.fixture(scope="module")
def results() -> dict[str, dict[str, Any]]:
    return run_hostile("publisher", HOSTILE)


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_validation_of_a_hostile_template_is_bounded(
    results: dict[str, dict[str, Any]], name: str
) -> None:
    result = results[name]
    if name in REFUSED:
        assert result["outcome"] == "ValidationError", result
        assert f"prompt 'hostile.{name}': template" in result["message"]
        assert REFUSED[name] in result["message"]
    else:
        assert result["outcome"] in ("ok", "ValidationError"), result
    for raw in ("MemoryError", "RecursionError", "Traceback", "maximum recursion"):
        assert raw not in result.get("message", "")


def test_constant_expressions_are_not_evaluated_while_validating(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Folded, HOSTILE["join_folded"] builds a 3 GB string: no filter may run while validating.
    calls: list[object] = []

    def spy(*args: object, **kwargs: object) -> str:
        calls.append(args)
        return "x"

    monkeypatch.setitem(ENVIRONMENT.filters, "join", spy)
    prompts = validate_prompts(
        {
            "fold.me": {"template": HOSTILE["join_folded"]},
            "fold.too": {"template": "{% set a = 'ab' | join('-') %}{{ a ~ b }}"},
        }
    )
    assert calls == []
    assert prompts["fold.me"]["variables"] == []
    assert prompts["fold.too"]["variables"] == ["b"]


def test_a_prompt_set_has_a_total_size_limit() -> None:
    template = "x" * MAX_TEMPLATE_CHARS
    count = MAX_PROMPT_SET_CHARS // MAX_TEMPLATE_CHARS + 1
    prompts = {f"p.n{i}": {"template": template} for i in range(count)}
    with pytest.raises(ValidationError) as caught:
        validate_prompts(prompts)
    assert caught.value.problems == [
        f"the templates of this prompt set hold {count * MAX_TEMPLATE_CHARS:,} characters; "
        f"at most {MAX_PROMPT_SET_CHARS:,} are allowed"
    ]
    del prompts["p.n0"]
    assert len(validate_prompts(prompts)) == count - 1  # just under the limit: fine


def test_chat_messages_count_towards_the_total() -> None:
    message = {"role": "user", "template": "y" * MAX_TEMPLATE_CHARS}
    count = MAX_PROMPT_SET_CHARS // MAX_TEMPLATE_CHARS + 1
    with pytest.raises(ValidationError, match="at most"):
        validate_prompts({"chat.one": {"messages": [message] * count}})


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def test_anvil_publish_build_reports_hostile_templates_in_sentences(tmp_path: Path) -> None:
    prompts = {
        "hostile.fold": {"template": HOSTILE["join_folded"]},
        "hostile.parens": {"template": HOSTILE["parentheses"]},
        "hostile.ifs": {"template": HOSTILE["nested_ifs"]},
        "fine.hello": {"template": "Hi {{ name }}"},
    }
    (tmp_path / "prompts").mkdir()
    (tmp_path / "prompts" / "set.json").write_text(json.dumps(prompts), encoding="utf-8")
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "from publisher.cli import main; main()",
            "build",
            str(tmp_path / "prompts"),
            "--project-id",
            "0b9f2b5e-8a35-4a54-9c4b-5a8c3e2a9b11",
            "--version",
            "1.0.0",
            "--out",
            str(tmp_path / "bundle.json"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        preexec_fn=_limit_memory,  # runs before exec, in the child only
        check=False,
    )
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert "prompt 'hostile.parens': template: the template nests too deeply" in done.stderr
    assert "prompt 'hostile.ifs': template: the template nests too deeply" in done.stderr
    assert "hostile.fold" not in done.stderr  # valid: it is only large when evaluated
    assert not (tmp_path / "bundle.json").exists()
