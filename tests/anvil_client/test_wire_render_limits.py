"""Operations that multiply their input's size are stopped before they allocate.

Each case would allocate hundreds of megabytes (or more) if its guard were removed.
"""

from __future__ import annotations

import pytest

from anvil_client.errors import MissingVariable, RenderError, TemplateError
from anvil_client.wire import (
    ENVIRONMENT,
    Message,
    PromptSpec,
    compile_prompt,
    parse_template,
    spec_variables,
    template_variables,
)
from anvil_client.wire._render import (
    MAX_BLOCK_NESTING,
    MAX_CALL_DEPTH,
    MAX_NESTING,
    MAX_PROMPT_SET_CHARS,
    MAX_TEMPLATE_CHARS,
)

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
    # The step budget stops these first on an idle machine; on a busy one a step costs more CPU
    # time and the 1 s CPU budget may stop them first. Either way the render stops.
    with pytest.raises(RenderError, match=r"too many loop iterations|s of CPU time"):
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


# --- issue 9: compiling evaluates nothing; reading is bounded; one budget per render ----------


def test_compiling_and_inspecting_a_template_evaluate_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Jinja2 folds constant expressions while compiling (and in jinja2.meta): a filter with
    # constant arguments would run, unbounded, in whatever process merely reads the template.
    calls: list[object] = []

    def spy(*args: object, **kwargs: object) -> str:
        calls.append(args)
        return "x"

    monkeypatch.setitem(ENVIRONMENT.filters, "join", spy)
    source = "{{ 'ab' | join('-') }}{% if ('a' | join) %}{{ name }}{% endif %}"
    assert template_variables(source) == ["name"]
    assert spec_variables(source, None) == ["name"]
    compiled = compile_prompt("fold", PromptSpec(source, None, ("name",), {}))
    assert calls == []
    assert compiled.render({"name": "N"}) == "xN"
    assert len(calls) == 2


def test_templates_have_a_size_limit() -> None:
    parse_template("x" * MAX_TEMPLATE_CHARS)
    with pytest.raises(TemplateError, match=f"at most {MAX_TEMPLATE_CHARS:,} are allowed"):
        parse_template("x" * (MAX_TEMPLATE_CHARS + 1))
    with pytest.raises(RenderError, match=r"'too\.big' has a broken template: .* at most"):
        _spec_render("too.big", "{{ x }}" * MAX_TEMPLATE_CHARS)


def test_a_prompts_templates_have_a_total_size_limit() -> None:
    message = ("user", "y" * MAX_TEMPLATE_CHARS)
    count = MAX_PROMPT_SET_CHARS // MAX_TEMPLATE_CHARS + 1
    with pytest.raises(TemplateError, match=f"at most {MAX_PROMPT_SET_CHARS:,}"):
        spec_variables(None, [message] * count)
    spec = PromptSpec(None, tuple(Message(*message) for _ in range(count)), (), {})
    with pytest.raises(RenderError, match=r"'chat\.big'.*at most"):
        compile_prompt("chat.big", spec)


def _spec_render(prompt_id: str, source: str, **values: object) -> str:
    return compile_prompt(prompt_id, PromptSpec(source, None, (), {})).render(values)


DEEP = {
    "parentheses": "{{ " + "(" * 500 + "1" + ")" * 500 + " }}",
    "ifs": "{% if x %}" * 400 + "{% endif %}" * 400,
    "lists": "{{ " + "[" * 300 + "1" + "]" * 300 + " }}",
    "nots": "{{ " + "not " * 3000 + "1 }}",
    "sums": "{{ " + "1 + " * 3000 + "1 }}",
    "filters": "{{ x" + "|string" * 3000 + " }}",
    "fors": "{% for a in x %}" * 40 + "{% endfor %}" * 40,
    "conditionals": "{{ " + "1 if x else " * 1000 + "1 }}",
}


@pytest.mark.parametrize("name", sorted(DEEP))
def test_deep_nesting_is_a_template_error_not_a_recursion_error(name: str) -> None:
    source = DEEP[name]
    with pytest.raises(TemplateError, match="the template nests"):
        parse_template(source)
    with pytest.raises(TemplateError, match="the template nests"):
        template_variables(source)
    with pytest.raises(RenderError, match=r"prompt 'deep' has a broken template: .*nests"):
        _spec_render("deep", source)


def test_nesting_up_to_the_limits_compiles_and_renders() -> None:
    depth = MAX_BLOCK_NESTING
    assert _spec_render("ok", "{% if x %}" * depth + "y" + "{% endif %}" * depth, x=1) == "y"
    assert _spec_render("ok", "{% for a in x %}" * depth + "y" + "{% endfor %}" * depth, x=[1]) == (
        "y"
    )
    with pytest.raises(TemplateError, match=f"blocks more than {depth} deep"):
        parse_template("{% if x %}" * (depth + 1) + "{% endif %}" * (depth + 1))
    # Template > Output > n nested Lists > Const: n + 2 levels below the root.
    lists = MAX_NESTING - 2
    assert _spec_render("ok", "{{ " + "[" * lists + "1" + "]" * lists + " }}") == (
        "[" * lists + "1" + "]" * lists
    )
    with pytest.raises(TemplateError, match=f"more than {MAX_NESTING} levels deep"):
        parse_template("{{ " + "[" * (lists + 1) + "1" + "]" * (lists + 1) + " }}")


