"""validate_prompts: every problem at once, each naming the prompt (and file and line)."""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from jinja2 import TemplateSyntaxError

from anvil_client.errors import ValidationError
from anvil_client.wire import ENVIRONMENT
from anvil_client.wire._render import undeclared_names  # jinja2.meta without constant folding
from publisher import PromptFiles, SourceLocation, _validate, validate_prompts


def problems_of(prompts: Any) -> list[str]:
    with pytest.raises(ValidationError) as caught:
        validate_prompts(prompts)
    return caught.value.problems


def test_normalizes_prompts_as_a_bundle_holds_them(prompts: dict[str, Any]) -> None:
    out = validate_prompts(prompts)
    assert list(out) == list(prompts)
    assert out["welcome.message"] == {
        "template": prompts["welcome.message"]["template"],
        "variables": ["access_level", "name", "role"],
        "metadata": {"description": "greeting", "temperature": 0.2},
    }
    assert out["greeting.fancy"]["variables"] == ["items", "name", "vip"]
    assert out["greeting.fancy"]["metadata"] == {}
    assert out["support.chat"]["variables"] == ["product", "question"]
    assert out["support.chat"]["messages"][0] == {
        "role": "system",
        "template": "You help {{ product }} users.",
    }


def test_given_variables_are_ignored_and_derived() -> None:
    out = validate_prompts({"a": {"template": "{{ x }}", "variables": ["wrong"]}})
    assert out["a"]["variables"] == ["x"]


def test_every_problem_is_reported_with_its_prompt_id() -> None:
    found = problems_of(
        {
            "Bad Id": {"template": "ok"},
            "x" * 129: {"template": "ok"},
            "both": {"template": "a", "messages": [{"role": "user", "template": "b"}]},
            "neither": {"metadata": {}},
            "typo": {"tempalte": "x"},
            "broken": {"template": "line 1\n{% if x %}\nno end"},
            "chat": {
                "messages": [
                    {"role": "bot", "template": "x"},
                    {"role": "user", "template": "{{ }}"},
                    {"role": "user"},
                ]
            },
            "empty.chat": {"messages": []},
            "meta": {"template": "x", "metadata": ["not", "an", "object"]},
            "meta.nan": {"template": "x", "metadata": {"t": float("nan")}},
            "not.mapping": "just text",
            "not.string": {"template": 42},
        }
    )
    text = "\n".join(found)
    assert "prompt 'Bad Id': id is invalid" in text
    assert "129 characters long" in text
    assert "prompt 'both': has both 'template' and 'messages'" in text
    assert "prompt 'neither': has neither 'template' nor 'messages'" in text
    assert "prompt 'typo': unknown field 'tempalte'" in text
    assert "prompt 'broken': template line 3:" in text or "prompt 'broken': template line" in text
    assert "prompt 'chat': message 1 has role 'bot'" in text
    assert "prompt 'chat': message 2 (user) line 1:" in text
    assert "prompt 'chat': message 3 (user) has no 'template'" in text
    assert "prompt 'empty.chat': messages must be a non-empty list" in text
    assert "prompt 'meta': metadata must be a mapping" in text
    assert "prompt 'meta.nan': metadata.t holds nan" in text
    assert "prompt 'not.mapping': must be a mapping" in text
    assert "prompt 'not.string': template must be a string" in text
    # one problem per defect, not one per prompt
    assert len(found) >= 14


def test_syntax_error_names_file_and_file_line_when_located() -> None:
    prompts = PromptFiles(
        [("greet", {"template": "one\ntwo {{ }}\n"})],
        {"greet": SourceLocation("prompts/a.yaml", 4, {"template": (5, True)})},
    )
    [problem] = problems_of(prompts)
    assert problem.startswith("prompts/a.yaml:6: prompt 'greet': template line 2:")


def test_non_string_id_and_metadata_key() -> None:
    found = problems_of({1: {"template": "x"}, "m": {"template": "x", "metadata": {2: "y"}}})
    assert any("prompt '1': the id must be a string" in p for p in found)
    assert any("metadata has a key 2 that is not a string" in p for p in found)


def test_lone_surrogate_is_refused() -> None:
    [problem] = problems_of({"a": {"template": "bad \ud800"}})
    assert "lone surrogate" in problem


def test_sandbox_rules_apply_at_validation() -> None:
    # the sandbox parses this fine; rendering is what it guards
    assert validate_prompts({"a": {"template": "{{ x.__class__ }}"}})["a"]["variables"] == ["x"]


def test_empty_set_is_valid() -> None:
    assert validate_prompts({}) == {}


def test_not_a_mapping() -> None:
    assert "must be a mapping" in problems_of(["a"])[0]


