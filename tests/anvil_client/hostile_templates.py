"""Hostile templates, and a child process that runs them under an address-space limit.

Shared by the client's and the publisher's hostile-template tests. Each template, without its
guard, would allocate gigabytes, recurse past Python's limit or run for hours (or days).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
# Address space of the child: the interpreter and its imports need ~0.3 GiB.
MEMORY_LIMIT = 1536 * 1024 * 1024
# Wall-clock seconds the child may take for the whole list (each one takes at most ~1 s).
CHILD_TIMEOUT = 300

_S = "{% set s = 'x' * 1000000 %}"

HOSTILE: dict[str, str] = {
    # issue 9 finding 1: constant folding at compile time (130 KB of template, 3 GB to fold)
    "join_folded": "{{ '" + "x" * 30000 + "'|join('" + "y" * 100000 + "')|length }}",
    "product_folded": "{{ ('x' * 1000000) ~ ('y' * 1000000) }}",
    # finding 2: CPU and memory past the sandbox's limits
    "macro_exponential": "{% macro f(n) %}{% if n > 0 %}{{ f(n-1) }}{{ f(n-1) }}{% endif %}"
    "{% endmacro %}{{ f(40) }}",
    "set_doubling": "{% set a = 'x'*1000000 %}" + "{% set a = a ~ a %}" * 9 + "{{ a|length }}",
    "join_multiplies": "{{ ('x'*40000)|join('y'*20000) }}",
    # finding 3: RecursionError while parsing
    "parentheses": "{{ " + "(" * 500 + "1" + ")" * 500 + " }}",
    "nested_ifs": "{% if x %}" * 400 + "{% endif %}" * 400,
    "nested_lists": "{{ " + "[" * 300 + "1" + "]" * 300 + " }}",
    "nested_dicts": "{{ " + "{'a': " * 300 + "1" + "}" * 300 + " }}",
    "nested_fors": "{% for a in x %}" * 40 + "{% endfor %}" * 40,
    "not_chain": "{{ " + "not " * 3000 + "1 }}",
    "minus_chain": "{{ " + "- " * 3000 + "1 }}",
    "plus_chain": "{{ " + "1 + " * 3000 + "1 }}",
    "filter_chain": "{{ x" + "|string" * 3000 + " }}",
    "conditional_chain": "{{ " + "1 if x else " * 1000 + "1 }}",
    # the rest of the list
    "tilde_chain": "{{ 'x'*10**6 ~ 'y' ~ 'z' }}",
    "plus_strings": "{% set a = 'x'*1000000 %}{{ a + a }}",
    "percent_width": "{{ '%999999999s'|format(1) }}",
    "percent_operator_width": "{{ '%999999999d' % 1 }}",
    "percent_fields": "{% set s = 'x'*100000 %}{{ ('%s'*100)|format(*([s]*100)) }}",
    "format_width": "{{ '{:>999999999}'.format(1) }}",
    "format_nested_width": "{{ '{:>{w}}'.format(1, w=999999999) }}",
    "format_fields": "{% set s = 'x'*100000 %}{{ ('{0}'*1000).format(s) }}",
    "range_list": "{{ range(10**9)|list }}",
    "center": "{{ 'x'|center(10**9) }}",
    "ljust": "{{ 'x'.ljust(10**9) }}",
    "power": "{{ 7 ** 10000000 }}",
    "lipsum": "{{ lipsum(10**6) }}",
    "dict_recursion": "{% macro d(n) %}{{ dict(a=d(n-1)) if n else 1 }}{% endmacro %}"
    "{{ d(100000) }}",
    "endless_recursion": "{% macro f(n) %}{{ f(n+1) }}{% endmacro %}{{ f(0) }}",
    "loops_nested": "{% for a in range(100000) %}{% for b in range(100000) %}{{ a }}{% endfor %}"
    "{% endfor %}",
    "loop_heavy_body": "{% for a in range(100000) %}{% set x = ([3, 1, 2] * 300000)|sort %}"
    "{% endfor %}",
    "join_method": _S + "{{ 'y'.join([s]*1000) }}",
    "join_attribute": _S + "{{ ([{'a': s}]*1000)|join(attribute='a') }}",
    "wordwrap": "{{ ('x'*1000000)|wordwrap(1) }}",
    "wordwrap_wrapstring": "{{ ('x'*100000)|wordwrap(1, wrapstring='y'*100000) }}",
    "truncate": "{{ ('x'*1000000)|truncate(10**9) }}",
    "indent": "{{ ('\\n'*100000)|indent(100000) }}",
    "indent_string": "{{ ('\\n'*100000)|indent('y'*100000) }}",
    "replace": "{{ ('a' * 1000000).replace('a', 'a' * 1000) }}",
    "replace_filter": "{{ ('a' * 1000000)|replace('a', 'aaaaaaaa') }}",
    "expandtabs": "{{ ('\\t'*100000).expandtabs(50000) }}",
    "list_text": _S + "{{ [s]*1000 }}",
    "list_literal_text": _S + "{{ [" + "s," * 1000 + "] }}",
    "tojson": _S + "{{ ([s]*100)|tojson }}",
    "pprint": "{% set s = 'x'*100000 %}{{ ([s]*100)|pprint }}",
    "string_filter": _S + "{{ ([s]*100)|string }}",
    "upper_list": _S + "{{ ([s]*100)|upper }}",
    "macro_output": "{% macro f(n) %}{% if n %}{{ f(n-1) }}{{ f(n-1) }}{% else %}{{ 'x'*1000000 }}"
    "{% endif %}{% endmacro %}{{ f(12) }}",
    "caller_output": "{% macro m() %}{{ caller() }}{{ caller() }}{% endmacro %}"
    + "{% call m() %}" * 15
    + "{{ 'x'*1000000 }}"
    + "{% endcall %}" * 15,
    "set_block": _S + "{% set b %}{{ s }}{{ s }}{% endset %}{{ b|length }}",
    "filter_block": _S + "{% filter upper %}{{ s }}{{ s }}{% endfilter %}",
    "namespace_doubling": "{% set ns = namespace(x=[1]) %}{% for i in range(100000) %}"
    "{% set ns.x = [ns.x, ns.x] %}{% endfor %}{{ ns.x }}",
    "recursive_loop": "{% for x in range(1000) recursive %}{{ loop(range(1000)) }}{% endfor %}",
    "sum_lists": "{% set s = ['x'*1000000] %}{{ ([s]*1000)|sum(start=[]) }}",
    "huge_template": "{{ x }}" * 100000,
    "unclosed_comments": "{#" * 100000,
    "many_tokens": "{{ " + "x," * 100000 + "x }}",
    "long_number": "{{ " + "1" * 200000 + " }}",
    "long_subscripts": "{{ x" + "[0]" * 80000 + " }}",
}

_CHILD = r"""
import json, resource, sys
limit = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
mode = sys.argv[2]
templates = json.load(sys.stdin)
from anvil_client.errors import AnvilError
from anvil_client.wire import PromptSpec, compile_prompt
if mode == "publisher":
    from publisher import validate_prompts
