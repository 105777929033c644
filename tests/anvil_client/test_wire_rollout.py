"""Gradual rollout: deterministic, monotone in the percentage, a fair split, keyed by the list."""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from anvil_client.wire import Pointer, in_rollout, rollout_key, select_releases

NEW, OLD, OTHER = "1" * 64, "2" * 64, "4" * 64
SET_A, SET_B = "set-a", "set-b"
INSTANCE_IDS = st.uuids(version=4).map(str)
PERCENT = st.integers(min_value=0, max_value=100)


def _release(sha: str, version: str, set_id: str = SET_A) -> dict[str, Any]:
    return {
        "version": version,
        "prompt_set_id": set_id,
        "name": set_id.upper(),
        "content_sha256": sha,
        "object": {
            "path": f"projects/p/bundles/{sha}.jwe",
            "sha256": sha,
            "size": 1,
            "encoding": "jwe",
        },
    }


def _pointer(percent: int | None, *, two_sets: bool = False) -> Pointer:
    new = [_release(NEW, "2.0.0")]
    old = [_release(OLD, "1.0.0")]
    if two_sets:
        new.append(_release(OTHER, "1.0.0", SET_B))
        old.append(_release(OTHER, "1.0.0", SET_B))
    body = {
        "type": "anvil.pointer/v2",
        "project_id": "p",
        "channel": "production",
        "sequence": 3,
        "published_at": "2026-01-15T10:30:00Z",
        "releases": new,
        "rollout": None if percent is None else {"percent": percent, "previous": old},
    }
    return Pointer.parse(json.dumps(body).encode())


def _first(pointer: Pointer, instance_id: str) -> str:
    return select_releases(pointer, instance_id)[0].content_sha256


def test_the_bucket_is_the_design_formula() -> None:
    instance = "3f0f8a8e-2b55-4c3e-9d0a-2f6f3e1f4b11"
    bucket = int(hashlib.sha256(f"{instance}:{NEW}".encode()).hexdigest()[:8], 16) % 100
    assert in_rollout(instance, NEW, bucket + 1)
    assert not in_rollout(instance, NEW, bucket)


def test_the_key_of_several_entries_is_their_hashes_joined_by_commas() -> None:
    pointer = _pointer(50, two_sets=True)
    key = f"{NEW},{OTHER}"
    assert rollout_key(pointer.releases) == key
    for instance in (str(uuid.uuid4()) for _ in range(50)):
        bucket = int(hashlib.sha256(f"{instance}:{key}".encode()).hexdigest()[:8], 16) % 100
        expected = NEW if bucket < 50 else OLD
        assert _first(pointer, instance) == expected


@given(INSTANCE_IDS, PERCENT)
def test_select_releases_is_deterministic(instance_id: str, percent: int) -> None:
    pointer = _pointer(percent)
    first = select_releases(pointer, instance_id)
    assert select_releases(_pointer(percent), instance_id) == first
    assert first[0].content_sha256 == (NEW if in_rollout(instance_id, NEW, percent) else OLD)


@given(INSTANCE_IDS, PERCENT)
def test_a_whole_list_is_selected_never_a_mix(instance_id: str, percent: int) -> None:
    pointer = _pointer(percent, two_sets=True)
    assert pointer.rollout is not None
    chosen = select_releases(pointer, instance_id)
    assert chosen in (list(pointer.releases), list(pointer.rollout.previous))


@given(INSTANCE_IDS, PERCENT, PERCENT)
def test_an_instance_that_is_in_stays_in_as_the_percentage_grows(
    instance_id: str, p: int, q: int
) -> None:
    low, high = sorted((p, q))
    if _first(_pointer(low), instance_id) == NEW:
        assert _first(_pointer(high), instance_id) == NEW


@given(INSTANCE_IDS)
def test_zero_and_hundred_and_no_rollout(instance_id: str) -> None:
    assert _first(_pointer(0), instance_id) == OLD
    assert _first(_pointer(100), instance_id) == NEW
    assert _first(_pointer(None), instance_id) == NEW


def test_fifty_percent_splits_a_thousand_instances_near_half() -> None:
    ids = [str(uuid.uuid4()) for _ in range(1000)]
    served_new = sum(_first(_pointer(50), i) == NEW for i in ids)
    # Binomial(1000, 0.5): the band is more than six standard deviations (about 16) wide.
    assert 400 <= served_new <= 600, served_new


def test_the_bucket_depends_on_the_release() -> None:
    # Each release draws its own cohort: not always the same instances go first.
    ids = [str(uuid.uuid4()) for _ in range(200)]
    first = {i for i in ids if in_rollout(i, NEW, 50)}
    second = {i for i in ids if in_rollout(i, "3" * 64, 50)}
    assert first != second
