"""Gradual rollout: deterministic, monotone in the percentage, and a fair split."""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from anvil_client.wire import Pointer, in_rollout, select_release

NEW, OLD = "1" * 64, "2" * 64
INSTANCE_IDS = st.uuids(version=4).map(str)
PERCENT = st.integers(min_value=0, max_value=100)


def _release(sha: str, version: str) -> dict[str, Any]:
    return {
        "version": version,
        "prompt_set_id": "s",
        "content_sha256": sha,
        "object": {
            "path": f"projects/p/bundles/{sha}.jwe",
            "sha256": sha,
            "size": 1,
            "encoding": "jwe",
        },
    }


def _pointer(percent: int | None) -> Pointer:
    body = {
        "type": "anvil.pointer/v1",
        "project_id": "p",
        "channel": "production",
        "sequence": 3,
        "published_at": "2026-01-15T10:30:00Z",
        "release": _release(NEW, "2.0.0"),
        "rollout": None
        if percent is None
        else {"percent": percent, "previous": _release(OLD, "1.0.0")},
    }
    return Pointer.parse(json.dumps(body).encode())


def test_the_bucket_is_the_design_formula() -> None:
    instance = "3f0f8a8e-2b55-4c3e-9d0a-2f6f3e1f4b11"
    bucket = int(hashlib.sha256(f"{instance}:{NEW}".encode()).hexdigest()[:8], 16) % 100
    assert in_rollout(instance, NEW, bucket + 1)
    assert not in_rollout(instance, NEW, bucket)


@given(INSTANCE_IDS, PERCENT)
def test_select_release_is_deterministic(instance_id: str, percent: int) -> None:
    pointer = _pointer(percent)
    first = select_release(pointer, instance_id)
    assert select_release(_pointer(percent), instance_id) == first
    assert first.content_sha256 == (NEW if in_rollout(instance_id, NEW, percent) else OLD)


@given(INSTANCE_IDS, PERCENT, PERCENT)
def test_an_instance_that_is_in_stays_in_as_the_percentage_grows(
    instance_id: str, p: int, q: int
) -> None:
    low, high = sorted((p, q))
    if select_release(_pointer(low), instance_id).content_sha256 == NEW:
        assert select_release(_pointer(high), instance_id).content_sha256 == NEW


@given(INSTANCE_IDS)
def test_zero_and_hundred_and_no_rollout(instance_id: str) -> None:
    assert select_release(_pointer(0), instance_id).content_sha256 == OLD
    assert select_release(_pointer(100), instance_id).content_sha256 == NEW
    assert select_release(_pointer(None), instance_id).content_sha256 == NEW


def test_fifty_percent_splits_a_thousand_instances_near_half() -> None:
    ids = [str(uuid.uuid4()) for _ in range(1000)]
    served_new = sum(select_release(_pointer(50), i).content_sha256 == NEW for i in ids)
    # Binomial(1000, 0.5): the band is more than six standard deviations (about 16) wide.
    assert 400 <= served_new <= 600, served_new


def test_the_bucket_depends_on_the_release() -> None:
    # Each release draws its own cohort: not always the same instances go first.
    ids = [str(uuid.uuid4()) for _ in range(200)]
    first = {i for i in ids if in_rollout(i, NEW, 50)}
    second = {i for i in ids if in_rollout(i, "3" * 64, 50)}
    assert first != second