if mode == "prompt":  # a real client, serving a published bundle that holds them all
    import tempfile
    from pathlib import Path
    from anvil_client import AnvilClient
    from anvil_client.stores import FileStore
    from tests.anvil_client.wire_publisher import WirePublisher
    root = Path(tempfile.mkdtemp())
    publisher = WirePublisher(FileStore(root / "store"))
    entries = {
        "hostile." + name: {"template": source, "variables": ["x"], "metadata": {}}
        for name, source in templates.items()
    }
    entries["fine.hello"] = {"template": "Hi {{ x }}", "variables": ["x"], "metadata": {}}
    publisher.publish(entries, version="1.0.0")
    client = AnvilClient(**publisher.client_settings(root / "cache", start=False))
    client.sync()
    assert client.prompt("fine.hello", x="Ada") == "Hi Ada"
for name, source in templates.items():
    try:
        if mode == "client":
            spec = PromptSpec(source, None, ("x",), {})
            out = compile_prompt("hostile." + name, spec).render({"x": [1]})
        elif mode == "prompt":
            out = client.prompt("hostile." + name, x=[1])
        else:
            out = str(validate_prompts({"hostile." + name: {"template": source}}))
        result = {"outcome": "ok", "size": len(out)}
    except AnvilError as e:
        result = {"outcome": type(e).__name__, "message": str(e)}
    except BaseException as e:
        result = {"outcome": "raw " + type(e).__name__, "message": str(e)[:300]}
    print(json.dumps({"name": name, **result}), flush=True)
"""


def run_hostile(mode: str, templates: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Run ``templates`` in a child process limited to ``MEMORY_LIMIT`` bytes of address space,
    through ``compile_prompt`` and ``render`` (``mode="client"``), a real client's ``prompt()``
    serving a published bundle of them (``"prompt"``) or the publisher's validation
    (``"publisher"``); one result per template name."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    try:
        done = subprocess.run(
            [sys.executable, "-c", _CHILD, str(MEMORY_LIMIT), mode],
            input=json.dumps(templates),
            capture_output=True,
            text=True,
            timeout=CHILD_TIMEOUT,
            cwd=ROOT,
            env=env,
            check=False,
        )
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else e.stdout or ""
        finished = [json.loads(line)["name"] for line in out.splitlines() if line.strip()]
        unfinished = [name for name in templates if name not in finished]
        raise AssertionError(f"the child hung; first unfinished: {unfinished[:1]}") from None
    results = {}
    for line in done.stdout.splitlines():
        if line.strip():
            result = json.loads(line)
            results[result.pop("name")] = result
    assert done.returncode == 0, f"the child failed: {done.stderr[-2000:]}"
    return results
