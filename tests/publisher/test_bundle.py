"""build_bundle and BuiltBundle: canonical bytes, content hash, header checks."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from anvil_client.errors import ValidationError
from anvil_client.wire import canonical_json, parse_bundle, sha256_hex
from publisher import BuiltBundle, build_bundle


def build(prompts: Any, **overrides: Any) -> BuiltBundle:
    fields = {
        "project_id": "6f1c2a4e-8d3b-4c5a-9e7f-0a1b2c3d4e5f",
        "version": "1.2.3",
        "prompt_set_id": "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d",
        "created_at": "2026-01-15T10:30:00Z",
        **overrides,
    }
    return build_bundle(prompts, **fields)


def test_bundle_is_canonical_json_named_by_its_hash(prompts: dict[str, Any]) -> None:
    built = build(prompts)
    assert built.data == canonical_json(built.document)
    assert built.content_sha256 == sha256_hex(built.data)
    assert built.document["type"] == "anvil.bundle/v1"
    assert (built.version, built.prompt_count, built.created_at) == (
        "1.2.3",
        3,
        "2026-01-15T10:30:00Z",
    )
    assert "Résumé".encode() in built.data  # UTF-8, not \\u escapes
    parsed = parse_bundle(built.data, content_sha256=built.content_sha256)
    assert parsed.prompts["support.chat"].variables == ("product", "question")
    assert set(built.timings) == {"validate", "serialize"}


def test_vectors_bundle_rebuilds_to_identical_bytes(vectors: dict[str, Any]) -> None:
    original = vectors["bundle_1_0_0"]
    doc = json.loads(original)
    # the prompts as a prompt file holds them: no variables (they are derived)
    prompts = {
        pid: {k: v for k, v in prompt.items() if k != "variables"}
        for pid, prompt in doc["snapshot"].items()
    }
    rebuilt = build_bundle(
        prompts,
        project_id=doc["project_id"],
        version=doc["version"],
        prompt_set_id=doc["prompt_set_id"],
        created_at=doc["created_at"],
    )
    assert rebuilt.data == original
    assert rebuilt.content_sha256 == vectors["expected"]["step1"]["production"]["content_sha256"]
    assert BuiltBundle.from_bytes(original).content_sha256 == rebuilt.content_sha256


def test_created_at_forms(prompts: dict[str, Any]) -> None:
    moment = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
    assert build(prompts, created_at=moment).created_at == "2026-03-04T05:06:07Z"
    assert build(prompts, created_at=None).created_at.endswith("Z")
    with pytest.raises(ValidationError, match="time-zone-aware"):
        build(prompts, created_at=datetime(2026, 1, 1))


def test_header_and_prompt_problems_are_reported_together() -> None:
    with pytest.raises(ValidationError) as caught:
        build(
            {"a": {"template": "{% if %}"}},
            version="1.0",
            project_id="../etc",
            prompt_set_id="",
            created_at="yesterday",
        )
    text = "\n".join(caught.value.problems)
    assert "version '1.0' is not a semantic version" in text
    assert "project id '../etc'" in text
    assert "prompt set id ''" in text
    assert "created_at 'yesterday'" in text
    assert "prompt 'a': template line 1" in text


def test_prerelease_versions(prompts: dict[str, Any]) -> None:
    assert build(prompts, version="1.3.0-rc.1").version == "1.3.0-rc.1"
    assert build(prompts, version="1.3.0-dev.4+build.7").version == "1.3.0-dev.4+build.7"


def test_size_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    from publisher import _bundle

    monkeypatch.setattr(_bundle, "BUNDLE_MAX_SIZE", 500)
    with pytest.raises(ValidationError, match="at most 500"):
        build({f"p{i}": {"template": "x" * 50} for i in range(10)})
    with pytest.raises(ValidationError, match="larger than the 500-byte limit"):
        BuiltBundle.from_bytes(b" " * 501)


def test_from_bytes_refuses_what_build_would_not_make(prompts: dict[str, Any]) -> None:
    built = build(prompts)
    doc = json.loads(built.data)
    pretty = json.dumps(doc, indent=2).encode()
    with pytest.raises(ValidationError, match="not in canonical form"):
        BuiltBundle.from_bytes(pretty)
    doc["snapshot"]["welcome.message"]["variables"] = ["name"]
    with pytest.raises(ValidationError, match=r"variables or fields of 'welcome.message' differ"):
        BuiltBundle.from_bytes(canonical_json(doc))
    with pytest.raises(ValidationError, match="belongs to project"):
        BuiltBundle.from_bytes(built.data, project_id="another")
    with pytest.raises(ValidationError, match="not valid UTF-8 JSON"):
        BuiltBundle.from_bytes(b"{nope")
    with pytest.raises(ValidationError, match="bundle type must be"):
        BuiltBundle.from_bytes(b'{"type": "other"}')
    with pytest.raises(ValidationError, match="unknown fields: extra"):
        BuiltBundle.from_bytes(canonical_json({**json.loads(built.data), "extra": 1}))
    broken = json.loads(built.data)
    broken["snapshot"]["welcome.message"]["template"] = "{{ }}"
    with pytest.raises(ValidationError, match=r"prompt .welcome.message.: template line 1"):
        BuiltBundle.from_bytes(canonical_json(broken))
