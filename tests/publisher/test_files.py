"""Prompt files: load a directory, parse YAML/JSON with lines, dump and round-trip exactly."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from anvil_client.errors import ConfigError, ValidationError
from publisher import dump_prompt_file, load_prompt_files, parse_prompt_file, validate_prompts


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_loads_a_directory_recursively(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", "welcome:\n  template: Hi {{ name }}\n")
    write(tmp_path / "sub" / "b.yml", "chat:\n  messages:\n    - role: user\n      template: x\n")
    write(tmp_path / "sub" / "deeper" / "c.json", '{"err.nf": {"template": "no", "metadata": {}}}')
    write(tmp_path / "notes.txt", "ignored")
    write(tmp_path / ".hidden" / "d.yaml", "hidden:\n  template: x\n")
    loaded = load_prompt_files(tmp_path)
    assert sorted(loaded) == ["chat", "err.nf", "welcome"]
    assert loaded.locations["chat"].file == "sub/b.yml"
    assert loaded.locations["err.nf"].where() == "sub/deeper/c.json:1"
    assert validate_prompts(loaded)["welcome"]["variables"] == ["name"]


def test_duplicate_id_across_files_names_both(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", "x.y:\n  template: one\n")
    write(tmp_path / "b" / "c.json", '{\n  "x.y": {"template": "two"}\n}')
    with pytest.raises(ValidationError) as caught:
        load_prompt_files(tmp_path)
    [problem] = caught.value.problems
    assert problem == "prompt 'x.y' is defined twice: in a.yaml:1 and in b/c.json:2"


def test_all_problems_at_once_with_file_and_line(tmp_path: Path) -> None:
    write(tmp_path / "broken.yaml", "a: [\n")
    write(tmp_path / "bad.json", '{"a": {"template": "x"},\n "b": }')
    write(
        tmp_path / "templates.yaml",
        "ok:\n  template: fine\nbad.one:\n  template: |\n    line one\n    {{ }}\n",
    )
    with pytest.raises(ValidationError) as caught:
        load_prompt_files(tmp_path)
    problems = caught.value.problems
    assert any(p.startswith("bad.json:2: JSON error") for p in problems)
    assert any(p.startswith("broken.yaml:2: YAML error") for p in problems)
    # the template's own line 2 is line 6 of the file
    assert any(
        p.startswith("templates.yaml:6: prompt 'bad.one': template line 2:") for p in problems
    )


def test_duplicate_id_within_a_file(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match=r"a.yaml:3: prompt 'k' is defined twice in this"):
        parse_prompt_file("k:\n  template: a\nk:\n  template: b\n", "a.yaml")
    with pytest.raises(ValidationError, match=r"a.json:2: prompt 'k' is defined twice"):
        parse_prompt_file('{"k": {"template": "a"},\n"k": {"template": "b"}}', "a.json")


def test_not_a_mapping_and_non_string_ids() -> None:
    with pytest.raises(ValidationError, match=r"a.yaml:1: a prompt file must be a mapping"):
        parse_prompt_file("- a\n- b\n", "a.yaml")
    with pytest.raises(ValidationError, match=r"a.json:1: a prompt file must be a JSON object"):
        parse_prompt_file("[1]", "a.json")
    with pytest.raises(ValidationError, match=r"a.yaml:1: prompt id 123 must be a string"):
        parse_prompt_file("123:\n  template: a\n", "a.yaml")


def test_empty_files_are_empty_sets() -> None:
    assert parse_prompt_file("", "a.yaml") == {}
    assert parse_prompt_file("# only a comment\n", "a.yaml") == {}
    assert parse_prompt_file("  \n", "a.json") == {}


def test_aliases_are_refused() -> None:
    bomb = "a: &a ['x','x']\nb: &b [*a,*a]\nc: [*b,*b]\n"
    with pytest.raises(ValidationError, match="anchors and aliases are not supported"):
        parse_prompt_file(bomb, "bomb.yaml")


def test_timestamps_stay_strings() -> None:
    parsed = parse_prompt_file("a:\n  template: x\n  metadata:\n    since: 2024-01-01\n", "a.yml")
    assert parsed["a"]["metadata"]["since"] == "2024-01-01"


def test_missing_or_empty_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_prompt_files(tmp_path / "nope")
    with pytest.raises(ValidationError, match="holds no"):
        load_prompt_files(tmp_path)


def test_dump_is_readable_yaml_with_literal_blocks(prompts: dict[str, Any]) -> None:
    text = dump_prompt_file(prompts)
    assert "greeting.fancy:\n  template: |\n    {% if vip %}" in text
    assert "Résumé" in text  # unicode as is, not escaped
    assert text.index("greeting.fancy") < text.index("support.chat") < text.index("welcome")
    assert parse_prompt_file(text, "x.yaml") == {
        k: {f: v for f, v in p.items() if f != "metadata" or v} for k, p in prompts.items()
    }
    assert dump_prompt_file(parse_prompt_file(text, "x.yaml")) == text


def test_dump_drops_variables_and_empty_metadata() -> None:
    text = dump_prompt_file({"a": {"template": "{{ x }}", "variables": ["x"], "metadata": {}}})
    assert text == "a:\n  template: '{{ x }}'\n"


def test_dump_of_bundle_snapshot_round_trips_through_validation(vectors: dict[str, Any]) -> None:
    snapshot = json.loads(vectors["bundle_1_0_0"])["snapshot"]
    again = validate_prompts(parse_prompt_file(dump_prompt_file(snapshot), "x.yaml"))
    assert again == snapshot


TEXT = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",)),  # JSON and YAML carry no surrogates
    max_size=60,
)
LINES = st.lists(
    st.sampled_from(["", " ", "  indented", "{{ x }}", "- item", "#", "a: b", "\t", "é ☃", "\r"])
    | TEXT,
    max_size=6,
).map("\n".join)
TEMPLATES = st.one_of(TEXT, LINES, LINES.map(lambda s: s + "\n"), LINES.map(lambda s: s + "\n\n"))
METADATA = st.dictionaries(
    st.text(min_size=1, max_size=10),
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=False, allow_infinity=False),
        TEXT,
        st.lists(TEXT, max_size=3),
    ),
    max_size=4,
)
PROMPT = st.one_of(
    st.fixed_dictionaries({"template": TEMPLATES}, optional={"metadata": METADATA}),
    st.fixed_dictionaries(
        {
            "messages": st.lists(
                st.fixed_dictionaries(
                    {
                        "role": st.sampled_from(["system", "user", "assistant"]),
                        "template": TEMPLATES,
                    }
                ),
                min_size=1,
                max_size=3,
            )
        },
        optional={"metadata": METADATA},
    ),
)
IDS = st.from_regex(r"\A[a-z0-9_]{1,8}(\.[a-z0-9_-]{1,8}){0,2}\Z")


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(IDS, PROMPT, max_size=4))
def test_dump_round_trips_exactly(prompts: dict[str, dict[str, Any]]) -> None:
    expected = {k: {f: v for f, v in p.items() if f != "metadata" or v} for k, p in prompts.items()}
    assert parse_prompt_file(dump_prompt_file(prompts), "x.yaml") == expected


@pytest.mark.parametrize(
    "template",
    [
        "a\x85b\n",
        "line\u2028sep\n",
        "\ufeffbom\nx",
        "trailing  \nspaces",
        "\n\nleading newlines",
        "  indented first\nline",
        "ends with many\n\n\n",
        "tab\there\n",
        "crlf\r\nline",
        "\n",
        "emoji 🎉\nx",
        "---\n...\n",
    ],
)
def test_tricky_text_round_trips(template: str) -> None:
    prompts = {"a": {"template": template, "metadata": {"k": template}}}
    assert parse_prompt_file(dump_prompt_file(prompts), "a.yaml") == prompts


RTL = "مرحبا {{ name }} \u200f\u05e9\u05dc\u05d5\u05dd"  # Arabic, a right-to-left mark, Hebrew


def test_dump_writes_emoji_cjk_and_rtl_as_they_read() -> None:
    prompts: dict[str, dict[str, Any]] = {
        "a.emoji": {"template": "Hi {{ name }} 👋", "metadata": {"icon": "🎉", "tags": ["✅ ok"]}},
        "a.multi": {"template": "Line one 👋\nline two 🚀\n"},
        "b.cjk": {"template": "欢迎 {{ name }}\uff0cこんにちは、안녕하세요"},
        "c.rtl": {"template": RTL},
    }
    text = dump_prompt_file(prompts)
    assert "\\U" not in text and "\\u" not in text
    assert "template: Hi {{ name }} 👋\n" in text
    assert "icon: 🎉\n" in text
    assert "a.multi:\n  template: |\n    Line one 👋\n    line two 🚀\n" in text
    assert "欢迎 {{ name }}\uff0cこんにちは、안녕하세요" in text and RTL in text
    assert parse_prompt_file(text, "x.yaml") == prompts


def test_dump_keeps_control_characters_exact() -> None:
    prompts: dict[str, dict[str, Any]] = {
        "a": {"template": "bell\x07 and 👋\nnext\x1b[0m", "metadata": {"k": "\x00nul 🎉"}},
        "b": {"template": "a\\U0001F44B is text, not an escape"},
    }
    text = dump_prompt_file(prompts)
    assert "\\a" in text and "\\e" in text and "\\0" in text  # escaped, never raw
    assert not any(ch in text for ch in "\x00\x07\x1b")
    assert parse_prompt_file(text, "x.yaml") == prompts


def test_dump_refuses_a_lone_surrogate_in_one_sentence() -> None:
    with pytest.raises(ValueError, match=r"^prompt 'a' holds a lone surrogate, which is not"):
        dump_prompt_file({"a": {"template": "x\ud800y"}})
    with pytest.raises(ValueError, match="prompt 'b' holds a lone surrogate"):
        dump_prompt_file({"a": {"template": "ok"}, "b": {"metadata": {"k": ["\udfff"]}}})
