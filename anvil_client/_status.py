"""What ``status()`` reports (DESIGN §7), as typed dictionaries."""

from __future__ import annotations

from typing import Literal, TypedDict

from anvil_client._config import Mode
from anvil_client._snapshot import Source


class ReleaseStatus(TypedDict):
    """One served entry in ``status()["releases"]``."""

    prompt_set_id: str
    name: str
    version: str
    content_sha256: str
    prompts: int


class Status(TypedDict):
    """What ``status()`` reports (every value is JSON-serialisable).

    ``releases`` lists the entries served; ``version`` is the one entry's version, or with
    several entries ``name@version`` joined by ``, `` (DESIGN §7). ``content_sha256`` and
    ``prompt_set_id`` are the one entry's, ``None`` when several are served.
    """

    project_id: str
    channel: str
    mode: Mode
    mode_source: Literal["override", "config", "default"]
    version: str | None
    sequence: int | None
    content_sha256: str | None
    prompt_set_id: str | None
    prompts: int
    releases: list[ReleaseStatus]
    source: Source | None
    published_at: str | None
    expires_at: str | None
    last_sync: str | None
    last_check: str | None
    last_error: str | None
    stale: bool
    instance_id: str
    leader: bool
    store: str
    cache_dir: str
    last_heartbeat: str | None
    heartbeat_error: str | None
    hints: Literal["off", "connecting", "connected"]
