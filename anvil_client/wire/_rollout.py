"""Gradual rollout: which entry list an instance serves (DESIGN §4).

>>> from anvil_client.wire import in_rollout
>>> in_rollout("7e3c2a44-1b2c-4d5e-8f90-a1b2c3d4e5f6", "ab" * 32, 100)
True
"""

from __future__ import annotations

import hashlib

from anvil_client.wire._models import Pointer, Release, rollout_key


def in_rollout(instance_id: str, key: str, percent: int) -> bool:
    """Stable bucket: an instance that is in at ``percent`` stays in at any higher percent.

    ``key`` is :func:`rollout_key` of the new list (its entries' hashes joined by ``,``).
    """
    digest = hashlib.sha256(f"{instance_id}:{key}".encode()).hexdigest()
    return int(digest[:8], 16) % 100 < percent


def select_releases(pointer: Pointer, instance_id: str) -> list[Release]:
    """The entries this instance serves: ``releases`` unless a rollout keeps it on ``previous``."""
    rollout = pointer.rollout
    if rollout is None or in_rollout(instance_id, rollout_key(pointer.releases), rollout.percent):
        return list(pointer.releases)
    return list(rollout.previous)
