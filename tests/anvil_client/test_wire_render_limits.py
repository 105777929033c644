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
