"""Gradual rollout: which release an instance serves (DESIGN §4)."""

from __future__ import annotations

import hashlib

from anvil_client.wire._models import Pointer, Release


def in_rollout(instance_id: str, content_sha256: str, percent: int) -> bool:
    """Stable bucket: an instance that is in at ``percent`` stays in at any higher percent."""
    digest = hashlib.sha256(f"{instance_id}:{content_sha256}".encode()).hexdigest()
    return int(digest[:8], 16) % 100 < percent


def select_release(pointer: Pointer, instance_id: str) -> Release:
    """The release this instance serves: ``release`` unless a rollout keeps it on ``previous``."""
    rollout = pointer.rollout
    if rollout is None:
        return pointer.release
    if in_rollout(instance_id, pointer.release.content_sha256, rollout.percent):
        return pointer.release
    return rollout.previous