def test_deeply_nested_values_given_to_a_template_are_a_render_error() -> None:
    value: list[object] = []
    for _ in range(5000):
        value = [value]
    with pytest.raises(RenderError, match=r"'deep\.value'"):
        _spec_render("deep.value", "{{ v }}{{ v | string }}", v=value)


def test_calls_draw_on_the_same_budget_as_loop_steps() -> None:
    # 150,000 loop steps alone are within the budget; with a call in each step they are not.
    loops = "{% for i in range(100) %}{% for j in range(1500) %}BODY{% endfor %}{% endfor %}ok"
    assert _spec_render("calls", loops.replace("BODY", "")) == "ok"
    with pytest.raises(RenderError, match="too many loop iterations and calls"):
        _spec_render("calls", loops.replace("BODY", "{% set _ = j.bit_length() %}"))


def test_exponential_macro_recursion_is_stopped() -> None:
    source = (
        "{% macro f(n) %}{% if n > 0 %}{{ f(n-1) }}{{ f(n-1) }}{% endif %}{% endmacro %}{{ f(40) }}"
    )
    with pytest.raises(
        RenderError, match=r"'macro\.bomb' was stopped by the sandbox: the template"
    ):
        _spec_render("macro.bomb", source)


def test_recursion_depth_is_bounded_and_ordinary_recursion_works() -> None:
    endless = "{% macro f(n) %}{{ f(n+1) }}{% endmacro %}{{ f(0) }}"
    with pytest.raises(RenderError, match=f"nests calls more than {MAX_CALL_DEPTH} deep"):
        _spec_render("endless", endless)
    depth = MAX_CALL_DEPTH - 10
    recursive = "{% macro f(n) %}{% if n %}{{ f(n-1) }}{% endif %}x{% endmacro %}{{ f(n) }}"
    assert _spec_render("tree", recursive, n=depth) == "x" * (depth + 1)


GROWTH = [
    "{% set a = 'x'*1000000 %}" + "{% set a = a ~ a %}" * 9 + "{{ a|length }}",
    "{{ ('x'*40000)|join('y'*20000) }}",
    "{{ ('x'*1000000) ~ 'y' * 100000 }}",
    "{% set a = 'x'*1000000 %}{{ (a + a)|length }}",
    "{% set s = 'x'*1000000 %}{{ 'y'.join([s]*1000) }}",
    "{% set s = 'x'*1000000 %}{{ ([{'a': s}]*1000)|join(attribute='a') }}",
    "{% set s = 'x'*100000 %}{{ ('{0}'*1000).format(s) }}",
    "{% set s = 'x'*100000 %}{{ ('%s'*100)|format(*([s]*100)) }}",
    "{% set s = 'x'*100000 %}{{ ('%s'*100) % (" + "s, " * 100 + ") }}",
    "{% set s = 'x'*1000000 %}{{ [s]*1000 }}",
    "{% set s = 'x'*1000000 %}{{ ([s]*100)|tojson }}",
    "{% set s = 'x'*1000000 %}{{ ([s]*100)|upper }}",
    "{{ ('\\n'*100000)|indent('y'*100000) }}",
    "{{ ('x'*100000)|wordwrap(1, wrapstring='y'*100000) }}",
    "{{ ('\\t'*100000).expandtabs(50000) }}",
    "{% macro f(n) %}{% if n %}{{ f(n-1) }}{{ f(n-1) }}{% else %}{{ 'x'*1000000 }}{% endif %}"
    "{% endmacro %}{{ f(12) }}",
    "{% set s = 'x'*1000000 %}{% set b %}{{ s }}{{ s }}{% endset %}{{ b|length }}",
]


@pytest.mark.parametrize("source", GROWTH)
def test_no_intermediate_string_grows_past_the_output_cap(source: str) -> None:
    with pytest.raises(RenderError, match=r"'growth' was stopped by the sandbox: .*too large"):
        _spec_render("growth", source)


def test_lipsum_is_not_available() -> None:
    with pytest.raises(MissingVariable, match="lipsum"):
        _spec_render("lorem", "{{ lipsum(10**6) }}")


def test_a_number_too_long_for_python_is_a_template_error() -> None:
    source = "{{ " + "1" * 5000 + " }}"
    with pytest.raises(TemplateError, match="a number with too many digits"):
        parse_template(source)
    with pytest.raises(RenderError, match=r"'long\.number' has a broken template"):
        _spec_render("long.number", source)


@pytest.mark.parametrize(
    "prefix",
    [
        "{# {{ } } () #}",  # a comment that looks like the start of a tag
        "{% raw %}{{ {% endraw %}",  # so does raw text
        "{{ '}}' }}",  # a tag's end inside a string
        "{{ {1: {2: 3}} }}",  # and inside brackets
        "",
    ],
)
def test_nesting_is_checked_whatever_hides_the_tags(prefix: str) -> None:
    # The first "}}" of the deep tag is not its end: a regular expression would stop there.
    deep = "{{ {1: {2: 3}} ~ " + "[" * MAX_NESTING + "1" + "]" * MAX_NESTING + " }}"
    with pytest.raises(TemplateError, match="nests"):
        parse_template(prefix + deep)