TEMPLATES = [
    "plain",
    "{{ a }} {{ b.c }} {{ d['e'] }} {{ f(g, h=i) }}",
    "{% if a and not b or c > 3 %}{{ d | default(e) }}{% elif f %}x{% else %}{{ g }}{% endif %}",
    "{{ range(3) | list }} {{ dict(a=1) }} {{ lipsum() }} {{ namespace }}",
    "{% for x in items %}{{ x }} {{ loop.index }} {{ y }}{% endfor %}",
    "{% set a = 1 %}{{ a }} {{ b }}",
    "{% macro m(p) %}{{ p }} {{ q }} {{ caller }}{% endmacro %}{{ m(1) }}",
    "{{ self }} {{ loop }} {{ caller }} {{ kwargs }} {{ varargs }}",
    "{{ (a, b) }} {{ [c, d] }} {{ {'k': e} }} {{ f if g else h }} {{ i ~ j }} {{ -k }}",
    "{{ a is defined }} {{ b[1:c] }} {{ 'x' * n }} {{ 2 ** m }}",
    "{% with a = 1 %}{{ a }}{{ b }}{% endwith %}",
    "{% filter upper %}{{ a }}{% endfilter %}",
    "{% raw %}{{ not_a_var }}{% endraw %}{{ real }}",
]


@pytest.mark.parametrize("source", TEMPLATES)
def test_fast_variable_walk_matches_jinja_meta(source: str) -> None:
    expected = sorted(undeclared_names(ENVIRONMENT.parse(source)))
    assert _validate._undeclared(ENVIRONMENT.parse(source)) == expected


NAMES = st.sampled_from(["a", "b", "x", "name", "range", "self", "loop", "items", "true"])
EXPRS = st.recursive(
    NAMES | st.sampled_from(["1", "'s'", "none"]),
    lambda inner: st.one_of(
        st.tuples(inner, st.sampled_from([" + ", " and ", " ~ ", " == ", " * "]), inner).map(
            "".join
        ),
        inner.map(lambda e: f"({e}).attr"),
        inner.map(lambda e: f"{e} | default(y)"),
        st.tuples(NAMES, inner).map(lambda t: f"{t[0]}({t[1]})"),
    ),
    max_leaves=6,
)
PIECES = st.one_of(
    st.just("text "),
    EXPRS.map(lambda e: "{{ " + e + " }}"),
    st.tuples(EXPRS, EXPRS).map(lambda t: "{% if " + t[0] + " %}{{ " + t[1] + " }}{% endif %}"),
    st.tuples(NAMES, EXPRS).map(
        lambda t: "{% for " + t[0] + " in seq %}{{ " + t[1] + " }}{% endfor %}"
    ),
    st.tuples(NAMES, EXPRS).map(lambda t: "{% set " + t[0] + " = " + t[1] + " %}"),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(PIECES, max_size=5).map("".join))
def test_fast_variable_walk_matches_jinja_meta_generated(source: str) -> None:
    try:
        tree = ENVIRONMENT.parse(source)
    except TemplateSyntaxError:
        assume(False)
    try:  # Jinja2's code generator may rewrite the tree it visits: give each its own
        expected = sorted(undeclared_names(ENVIRONMENT.parse(source)))
    except Exception as e:  # e.g. {% for loop in ... %} or {{ (1).x ~ 1 }}: both refuse it
        with pytest.raises(type(e)):
            _validate._undeclared(tree)
        return
    assert _validate._undeclared(tree) == expected


def test_large_sets_validate_in_parallel_with_the_same_result(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    prompts = {
        f"p.n{i}": {"template": f"Hello {{{{ name_{i % 7} }}}}{'{% if x %}y{% endif %}' * (i % 2)}"}
        for i in range(300)
    }
    prompts["p.broken"] = {"template": "{% if %}"}
    serial = _validate._validate_chunk([(k, v, None) for k, v in prompts.items()])
    pools: list[object] = []

    class CountingPool(ProcessPoolExecutor):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            pools.append(self)

    monkeypatch.setattr(_validate, "ProcessPoolExecutor", CountingPool)
    parallel = _validate._validate_items([(k, v, None) for k, v in prompts.items()], parallel=True)
    assert parallel == serial
    assert len(pools) == 1
    with pytest.raises(ValidationError) as caught:
        validate_prompts(prompts)
    assert caught.value.problems == [
        "prompt 'p.broken': template line 1: Expected an expression, got 'end of statement block'"
    ]


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("a\n{{ x | nosuchfilter }}", "template line 2: unknown filter 'nosuchfilter'"),
        ("{% if a %}{{ x | nosuch }}{% endif %}", "template line 1: unknown filter 'nosuch'"),
        ("{{ x is nosuchtest }}", "template line 1: unknown test 'nosuchtest'"),
        ("{% for loop in xs %}{% endfor %}", "template line 1: Can't assign to special loop"),
    ],
)
def test_what_the_compiler_refuses_is_refused(source: str, message: str) -> None:
    [problem] = problems_of({"a": {"template": source}})
    assert problem.startswith(f"prompt 'a': {message}")
