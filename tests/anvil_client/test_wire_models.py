"""Pointer and bundle models: strict parsing, locations, timestamps, canonical JSON."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from anvil_client.errors import FormatError
from anvil_client.wire import (
    CHANNEL_RE,
    PROMPT_ID_RE,
    SEMVER_RE,
    ObjectRef,
    Pointer,
    canonical_json,
    format_timestamp,
    is_prompt_id,
    parse_bundle,
    parse_json_object,
    parse_timestamp,
    sha256_hex,
)

PROJECT = "6f1c2a4e-8d3b-4c5a-9e7f-0a1b2c3d4e5f"
HEX = "a" * 64


def _release(version: str = "1.2.3", set_id: str = "set-1") -> dict[str, Any]:
    return {
        "version": version,
        "prompt_set_id": set_id,
        "name": "Support bot",
        "content_sha256": HEX,
        "object": {
            "path": f"projects/{PROJECT}/bundles/{'b' * 64}.jwe",
            "sha256": "b" * 64,
            "size": 1234,
            "encoding": "jwe",
        },
    }


def _pointer(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": "anvil.pointer/v2",
        "project_id": PROJECT,
        "channel": "production",
        "sequence": 42,
        "published_at": "2026-01-15T10:30:00Z",
        "expires_at": None,
        "releases": [_release()],
        "rollout": None,
    }
    body.update(changes)
    return body


def _parse(body: dict[str, Any]) -> Pointer:
    return Pointer.parse(json.dumps(body).encode())


def test_design_example_parses_and_round_trips_canonically() -> None:
    pointer = _parse(_pointer())
    assert pointer.sequence == 42
    assert pointer.releases[0].object.size == 1234
    assert pointer.releases[0].name == "Support bot"
    assert pointer.expires is None
    assert pointer.to_bytes() == canonical_json(_pointer())
    assert Pointer.parse(pointer.to_bytes()) == pointer


def test_rollout_and_expiry_parse() -> None:
    pointer = _parse(
        _pointer(
            expires_at="2026-02-01T00:00:00+01:00",
            rollout={"percent": 25, "previous": [_release("1.2.2")]},
        )
    )
    assert pointer.expires == datetime(2026, 1, 31, 23, 0, tzinfo=UTC)
    assert pointer.rollout is not None
    assert pointer.rollout.previous[0].version == "1.2.2"
    assert [r.version for r in pointer.all_releases()] == ["1.2.3", "1.2.2"]


@pytest.mark.parametrize(
    ("changes", "where"),
    [
        ({"sequence": "42"}, "sequence"),
        ({"sequence": True}, "sequence"),
        ({"sequence": 42.0}, "sequence"),
        ({"sequence": 0}, "sequence"),
        ({"sequence": -1}, "sequence"),
        ({"sequence": None}, "sequence"),
        ({"type": "anvil.pointer/v1"}, "type"),
        ({"channel": "Production"}, "channel"),
        ({"channel": "-prod"}, "channel"),
        ({"channel": "a" * 33}, "channel"),
        ({"channel": "production\n"}, "channel"),
        ({"project_id": 7}, "project_id"),
        ({"published_at": "yesterday"}, "published_at"),
        ({"published_at": "2026-01-15T10:30:00"}, "published_at"),
        ({"published_at": "2026-01-15"}, "published_at"),
        ({"expires_at": "2026-13-01T00:00:00Z"}, "expires_at"),
        ({"expires_at": 1700000000}, "expires_at"),
        ({"rollout": {"percent": 101, "previous": [_release()]}}, "rollout.percent"),
        ({"rollout": {"percent": -1, "previous": [_release()]}}, "rollout.percent"),
        ({"rollout": {"percent": 50}}, "rollout.previous"),
        ({"rollout": {"percent": 50, "previous": _release()}}, "rollout.previous"),
        ({"rollout": {"percent": 50, "previous": []}}, "rollout.previous"),
        ({"releases": []}, "releases"),
        ({"releases": _release()}, "releases"),
        ({"releases": [_release()] * 2}, "releases"),
        ({"releases": [_release(set_id=f"s{i:03d}") for i in range(101)]}, "releases"),
        ({"releases": [_release(set_id="b"), _release(set_id="a")]}, "releases"),
        ({"releases": [{**_release(), "name": "n" * 201}]}, "releases.0.name"),
        ({"releases": [{k: v for k, v in _release().items() if k != "name"}]}, "releases.0.name"),
        ({"releases": [{**_release(), "version": "1.2"}]}, "releases.0.version"),
        ({"releases": [{**_release(), "version": "01.2.3"}]}, "releases.0.version"),
        ({"releases": [{**_release(), "content_sha256": "A" * 64}]}, "releases.0.content_sha256"),
        ({"releases": [{**_release(), "content_sha256": "a" * 63}]}, "releases.0.content_sha256"),
        (
            {"releases": [{**_release(), "object": {**_release()["object"], "size": -1}}]},
            "releases.0.object.size",
        ),
        (
            {"releases": [{**_release(), "object": {**_release()["object"], "size": "9"}}]},
            "releases.0.object.size",
        ),
        (
            {"releases": [{**_release(), "object": {**_release()["object"], "encoding": "zip"}}]},
            "releases.0.object.encoding",
        ),
        (
            {"releases": [{**_release(), "object": {**_release()["object"], "sha256": "xyz"}}]},
            "releases.0.object.sha256",
        ),
    ],
)
def test_pointer_is_strict(changes: dict[str, Any], where: str) -> None:
    with pytest.raises(FormatError, match=f"pointer is invalid: {where}"):
        _parse(_pointer(**changes))


@pytest.mark.parametrize("field", ["type", "project_id", "channel", "sequence", "releases"])
def test_pointer_missing_fields(field: str) -> None:
    body = _pointer()
    del body[field]
    with pytest.raises(FormatError, match=field):
        _parse(body)


def test_a_hundred_sorted_entries_are_the_most_a_pointer_holds() -> None:
    releases = [_release(set_id=f"s{i:03d}") for i in range(100)]
    pointer = _parse(_pointer(releases=releases))
    assert [r.prompt_set_id for r in pointer.releases] == [f"s{i:03d}" for i in range(100)]


def test_pointer_that_is_not_an_object_or_json() -> None:
    for data in (b"[]", b"null", b"{", b'{"sequence": 1, "sequence": 2}'):
        with pytest.raises(FormatError):
            Pointer.parse(data)


def test_unknown_pointer_fields_are_ignored_for_forward_compatibility() -> None:
    assert _parse(_pointer(note="added by a newer publisher")).sequence == 42


def test_timestamps() -> None:
    assert parse_timestamp("2026-01-15T10:30:00Z") == datetime(2026, 1, 15, 10, 30, tzinfo=UTC)
    assert parse_timestamp("2026-01-15t10:30:00.5z").microsecond == 500_000
    offset = parse_timestamp("2026-01-15T10:30:00-05:30")
    assert offset.utcoffset() == -timedelta(hours=5, minutes=30)
    for bad in ("2026-01-15 10:30:00Z", "20260115T103000Z", "2026-01-15T10:30Z", "", "١٢"):
        with pytest.raises(FormatError):
            parse_timestamp(bad)
    moment = datetime(2026, 1, 15, 11, 30, tzinfo=timezone(timedelta(hours=1)))
    assert format_timestamp(moment) == "2026-01-15T10:30:00Z"
    assert parse_timestamp(format_timestamp(moment)) == moment


# -- object locations ---------------------------------------------------------------------


def _ref(path: str, encoding: str = "jwe") -> ObjectRef:
    return ObjectRef(path=path, sha256="b" * 64, size=1, encoding=encoding)  # type: ignore[arg-type]


def test_check_location_accepts_the_design_layout() -> None:
    _ref(f"projects/{PROJECT}/bundles/{'b' * 64}.jwe").check_location(PROJECT)
    _ref(f"projects/{PROJECT}/bundles/{'b' * 64}.json", "json").check_location(PROJECT)


@pytest.mark.parametrize(
    "path",
    [
        f"projects/{PROJECT}/bundles/../channels/production.json",
        f"projects/{PROJECT}/bundles/../../other/bundles/{'b' * 64}.jwe",
        f"projects/other-project/bundles/{'b' * 64}.jwe",
        f"projects/{PROJECT}/channels/{'b' * 64}.jwe",
        f"/projects/{PROJECT}/bundles/{'b' * 64}.jwe",
        f"projects/{PROJECT}/bundles/sub/{'b' * 64}.jwe",
        f"projects/{PROJECT}/bundles/{'B' * 64}.jwe",
        f"projects/{PROJECT}/bundles/{'b' * 64}.jwe\n",
        f"projects/{PROJECT}/bundles/{'b' * 64}.exe",
        f"projects/{PROJECT}/bundles/{'b' * 64}.json",  # .json for a jwe object
        f"https://evil.example/projects/{PROJECT}/bundles/{'b' * 64}.jwe",
    ],
)
def test_check_location_refuses_everything_else(path: str) -> None:
    with pytest.raises(FormatError):
        _ref(path).check_location(PROJECT)


# -- bundles ------------------------------------------------------------------------------


def _bundle(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "type": "anvil.bundle/v1",
        "version": "1.2.3",
        "project_id": PROJECT,
        "prompt_set_id": "set-1",
        "created_at": "2026-01-15T10:30:00Z",
        "snapshot": {
            "welcome.message": {
                "template": "Welcome {{ name }}!",
                "variables": ["name"],
                "metadata": {"description": "hi", "temperature": 0.2},
            },
            "support.chat": {
                "messages": [
                    {"role": "system", "template": "You help {{ product }} users."},
                    {"role": "user", "template": "{{ question }}"},
                ],
                "variables": ["product", "question"],
                "metadata": {},
            },
        },
    }
    doc.update(changes)
    return doc


def _prompt(prompt: Any, prompt_id: str = "p") -> dict[str, Any]:
    return _bundle(snapshot={prompt_id: prompt})


def test_bundle_parses() -> None:
    data = canonical_json(_bundle())
    bundle = parse_bundle(data, content_sha256=sha256_hex(data))
    assert bundle.version == "1.2.3"
    assert bundle.content_sha256 == sha256_hex(data)
    welcome = bundle.prompts["welcome.message"]
    assert welcome.kind == "text"
    assert welcome.variables == ("name",)
    assert welcome.metadata["temperature"] == 0.2
    chat = bundle.prompts["support.chat"]
    assert chat.kind == "chat"
    assert chat.messages is not None
    assert [m.role for m in chat.messages] == ["system", "user"]
    assert chat.to_json() == _bundle()["snapshot"]["support.chat"]
    assert welcome.to_json() == _bundle()["snapshot"]["welcome.message"]


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (_bundle(type="anvil.bundle/v2"), "bundle type"),
        (_bundle(version="1.2"), "not semver"),
        (_bundle(version="1.2.3\n"), "not semver"),
        (_bundle(version="1.٢.3"), "not semver"),
        (_bundle(version=123), "'version' must be a string"),
        (_bundle(project_id=None), "'project_id' must be a string"),
        (_bundle(created_at="soon"), "RFC 3339"),
        (_bundle(snapshot=[]), "snapshot must be an object"),
        (_prompt({"template": "x"}, "Bad.Id"), "invalid prompt id"),
        (_prompt({"template": "x"}, "a..b"), "invalid prompt id"),
        (_prompt({"template": "x"}, "a.b\n"), "invalid prompt id"),
        (_prompt({"template": "x"}, "a" * 129), "invalid prompt id"),
        (_prompt({"template": "x"}, ""), "invalid prompt id"),
        (_prompt("just text"), "is not an object"),
        (
            _prompt({"template": "x", "messages": [{"role": "user", "template": "y"}]}),
            "exactly one",
        ),
        (_prompt({"metadata": {}}), "exactly one"),
        (_prompt({"template": 5}), "template must be a string"),
        (_prompt({"messages": []}), "non-empty list"),
        (_prompt({"messages": "hi"}), "non-empty list"),
        (_prompt({"messages": ["hi"]}), "not an object"),
        (_prompt({"messages": [{"role": "tool", "template": "x"}]}), "invalid role"),
        (_prompt({"messages": [{"role": "System", "template": "x"}]}), "invalid role"),
        (_prompt({"messages": [{"role": "user"}]}), "without a template"),
        (_prompt({"template": "x", "variables": "name"}), "variables must be a list"),
        (_prompt({"template": "x", "variables": [1]}), "variables must be a list"),
        (_prompt({"template": "x", "metadata": []}), "metadata must be an object"),
    ],
)
def test_bundle_errors_name_the_problem(doc: dict[str, Any], message: str) -> None:
    with pytest.raises(FormatError, match=message):
        parse_bundle(json.dumps(doc).encode(), content_sha256=HEX)


def test_bundle_that_is_not_json() -> None:
    for data in (b"", b"\xff", b"[1]", b'{"type": "anvil.bundle/v1", "type": "x"}'):
        with pytest.raises(FormatError):
            parse_bundle(data, content_sha256=HEX)


def test_the_id_and_name_expressions_are_exact() -> None:
    assert is_prompt_id("welcome.message")
    assert is_prompt_id("a_b.c-d.e_")
    assert is_prompt_id("a" * 128)
    assert not is_prompt_id("a" * 129)
    assert not is_prompt_id("-a")
    assert not is_prompt_id("a.")
    assert not is_prompt_id(None)  # type: ignore[arg-type]
    for pattern, good, bad in (
        (PROMPT_ID_RE, "x.y", "x.y\n"),
        (CHANNEL_RE, "prod-eu", "prod-eu\n"),
        (SEMVER_RE, "1.3.0-rc.1+b.5", "1.3.0\n"),
    ):
        assert pattern.match(good)
        assert not pattern.match(bad)


def test_canonical_json_is_the_design_3_serialization() -> None:
    obj = {"b": [1, 2.5, None, True], "a": "Grüße ✓", "c": {"z": 1, "y": {}}}
    expected = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert canonical_json(obj) == expected.encode("utf-8")
    assert b"\\u" not in canonical_json(obj)
    with pytest.raises(ValueError):
        canonical_json({"x": float("nan")})


def test_parse_json_object_refuses_duplicates_and_constants() -> None:
    assert parse_json_object(b'{"a": {"b": 1}}', "thing") == {"a": {"b": 1}}
    with pytest.raises(FormatError, match="thing repeats the member 'b'"):
        parse_json_object(b'{"a": {"b": 1, "b": 2}}', "thing")
    for constant in (b"NaN", b"Infinity", b"-Infinity"):
        with pytest.raises(FormatError):
            parse_json_object(b'{"a": ' + constant + b"}", "thing")
