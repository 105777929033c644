"""Rendering: the fast path is byte-identical to Jinja2; the sandbox and its caps hold."""

from __future__ import annotations

import enum
from collections import defaultdict
from typing import Any

import jinja2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jinja2.sandbox import ImmutableSandboxedEnvironment

from anvil_client.errors import MissingVariable, RenderError, TemplateError
from anvil_client.wire import (
    ENVIRONMENT,
    CompiledPrompt,
    Message,
    PromptSpec,
    compile_prompt,
    parse_template,
    spec_variables,
    template_variables,
)

# The reference: a plain Jinja2 render with the configuration DESIGN §7 prescribes.
REFERENCE = ImmutableSandboxedEnvironment(
    undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True
)


class Colour(str, enum.Enum):  # noqa: UP042 - str() differs from the value: a trap
    RED = "red"


class Shown:
    def __init__(self, text: str) -> None:
        self.text = text

    def __str__(self) -> str:
        return f"<{self.text}>"


def text_prompt(template: str, prompt_id: str = "p.id") -> CompiledPrompt:
    return compile_prompt(prompt_id, PromptSpec(template, None, (), {}))


def chat_prompt(*messages: tuple[str, str], prompt_id: str = "c.id") -> CompiledPrompt:
    spec = PromptSpec(None, tuple(Message(role, text) for role, text in messages), (), {})
    return compile_prompt(prompt_id, spec)


def reference(template: str, variables: dict[str, Any]) -> str:
    return REFERENCE.from_string(template).render(variables)


# -- the fast path is byte-identical to Jinja2 --------------------------------------------

NAMES = ["name", "x", "y_1", "zoë", "item", "_private"]
SPECIAL = ["{", "}", "%", "#", "-", "\n", "\r\n", "\r", "é", "✓", "😀", "\u2028"]
CHARS = st.sampled_from([*"ab Z09,.!?:;'\"\\\t", *SPECIAL])
PLAIN_TEXT = st.lists(CHARS, max_size=12).map("".join)


def _safe_text(text: str) -> bool:
    # Text next to a placeholder must not open Jinja2 syntax of its own.
    return not any(d in text for d in ("{{", "{%", "{#")) and not text.endswith("{")


PLACEHOLDER = st.builds(
    lambda left, name, right, pad: "{{" + left + pad + name + pad + right + "}}",
    st.sampled_from(["", "-"]),
    st.sampled_from(NAMES),
    st.sampled_from(["", "-"]),
    st.sampled_from([" ", "", "  ", "\t", "\n"]),
)
FAST_TEMPLATES = st.lists(st.one_of(PLAIN_TEXT.filter(_safe_text), PLACEHOLDER), max_size=8).map(
    "".join
)

VALUES = st.one_of(
    st.text(max_size=10),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.none(),
    st.booleans(),
    st.lists(st.one_of(st.integers(), st.text(max_size=3)), max_size=3),
    st.just(Colour.RED),
    st.builds(Shown, st.text(max_size=5)),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.tuples(st.integers(), st.none()),
)
VARIABLES = st.dictionaries(st.sampled_from(NAMES), VALUES)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(FAST_TEMPLATES, VARIABLES)
def test_fast_path_is_byte_identical_to_jinja2(template: str, variables: dict[str, Any]) -> None:
    compiled = text_prompt(template)
    assert compiled.fast_path, template
    try:
        expected = reference(template, variables)
    except jinja2.UndefinedError:
        with pytest.raises(MissingVariable):
            compiled.render(variables)
        return
    assert compiled.render(variables) == expected


ANY_TEXT = st.lists(
    st.one_of(
        CHARS,
        st.sampled_from(["{{", "}}", "{%", "%}", "{#", "#}", "{{ self }}", "{{ range }}"]),
        st.sampled_from(["{{ true }}", "{{ none }}", "{{ x.y }}", "{{ not }}", "{% raw %}{{ x }}"]),
        st.sampled_from(["{% endraw %}", "{{ 'lit' }}", "{{ x|upper }}", "{# c #}", "{{ in }}"]),
        PLACEHOLDER,
    ),
    max_size=10,
).map("".join)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(ANY_TEXT, VARIABLES)
def test_any_template_renders_as_jinja2_or_fails_as_jinja2(
    template: str, variables: dict[str, Any]
) -> None:
    """Whichever path a template takes, the outcome is Jinja2's own."""
    try:
        expected: str | type[Exception] = reference(template, variables)
    except jinja2.TemplateSyntaxError:
        with pytest.raises(RenderError, match="broken template"):
            text_prompt(template)
        return
    except Exception as e:
        expected = type(e)
    compiled = text_prompt(template)
    if isinstance(expected, str):
        assert compiled.render(variables) == expected
    else:
        with pytest.raises(RenderError):
            compiled.render(variables)


