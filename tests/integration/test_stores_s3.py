"""The store contract on a real S3 server (SeaweedFS), and HttpStore reading it anonymously."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from anvil_client.errors import NotFound, PreconditionFailed, SizeLimitError, StoreError
from anvil_client.stores import HttpStore, S3Store, open_store
from tests.anvil_client.test_stores_contract import (
    BUNDLE,
    POINTER,
    S3HeaderChecks,
    StoreContract,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def bucket(seaweedfs: Any) -> str:
    """One public-read bucket for this module; every test works under its own prefix in it.

    The test SeaweedFS runs with credentials (so anonymous requests are denied); a bucket
    policy granting ``s3:GetObject`` to everyone is how a public bucket is made on S3 too.
    """
    name = str(seaweedfs.create_bucket(f"stores-{uuid.uuid4().hex[:10]}"))
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": "*",
                "Action": ["s3:GetObject"],
                "Resource": [f"arn:aws:s3:::{name}/*"],
            }
        ],
    }
    seaweedfs.client().put_bucket_policy(Bucket=name, Policy=json.dumps(policy))
    return name


@pytest.fixture
def prefix() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


class TestS3StoreOnSeaweedFS(StoreContract, S3HeaderChecks):
    @pytest.fixture
    def store(self, seaweedfs: Any, bucket: str, prefix: str) -> Iterator[S3Store]:
        store = S3Store(bucket, prefix, endpoint_url=seaweedfs.endpoint, region="us-east-1")
        yield store
        store.close()

    def test_concurrent_compare_and_swap(self, store: S3Store) -> None:
        store.put(POINTER, b"round-0", if_none_match=True)
        workers, rounds = 4, 3
        barrier = threading.Barrier(workers)
        outcomes: list[tuple[int, int, bool]] = []
        lock = threading.Lock()

        def work(worker: int) -> None:
            for round_no in range(rounds):
                barrier.wait()
                etag = store.get(POINTER).etag
                barrier.wait()
                try:
                    store.put(POINTER, f"{round_no + 1}-{worker}".encode(), if_match=etag)
                    won = True
                except PreconditionFailed:
                    won = False
                with lock:
                    outcomes.append((worker, round_no, won))
                barrier.wait()

        threads = [threading.Thread(target=work, args=(n,)) for n in range(workers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        for round_no in range(rounds):
            winners = [w for w, r, won in outcomes if r == round_no and won]
            assert len(winners) == 1, (round_no, outcomes)


def test_open_store_with_the_fixture_url(seaweed_bucket: str) -> None:
    store = open_store(seaweed_bucket)
    try:
        assert isinstance(store, S3Store)
        store.put(POINTER, b"{}", if_none_match=True)
        assert store.list() == [POINTER]
    finally:
        store.close()


@pytest.fixture
def stores(seaweedfs: Any, bucket: str, prefix: str) -> Iterator[tuple[S3Store, HttpStore]]:
    writer = S3Store(bucket, prefix, endpoint_url=seaweedfs.endpoint, region="us-east-1")
    reader = HttpStore(f"{seaweedfs.endpoint}/{bucket}/{prefix}", timeout=10)
    yield writer, reader
    writer.close()
    reader.close()


def test_http_store_reads_the_bucket_anonymously(stores: tuple[S3Store, HttpStore]) -> None:
    writer, reader = stores
    put = writer.put(POINTER, b'{"sequence": 1}')
    got = reader.get(POINTER)
    assert got.data == b'{"sequence": 1}'
    assert got.etag == put.etag
    assert got.modified


def test_http_store_conditional_get_on_seaweedfs(stores: tuple[S3Store, HttpStore]) -> None:
    writer, reader = stores
    writer.put(POINTER, b"one")
    etag = reader.get(POINTER).etag
    assert etag
    for _ in range(3):
        unchanged = reader.get(POINTER, if_none_match=etag)
        assert unchanged.modified is False
        assert unchanged.data == b""
    writer.put(POINTER, b"two")
    changed = reader.get(POINTER, if_none_match=etag)
    assert changed.modified and changed.data == b"two"


def test_http_store_errors_on_seaweedfs(stores: tuple[S3Store, HttpStore]) -> None:
    writer, reader = stores
    with pytest.raises(NotFound):
        reader.get("projects/p1/channels/none.json")
    writer.put(BUNDLE, b"x" * 4096, if_none_match=True)
    with pytest.raises(SizeLimitError):
        reader.get(BUNDLE, max_size=4095)
    assert reader.get(BUNDLE, max_size=4096).data == b"x" * 4096
    with pytest.raises(StoreError, match="read-only"):
        reader.put(POINTER, b"x")


def test_http_store_on_a_private_bucket_says_why(seaweed_bucket: str, seaweedfs: Any) -> None:
    writer = open_store(seaweed_bucket)
    bucket_name = seaweed_bucket.split("/")[2]
    reader = HttpStore(f"{seaweedfs.endpoint}/{bucket_name}/anvil")
    try:
        writer.put(POINTER, b"{}")
        with pytest.raises(StoreError, match=r"HTTP 403.*anonymous reads") as caught:
            reader.get(POINTER)
        assert not isinstance(caught.value, NotFound)
    finally:
        writer.close()
        reader.close()
