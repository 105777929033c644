"""Bundles (DESIGN §3): a validated prompt set serialized canonically, with its hash.

    >>> from publisher import build_bundle
    >>> build_bundle({"hi": {"template": "Hi"}}, project_id="p", version="1.0.0",
    ...              prompt_set_id="s", created_at="2026-01-15T10:30:00Z").content_sha256[:8]
    'c81d009f'

The bytes are what gets encrypted and what ``content_sha256`` names; they are never
re-serialized after this point.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from anvil_client.errors import FormatError, ValidationError
from anvil_client.wire import (
    BUNDLE_MAX_SIZE,
    BUNDLE_TYPE,
    SEMVER_RE,
    canonical_json,
    format_timestamp,
    parse_json_object,
    parse_timestamp,
    sha256_hex,
)
from publisher._validate import validate_prompts

__all__ = [
    "BuiltBundle",
    "build_bundle",
    "check_identifier",
    "header_problems",
]

_IDENTIFIER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


@dataclass(frozen=True)
class BuiltBundle:
    """Canonical bundle bytes ready to publish; ``content_sha256`` names exactly ``data``."""

    data: bytes = field(repr=False)
    content_sha256: str
    document: dict[str, Any] = field(repr=False, compare=False)
    version: str
    prompt_set_id: str
    project_id: str
    timings: Mapping[str, float] = field(default_factory=dict, repr=False, compare=False)
    """Seconds spent validating and serializing (for ``PublishResult.timings``)."""

    @property
    def created_at(self) -> str:
        return str(self.document["created_at"])

    @property
    def prompt_count(self) -> int:
        return len(self.document["snapshot"])

    @classmethod
    def from_bytes(cls, data: bytes, *, project_id: str | None = None) -> BuiltBundle:
        """Check bundle bytes made elsewhere (``anvil-publish build``, the FORGE) before publishing.

        The bytes must be the canonical serialization of a valid bundle whose ``variables``
        are the derived ones, so what is published is exactly what ``build_bundle`` makes.

        Raises:
            ValidationError: listing what is wrong (not JSON, wrong type, invalid prompts,
                another project, not canonical, too large).
        """
        if len(data) > BUNDLE_MAX_SIZE:
            raise ValidationError([f"bundle is larger than the {BUNDLE_MAX_SIZE}-byte limit"])
        try:
            doc = parse_json_object(data, "bundle")
        except FormatError as e:
            raise ValidationError([str(e)]) from e
        snapshot = _checked_fields(doc, project_id)
        built = build_bundle(
            snapshot,
            project_id=doc["project_id"],
            version=doc["version"],
            prompt_set_id=doc["prompt_set_id"],
            created_at=doc["created_at"],
        )
        if built.data != data:
            changed = [
                pid for pid, prompt in built.document["snapshot"].items() if snapshot[pid] != prompt
            ]
            detail = (
                f"the variables or fields of {', '.join(map(repr, changed[:5]))} differ from "
                "what the templates give"
                if changed
                else "it is not in canonical form (sorted keys, no spaces, UTF-8)"
            )
            raise ValidationError([f"bundle bytes are not what anvil-publish builds: {detail}"])
        return built


def _checked_fields(doc: dict[str, Any], project_id: str | None) -> dict[str, Any]:
    """The snapshot of a bundle document whose type and header fields are as they must be.

    Raises:
        ValidationError: listing what is wrong.
    """
    if doc.get("type") != BUNDLE_TYPE:
        raise ValidationError([f"bundle type must be {BUNDLE_TYPE!r}, got {doc.get('type')!r}"])
    problems = []
    for name in ("version", "project_id", "prompt_set_id", "created_at"):
        if not isinstance(doc.get(name), str):
            problems.append(f"bundle field {name!r} must be a string")
    snapshot: dict[str, Any] = doc.get("snapshot")  # type: ignore[assignment]
    if not isinstance(snapshot, dict):
        problems.append("bundle snapshot must be an object of prompt id to prompt")
    if problems:
        raise ValidationError(problems)
    if project_id is not None and doc["project_id"] != project_id:
        raise ValidationError(
            [f"bundle belongs to project {doc['project_id']!r}, not {project_id!r}"]
        )
    unknown = sorted(
        set(doc) - {"type", "version", "project_id", "prompt_set_id", "created_at", "snapshot"}
    )
    if unknown:
        raise ValidationError([f"bundle has unknown fields: {', '.join(unknown)}"])
    return snapshot


def check_identifier(value: str, what: str) -> None:
    """Project and prompt-set ids become parts of object keys: keep them to safe characters.

    Raises:
        ValidationError: if ``value`` is not 1-128 of ``[A-Za-z0-9._-]`` starting alphanumeric.
    """
    if not isinstance(value, str) or not _IDENTIFIER_RE.match(value):
        raise ValidationError(
            [f"{what} {str(value)[:140]!r} must be 1-128 letters, digits, '.', '_' or '-'"]
        )


def header_problems(*, project_id: str, version: str, prompt_set_id: str) -> list[str]:
    """What is wrong with a bundle's header fields (empty when nothing is)."""
    problems: list[str] = []
    for value, what in ((project_id, "project id"), (prompt_set_id, "prompt set id")):
        try:
            check_identifier(value, what)
        except ValidationError as e:
            problems.extend(e.problems)
    if not isinstance(version, str) or not SEMVER_RE.match(version) or len(version) > 256:
        problems.append(f"version {str(version)[:80]!r} is not a semantic version like 1.2.3")
    return problems


