"""Operations that multiply their input's size are stopped before they allocate.

Each case would allocate hundreds of megabytes (or more) if its guard were removed.
"""

from __future__ import annotations

import pytest

from anvil_client.errors import RenderError
from anvil_client.wire import PromptSpec, compile_prompt

HOSTILE = [
    "{{ 'x'.ljust(10**9) }}",
    "{{ 'x'.zfill(10**8) }}",
    "{{ '%999999999d' % 1 }}",
    "{{ '{:>999999999}'.format(1) }}",
    "{{ '{:>{w}}'.format(1, w=999999999) }}",
    "{{ '{x:>{w}}'.format_map({'x': 1, 'w': 999999999}) }}",
    "{{ ('a' * 1000000).replace('a', 'a' * 1000000) }}",
    "{{ 'x' | center(1000000000) }}",
    "{{ 'x' | indent(999999999) }}",
    "{{ '%999999999s' | format(1) }}",
    "{{ ('a' * 1000000) | replace('a', 'aaaaaaaa') }}",
    "{{ lipsum(n=100000) }}",
    "{{ 'ab' * 10**7 }}",
    "{{ 7 ** 10000000 }}",
]

ORDINARY = {
    "{{ 'x' | center(9) }}": "    x    ",
    "{{ '%5.2f' | format(3.14159) }}": " 3.14",
    "{{ 'ab'.replace('a', 'c') }}": "cb",
    "{{ 'a b' | replace('a', 'x') }}": "x b",
    "{{ '{:>5}'.format(1) }}": "    1",
    "{{ '{}'.format(10**7) }}": "10000000",
    "{{ 'hello world foo' | truncate(9) }}": "hello...",
    "{{ 'x' | indent(4, first=True) }}": "    x",
    "{{ '%d%%' % 50 }}": "50%",
    "{{ 2 ** 10 }}": "1024",
}


def _render(source: str) -> str:
    return compile_prompt("limits.case", PromptSpec(source, None, (), {})).render({})


@pytest.mark.parametrize("source", HOSTILE)
def test_size_multiplying_operations_are_stopped(source: str) -> None:
    with pytest.raises(RenderError, match=r"limits\.case"):
        _render(source)


@pytest.mark.parametrize(("source", "expected"), sorted(ORDINARY.items()))
def test_ordinary_uses_of_guarded_operations_still_work(source: str, expected: str) -> None:
    assert _render(source) == expected


def test_a_template_that_fails_while_compiling_is_a_render_error() -> None:
    # Jinja2 folds ``1 ~ (1).attr`` while compiling and raises UndefinedError there.
    with pytest.raises(RenderError, match=r"limits\.case"):
        _render("{{ 1 ~ (1).attr }}")


CPU_BOMBS = [
    "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}",
    "{% for x in range(1000) recursive %}{% if loop.depth < 4 %}{{ loop(range(1000)) }}"
    "{% endif %}{% endfor %}",
    "{% macro m() %}{% for a in range(100000) %}{% endfor %}{% endmacro %}"
    "{% for i in range(100) %}{{ m() }}{% endfor %}",
]


@pytest.mark.parametrize("source", CPU_BOMBS)
def test_loops_that_would_run_for_hours_are_stopped(source: str) -> None:
    with pytest.raises(RenderError, match="too many loop iterations"):
        _render(source)


def test_loops_keep_their_jinja2_behaviour_under_the_budget() -> None:
    def render(source: str, **values: object) -> str:
        return compile_prompt("loops", PromptSpec(source, None, (), {})).render(values)

    assert (
        render(
            "{% for x in items %}{{ loop.index }}/{{ loop.length }}:{{ x }} {% endfor %}",
            items=["a", "b"],
        )
        == "1/2:a 2/2:b "
    )
    assert render("{% for x in items if x > 1 %}{{ x }}{% endfor %}", items=[1, 2, 3]) == "23"
    assert render("{% for x in [] %}x{% else %}empty{% endfor %}") == "empty"
    tree = [{"n": 1, "c": [{"n": 2, "c": []}]}]
    assert render("{% for x in t recursive %}[{{ x.n }}{{ loop(x.c) }}]{% endfor %}", t=tree) == (
        "[1[2]]"
    )
    # The budget is per render: many renders of a loop of 100,000 steps each all succeed.
    compiled = compile_prompt(
        "loops", PromptSpec("{% for i in range(n) %}{% endfor %}ok", None, ("n",), {})
    )
    assert [compiled.render({"n": 100_000}) for _ in range(4)] == ["ok"] * 4