@pytest.mark.parametrize(
    ("template", "fast"),
    [
        ("Hello {{ name }}!", True),
        ("{{name}}{{x}}", True),
        ("a {{- name -}}\r\n b", True),
        ("{# note #}{{ name }}", True),
        ("{% raw %}{{ literal }}{% endraw %} {{ name }}", True),
        ("", True),
        ("{{ self }}", False),
        ("{{ range }}", False),
        ("{{ true }}", False),
        ("{{ name|upper }}", False),
        ("{% if x %}{{ name }}{% endif %}", False),
        ("{{ 'a' }}", False),
    ],
)
def test_which_templates_take_the_fast_path(template: str, fast: bool) -> None:
    assert text_prompt(template).fast_path is fast
    variables = {"name": "N", "x": 1}
    assert text_prompt(template).render(variables) == reference(template, variables)


def test_self_is_never_a_variable() -> None:
    # Jinja2 binds ``self`` to the template reference whatever the variables say.
    assert text_prompt("{{ self }}").render({"self": "me"}) == reference(
        "{{ self }}", {"self": "me"}
    )


def test_a_mapping_with_a_default_behaves_as_jinja2() -> None:
    variables: defaultdict[str, str] = defaultdict(lambda: "default")
    with pytest.raises(MissingVariable):
        text_prompt("{{ name }}").render(variables)
    with pytest.raises(jinja2.UndefinedError):
        reference("{{ name }}", dict(variables))


def test_values_of_many_types_render_like_str() -> None:
    values = {"name": Colour.RED, "x": Shown("s"), "y_1": [1, "a"], "item": None, "zoë": 1.5}
    template = "{{ name }}|{{ x }}|{{ y_1 }}|{{ item }}|{{ zoë }}"
    assert text_prompt(template).render(values) == reference(template, values)
    assert text_prompt(template).render(values) == f"{Colour.RED!s}|<s>|[1, 'a']|None|1.5"


# -- errors -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "template",
    ["Hi {{ name }} from {{ city }}", "{% if vip %}{{ city }}{% endif %}", "{{ city|upper }}"],
)
def test_missing_variable_names_the_prompt_and_the_variable(template: str) -> None:
    prompt = text_prompt(template, prompt_id="welcome.message")
    with pytest.raises(MissingVariable) as caught:
        prompt.render({"name": "Al", "vip": True})
    assert caught.value.prompt_id == "welcome.message"
    assert caught.value.variable == "city"
    assert "'welcome.message'" in str(caught.value)
    assert "'city'" in str(caught.value)


def test_missing_variable_in_a_chat_message() -> None:
    prompt = chat_prompt(("system", "You help {{ product }}."), ("user", "{{ question }}"))
    with pytest.raises(MissingVariable) as caught:
        prompt.render_messages({"product": "Anvil"})
    assert caught.value.variable == "question"
    assert caught.value.prompt_id == "c.id"


def test_strict_undefined_behaviour() -> None:
    # Using an undefined value is an error, testing it is not.
    assert text_prompt("{{ x|default('d') }}").render({}) == "d"
    assert text_prompt("{% if x is defined %}y{% else %}n{% endif %}").render({}) == "n"
    with pytest.raises(MissingVariable):
        text_prompt("{% if x %}y{% endif %}").render({})
    with pytest.raises(MissingVariable):
        text_prompt("{% for i in x %}{% endfor %}").render({})
    # An attribute missing on a value that was given is a render error, not a missing variable.
    with pytest.raises(RenderError) as caught:
        text_prompt("{{ user.name }}").render({"user": {}})
    assert not isinstance(caught.value, MissingVariable)


def test_errors_inside_templates_are_render_errors() -> None:
    with pytest.raises(RenderError, match="ZeroDivisionError"):
        text_prompt("{{ 1 / x }}").render({"x": 0})
    with pytest.raises(RenderError, match="broken template: line 2"):
        text_prompt("ok\n{% if %}")
    with pytest.raises(RenderError, match="broken template"):
        text_prompt("{% block a %}{% endblock %}{% block a %}{% endblock %}")


def test_parse_template_gives_the_line() -> None:
    with pytest.raises(TemplateError) as caught:
        parse_template("line one\nline two\n{{ oops")
    assert caught.value.lineno == 3


# -- the sandbox and its caps -------------------------------------------------------------


