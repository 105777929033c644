"""Readable per-prompt, per-line diffs."""

from __future__ import annotations

from typing import Any

from forge_app.diffing import diff_prompt_sets


def _text(**prompts: str) -> dict[str, dict[str, Any]]:
    return {
        key.replace("_", "."): {"template": text, "metadata": {}} for key, text in prompts.items()
    }


def test_unchanged_prompts_are_counted_not_shown() -> None:
    diff = diff_prompt_sets(_text(a="x", b="y"), _text(a="x", b="y"))
    assert diff.empty and diff.unchanged == 2


def test_added_removed_and_changed() -> None:
    diff = diff_prompt_sets(_text(a="x", b="y"), _text(b="y2", c="z"))
    assert [(p.key, p.status) for p in diff.prompts] == [
        ("a", "removed"),
        ("b", "changed"),
        ("c", "added"),
    ]
    assert diff.prompts[0].removed == 1 and diff.prompts[2].added == 1


def test_line_numbers_context_and_inline_highlight() -> None:
    old = "\n".join(f"line {i}" for i in range(1, 21))
    new = old.replace("line 10", "line ten")
    section = diff_prompt_sets(_text(a=old), _text(a=new)).prompts[0].sections[0]
    kinds = [row.kind for row in section.rows]
    assert kinds == ["skip", "ctx", "ctx", "ctx", "del", "add", "ctx", "ctx", "ctx", "skip"]
    deleted = section.rows[4]
    added = section.rows[5]
    assert (deleted.old_no, added.new_no) == (10, 10)
    assert ("10", True) in deleted.parts and ("ten", True) in added.parts
    assert ("line ", False) in added.parts


def test_chat_messages_and_metadata() -> None:
    old = {
        "c": {"messages": [{"role": "system", "template": "Be nice"}], "metadata": {"model": "a"}}
    }
    new = {
        "c": {
            "messages": [
                {"role": "system", "template": "Be nice"},
                {"role": "user", "template": "{{ q }}"},
            ],
            "metadata": {"model": "b", "temperature": 0.1},
        }
    }
    sections = diff_prompt_sets(old, new).prompts[0].sections
    assert [s.label for s in sections] == ["message 2 · user", "metadata"]
    metadata = [(r.kind, r.text) for r in sections[1].rows]
    assert ("del", 'model: "a"') in metadata and ("add", 'model: "b"') in metadata
    assert ("add", "temperature: 0.1") in metadata


def test_role_change_is_labelled() -> None:
    old = {"c": {"messages": [{"role": "user", "template": "x"}]}}
    new = {"c": {"messages": [{"role": "assistant", "template": "x"}]}}
    assert diff_prompt_sets(old, new).prompts[0].sections[0].label == "message 1 · user → assistant"


def test_variables_are_not_part_of_the_comparison() -> None:
    a = {"k": {"template": "{{ x }}", "variables": ["x"], "metadata": {}}}
    b = {"k": {"template": "{{ x }}"}}
    assert diff_prompt_sets(a, b).empty