def build_bundle(
    prompts: Mapping[str, Mapping[str, Any]],
    *,
    project_id: str,
    version: str,
    prompt_set_id: str,
    created_at: str | datetime | None = None,
) -> BuiltBundle:
    """Validate a prompt set and serialize it canonically as a bundle (DESIGN §3).

    ``created_at`` defaults to now; a string must be an RFC 3339 timestamp and is kept as
    given, so rebuilding a stored bundle from its own fields gives identical bytes.

    Raises:
        ValidationError: listing every problem: the header fields (semver version, ids,
            timestamp), every invalid prompt, or a bundle over 64 MiB.
    """
    problems = header_problems(project_id=project_id, version=version, prompt_set_id=prompt_set_id)
    stamp = _created_at(created_at, problems)
    started = time.perf_counter()
    try:
        snapshot = validate_prompts(prompts)
    except ValidationError as e:
        problems.extend(e.problems)
    if problems:
        raise ValidationError(problems)
    validated = time.perf_counter()
    document = {
        "type": BUNDLE_TYPE,
        "version": version,
        "project_id": project_id,
        "prompt_set_id": prompt_set_id,
        "created_at": stamp,
        "snapshot": snapshot,
    }
    data = canonical_json(document)
    if len(data) > BUNDLE_MAX_SIZE:
        raise ValidationError(
            [f"bundle is {len(data)} bytes; at most {BUNDLE_MAX_SIZE} (64 MiB) are allowed"]
        )
    serialized = time.perf_counter()
    return BuiltBundle(
        data=data,
        content_sha256=sha256_hex(data),
        document=document,
        version=version,
        prompt_set_id=prompt_set_id,
        project_id=project_id,
        timings={"validate": validated - started, "serialize": serialized - validated},
    )


def _created_at(value: str | datetime | None, problems: list[str]) -> str:
    if value is None:
        return format_timestamp(datetime.now(UTC))
    if isinstance(value, datetime):
        if value.tzinfo is None:
            problems.append("created_at must be a time-zone-aware datetime")
            return ""
        return format_timestamp(value)
    try:
        parse_timestamp(value)
    except (FormatError, TypeError):
        problems.append(f"created_at {str(value)[:80]!r} is not an RFC 3339 timestamp")
    return value