@pytest.mark.parametrize(
    "template",
    [
        "{{ x.__class__ }}",
        "{{ x.__class__.__mro__ }}",
        "{{ ''.__class__.__subclasses__() }}",
        "{{ f.__globals__ }}",
        "{{ items.append(1) }}",
        "{{ d.update({'a': 1}) }}",
        "{{ cycler.__init__.__globals__ }}",
    ],
)
def test_sandbox_blocks_unsafe_access(template: str) -> None:
    variables = {"x": 1, "f": reference, "items": [1], "d": {}}
    with pytest.raises(RenderError, match=r"sandbox|unsafe"):
        text_prompt(template).render(variables)
    assert variables == {"x": 1, "f": reference, "items": [1], "d": {}}


@pytest.mark.parametrize(
    "template",
    [
        "{{ 'x' * 2000000 }}",
        "{{ 2000000 * 'x' }}",
        "{{ [1] * 2000000 }}",
        "{{ 2 ** 100000 }}",
        "{{ 7 ** 99999999999 }}",
        "{{ (2 ** 60000) * (2 ** 60000) }}",
        "{{ big * big }}",
    ],
)
def test_multiplication_and_power_are_capped(template: str) -> None:
    with pytest.raises(RenderError, match="too large"):
        text_prompt(template).render({"big": 2**40000})


def test_reasonable_arithmetic_still_works() -> None:
    assert text_prompt("{{ 'ab' * 3 }} {{ 2 ** 10 }} {{ 6 * 7 }} {{ [0] * 2 }}").render({}) == (
        "ababab 1024 42 [0, 0]"
    )
    assert text_prompt("{{ 1 ** 99999999999 }} {{ (-1) ** 3 }}").render({}) == "1 -1"


def test_output_is_capped_on_both_paths() -> None:
    fast = text_prompt("{{ x }}")
    assert fast.fast_path
    with pytest.raises(RenderError, match="render limit"):
        fast.render({"x": "y" * 101}, max_output=100)
    assert fast.render({"x": "y" * 100}, max_output=100) == "y" * 100
    slow = text_prompt("{% for i in range(n) %}abcdefghij{% endfor %}")
    assert not slow.fast_path
    with pytest.raises(RenderError, match="render limit"):
        slow.render({"n": 11}, max_output=100)
    assert len(slow.render({"n": 10}, max_output=100)) == 100
    doubled = text_prompt("{% for i in range(99999) %}{{ s }}{{ s }}{% endfor %}")
    with pytest.raises(RenderError, match="render limit"):
        doubled.render({"s": "abcdefghij"})  # about 2 MB: the default cap is 1 MiB


def test_range_is_capped_by_the_sandbox() -> None:
    with pytest.raises(RenderError, match=r"MAX_RANGE|too big"):
        text_prompt("{% for i in range(10**7) %}{% endfor %}").render({})


def test_the_shared_environment_is_the_design_configuration() -> None:
    assert isinstance(ENVIRONMENT, ImmutableSandboxedEnvironment)
    assert ENVIRONMENT.undefined is jinja2.StrictUndefined
    assert ENVIRONMENT.autoescape is False
    assert ENVIRONMENT.keep_trailing_newline is True
    assert ENVIRONMENT.trim_blocks is False and ENVIRONMENT.lstrip_blocks is False
    assert {"*", "**"} <= ENVIRONMENT.intercepted_binops


# -- chat and variables -------------------------------------------------------------------


def test_chat_and_text_renderings() -> None:
    chat = chat_prompt(("system", "You help {{ product }} users."), ("user", "{{ question }}"))
    variables = {"product": "Anvil", "question": "Why?"}
    assert chat.render_messages(variables) == [
        {"role": "system", "content": "You help Anvil users."},
        {"role": "user", "content": "Why?"},
    ]
    assert chat.render(variables) == "You help Anvil users.\n\nWhy?"
    text = text_prompt("Hi {{ name }}")
    assert text.render_messages({"name": "Al"}) == [{"role": "user", "content": "Hi Al"}]


def test_spec_variables_is_the_sorted_union() -> None:
    assert template_variables(
        "{{ b }}{{ a }}{% set c = 1 %}{{ c }}{% for i in xs %}{% endfor %}"
    ) == [
        "a",
        "b",
        "xs",
    ]
    messages = [("system", "{{ zeta }} {{ alpha }}"), ("user", "{{ alpha }} {{ mid|upper }}")]
    assert spec_variables(None, messages) == ["alpha", "mid", "zeta"]
    assert spec_variables("{{ b }} {{ a }}", None) == ["a", "b"]
    assert spec_variables("no variables", None) == []
    with pytest.raises(TemplateError):
        spec_variables(None, [("user", "{{ ok }}"), ("user", "{% broken")])
