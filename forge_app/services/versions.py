"""Versions of a prompt set: the semver sequence, the newest release and the immutable
snapshot each version holds (the exact bundle bytes, DESIGN §3).

    >>> next_version("1.4.2", "minor")
    '1.5.0'
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from anvil_client.errors import ValidationError
from anvil_client.wire import SEMVER_RE
from forge_app.errors import ForgeError
from forge_app.models import PromptSet, PromptSetVersion, utcnow

__all__ = [
    "BUMPS",
    "IS_RELEASE",
    "latest_release",
    "new_version",
    "next_version",
    "snapshot_prompts",
]

BUMPS = ("patch", "minor", "major")


def snapshot_prompts(version: PromptSetVersion) -> dict[str, dict[str, Any]]:
    """A version's prompts in prompt-file shape (the bundle's snapshot without ``variables``)."""
    snapshot = json.loads(version.bundle_json)["snapshot"]
    out = {}
    for key, prompt in snapshot.items():
        entry = {k: v for k, v in prompt.items() if k != "variables"}
        entry.setdefault("metadata", {})
        out[key] = entry
    return out


#: In a query: the versions that are releases, not pre-releases (``-rc.N``/``-dev.N``).
IS_RELEASE = ~PromptSetVersion.version.contains("-")


def latest_release(session: Session, prompt_set: PromptSet) -> PromptSetVersion | None:
    """The newest version that is not a pre-release (``-rc.N``/``-dev.N`` are not)."""
    return session.scalar(
        select(PromptSetVersion)
        .where(
            PromptSetVersion.prompt_set_id == prompt_set.id,
            IS_RELEASE,
        )
        .order_by(PromptSetVersion.id.desc())
        .limit(1)
    )


def next_version(current: str | None, bump: str) -> str:
    """The version after ``current`` (``None``: no version yet, counted from 0.0.0).

    Raises:
        ValueError: for an unknown bump or a ``current`` that is not semver.
    """
    if bump not in BUMPS:
        raise ValueError(f"bump must be one of {', '.join(BUMPS)}")
    major = minor = patch = 0
    if current is not None:
        match = SEMVER_RE.match(current)
        if match is None:
            raise ValueError(f"{current!r} is not a semantic version")
        major, minor, patch = (int(match.group(i)) for i in (1, 2, 3))
    if bump == "major":
        return f"{major + 1}.0.0"
    if bump == "minor":
        return f"{major}.{minor + 1}.0"
    return f"{major}.{minor}.{patch + 1}"


def new_version(
    prompt_set: PromptSet,
    prompts: dict[str, dict[str, Any]],
    version: str,
    *,
    invalid: str,
    changelog: str,
    submitted_by_id: int | None,
    approved_by_id: int | None,
) -> PromptSetVersion:
    """A version of ``prompts`` (its bundle built now), not yet added to the session.

    Raises:
        ForgeError: with ``invalid`` and the problems found, if the prompts do not validate.
    """
    from publisher import build_bundle

    created_at = utcnow()
    try:
        built = build_bundle(
            prompts,
            project_id=str(prompt_set.project_id),
            version=version,
            prompt_set_id=str(prompt_set.id),
            created_at=created_at,
        )
    except ValidationError as e:
        raise ForgeError(invalid, problems=list(e.problems)) from e
    return PromptSetVersion(
        prompt_set_id=prompt_set.id,
        version=version,
        bundle_json=built.data.decode("utf-8"),
        content_sha256=built.content_sha256,
        prompt_count=built.prompt_count,
        changelog=changelog,
        created_at=created_at,
        submitted_by_id=submitted_by_id,
        approved_by_id=approved_by_id,
    )
