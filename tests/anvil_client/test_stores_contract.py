"""One contract for every writable store: FileStore here, S3Store on moto here and on SeaweedFS
in tests/integration/test_stores_s3.py (which imports :class:`StoreContract`)."""

from __future__ import annotations

import multiprocessing
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from anvil_client.errors import (
    ConfigError,
    NotFound,
    PreconditionFailed,
    SizeLimitError,
    StoreError,
    StoreUnavailable,
)
from anvil_client.stores import (
    FileStore,
    GetResult,
    ObjectStore,
    cache_control_for,
    check_key,
    open_store,
)

POINTER = "projects/p1/channels/production.json"
HISTORY = "projects/p1/channels/production/history/000000000001.json"
BUNDLE = "projects/p1/bundles/" + "a" * 64 + ".jwe"

UNSAFE_KEYS = [
    "",
    "/abs/key.json",
    "../escape.json",
    "a/../../escape.json",
    "a/./b.json",
    "a//b.json",
    "a/b.json/",
    ".hidden",
    "a/.anvil-store.lock",
    "a\nb",
    "a.json\n",
    "a b.json",
    "a%2e%2e/b",
    "a\\b",
    "ünï.json",
    "x" * 1025,
]


class StoreContract:
    """Behaviour every writable :class:`ObjectStore` must share. Subclasses give ``store``."""

    def test_put_then_get(self, store: ObjectStore) -> None:
        put = store.put(POINTER, b'{"v":1}')
        got = store.get(POINTER)
        assert got == GetResult(data=b'{"v":1}', etag=put.etag, modified=True)
        assert got.etag

    def test_binary_and_empty_objects(self, store: ObjectStore) -> None:
        data = bytes(range(256)) * 3
        store.put("projects/p1/blob.bin", data, content_type="application/octet-stream")
        assert store.get("projects/p1/blob.bin").data == data
        store.put("projects/p1/empty.json", b"")
        assert store.get("projects/p1/empty.json").data == b""

    def test_missing_object_is_not_found(self, store: ObjectStore) -> None:
        with pytest.raises(NotFound, match="does not exist"):
            store.get("projects/p1/channels/nothing.json")
        with pytest.raises(NotFound):
            store.get("projects/p1/channels/nothing.json", if_none_match='"abc"')

    def test_conditional_get_is_a_result_not_an_error(self, store: ObjectStore) -> None:
        etag = store.put(POINTER, b"one").etag
        assert etag is not None
        unchanged = store.get(POINTER, if_none_match=etag)
        assert unchanged.modified is False
        assert unchanged.data == b""
        assert unchanged.etag == etag
        store.put(POINTER, b"two")
        changed = store.get(POINTER, if_none_match=etag)
        assert changed.modified is True
        assert changed.data == b"two"
        assert changed.etag != etag

    def test_if_none_match_star_creates_once(self, store: ObjectStore) -> None:
        store.put(BUNDLE, b"first", if_none_match=True)
        with pytest.raises(PreconditionFailed):
            store.put(BUNDLE, b"second", if_none_match=True)
        assert store.get(BUNDLE).data == b"first"

    def test_if_match_is_compare_and_swap(self, store: ObjectStore) -> None:
        first = store.put(POINTER, b"1", if_none_match=True).etag
        assert first is not None
        second = store.put(POINTER, b"2", if_match=first).etag
        assert second is not None and second != first
        with pytest.raises(PreconditionFailed):
            store.put(POINTER, b"3", if_match=first)  # stale: somebody published meanwhile
        assert store.get(POINTER).data == b"2"
        store.put(POINTER, b"3", if_match=second)
        assert store.get(POINTER).data == b"3"

    def test_if_match_on_a_missing_object_fails(self, store: ObjectStore) -> None:
        with pytest.raises(PreconditionFailed):
            store.put("projects/p1/channels/absent.json", b"x", if_match='"deadbeef"')
        with pytest.raises(NotFound):
            store.get("projects/p1/channels/absent.json")

    def test_both_conditions_at_once_is_a_programming_error(self, store: ObjectStore) -> None:
        with pytest.raises(ValueError, match="exclude"):
            store.put(POINTER, b"x", if_match='"a"', if_none_match=True)

    def test_unconditional_put_overwrites(self, store: ObjectStore) -> None:
        store.put(HISTORY, b"old")
        store.put(HISTORY, b"new")
        assert store.get(HISTORY).data == b"new"

    def test_size_cap(self, store: ObjectStore) -> None:
        store.put(BUNDLE, b"x" * 1000)
        assert len(store.get(BUNDLE, max_size=1000).data) == 1000
        with pytest.raises(SizeLimitError, match="999-byte limit"):
            store.get(BUNDLE, max_size=999)
        with pytest.raises(SizeLimitError):
            store.get(BUNDLE, max_size=0)

    def test_list_under_a_prefix(self, store: ObjectStore) -> None:
        keys = [POINTER, HISTORY, BUNDLE, "projects/p2/channels/production.json"]
        for key in keys:
            store.put(key, b"{}")
        assert store.list("projects/p1/") == sorted(keys[:3])
        assert store.list("projects/p1/channels/production") == sorted([POINTER, HISTORY])
        assert store.list("projects/p1/channels/production/history/") == [HISTORY]
        assert store.list("projects/p3/") == []
        assert store.list() == sorted(keys)

    def test_delete(self, store: ObjectStore) -> None:
        store.put(POINTER, b"x")
        store.delete(POINTER)
        with pytest.raises(NotFound):
            store.get(POINTER)
        store.delete(POINTER)  # deleting what is gone is fine
        assert store.list("projects/p1/") == []

    @pytest.mark.parametrize("key", UNSAFE_KEYS)
    def test_unsafe_keys_are_refused(self, store: ObjectStore, key: str) -> None:
        for attempt in (
            lambda: store.get(key),
            lambda: store.put(key, b"x"),
            lambda: store.delete(key),
        ):
            with pytest.raises(StoreError, match="unsafe object key") as caught:
                attempt()
            assert type(caught.value) is StoreError

    @pytest.mark.parametrize("prefix", ["../", "/etc", "a/../../", ".hidden/"])
    def test_unsafe_list_prefixes_are_refused(self, store: ObjectStore, prefix: str) -> None:
        with pytest.raises(StoreError, match="unsafe"):
            store.list(prefix)

    def test_repr_names_the_store(self, store: ObjectStore) -> None:
        assert store.url in repr(store)
        assert type(store).__name__ in repr(store)
        assert store.read_only is False


# -- FileStore ----------------------------------------------------------------------------


class TestFileStore(StoreContract):
    @pytest.fixture
    def store(self, tmp_path: Path) -> FileStore:
        return FileStore(tmp_path / "store")

    def test_objects_are_plain_files_readable_by_a_web_server(
        self, store: FileStore, tmp_path: Path
    ) -> None:
        store.put(POINTER, b"{}")
        path = tmp_path / "store" / POINTER
        assert path.read_bytes() == b"{}"
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
        assert store.url == (tmp_path / "store").resolve().as_uri()

    def test_no_temp_or_lock_files_are_listed(self, store: FileStore, tmp_path: Path) -> None:
        store.put(POINTER, b"1", if_none_match=True)
        (tmp_path / "store" / "projects" / "p1" / "channels" / ".x.json.123.tmp").write_bytes(b"")
        assert store.list() == [POINTER]
        assert (tmp_path / "store" / ".anvil-store.lock").exists()

    def test_directories_are_not_objects(self, store: FileStore) -> None:
        store.put(HISTORY, b"x")
        with pytest.raises(NotFound):
            store.get("projects/p1/channels/production")

    def test_unwritable_root_is_store_unavailable(self, tmp_path: Path) -> None:
        blocker = tmp_path / "file"
        blocker.write_bytes(b"")
        with pytest.raises(StoreUnavailable, match="PUT"):
            FileStore(blocker / "store").put(POINTER, b"x")

    def test_concurrent_compare_and_swap_across_processes(self, tmp_path: Path) -> None:
        root = tmp_path / "store"
        FileStore(root).put(POINTER, b"round-0", if_none_match=True)
        context = multiprocessing.get_context("spawn")
        workers, rounds = 4, 5
        barrier = context.Barrier(workers)
        results = context.Queue()
        processes = [
            context.Process(target=_cas_worker, args=(str(root), n, rounds, barrier, results))
            for n in range(workers)
        ]
        for process in processes:
            process.start()
        outcomes = [results.get(timeout=120) for _ in range(workers * rounds)]
        for process in processes:
            process.join(timeout=60)
            assert process.exitcode == 0
        results.close()
        results.join_thread()
        winners: dict[int, list[int]] = {r: [] for r in range(rounds)}
        for worker, round_no, won in outcomes:
            if won:
                winners[round_no].append(worker)
        assert all(len(w) == 1 for w in winners.values()), winners
        last = winners[rounds - 1][0]
        assert FileStore(root).get(POINTER).data == f"round-{rounds}-by-{last}".encode()


def _cas_worker(root: str, worker: int, rounds: int, barrier: Any, results: Any) -> None:
    """Each round every worker reads the same ETag, then all race to swap it."""
    store = FileStore(root)
    for round_no in range(rounds):
        barrier.wait()
        etag = store.get(POINTER).etag
        barrier.wait()
        try:
            store.put(POINTER, f"round-{round_no + 1}-by-{worker}".encode(), if_match=etag)
            won = True
        except PreconditionFailed:
            won = False
        results.put((worker, round_no, won))
        barrier.wait()


# -- S3Store on moto ----------------------------------------------------------------------


def object_headers(store: Any, key: str) -> dict[str, str]:
    """Content-Type and Cache-Control as S3 stored them."""
    head = store.client.head_object(Bucket=store.bucket, Key=f"{store.prefix}/{key}")
    return {"ContentType": head["ContentType"], "CacheControl": head["CacheControl"]}


class S3HeaderChecks:
    def test_content_type_and_cache_control_follow_design_2(self, store: Any) -> None:
        store.put(POINTER, b"{}")
        store.put(HISTORY, b"{}")
        store.put(BUNDLE, b"{}", if_none_match=True)
        immutable = "public, max-age=31536000, immutable"
        assert object_headers(store, POINTER) == {
            "ContentType": "application/json",
            "CacheControl": "no-cache",
        }
        assert object_headers(store, HISTORY)["CacheControl"] == "no-cache"
        assert object_headers(store, BUNDLE) == {
            "ContentType": "application/json",
            "CacheControl": immutable,
        }


class TestS3StoreOnMoto(StoreContract, S3HeaderChecks):
    @pytest.fixture
    def store(self, moto_s3: Any) -> Iterator[Any]:
        from anvil_client.stores import S3Store

        store = S3Store("anvil-test", "pfx", client=moto_s3)
        yield store
        store.close()

    def test_prefixes_isolate_stores_in_one_bucket(self, store: Any, moto_s3: Any) -> None:
        from anvil_client.stores import S3Store

        other = S3Store("anvil-test", "other", client=moto_s3)
        store.put(POINTER, b"mine")
        other.put(POINTER, b"theirs")
        assert store.get(POINTER).data == b"mine"
        assert other.list() == [POINTER]
        keys = [o["Key"] for o in moto_s3.list_objects_v2(Bucket="anvil-test")["Contents"]]
        assert sorted(keys) == [f"other/{POINTER}", f"pfx/{POINTER}"]

    def test_a_missing_bucket_is_a_clear_store_error(self, moto_s3: Any) -> None:
        from anvil_client.stores import S3Store

        store = S3Store("no-such-bucket", "pfx", client=moto_s3)
        with pytest.raises(StoreError, match="does not exist") as caught:
            store.put(POINTER, b"x")
        assert "botocore" not in type(caught.value).__module__


def test_s3_store_with_nothing_listening_is_unavailable() -> None:
    from anvil_client.stores import S3Store

    store = S3Store("b", "p", endpoint_url="http://127.0.0.1:9", region="us-east-1")
    try:
        with pytest.raises(StoreUnavailable, match="GET") as caught:
            store.get(POINTER)
        assert "\n" not in str(caught.value)
    finally:
        store.close()


# -- open_store and keys ------------------------------------------------------------------


def test_open_store_routes_each_scheme(tmp_path: Path) -> None:
    from anvil_client.stores import HttpStore, S3Store

    file_store = open_store(tmp_path.as_uri())
    assert isinstance(file_store, FileStore)
    assert file_store.root == tmp_path.resolve()
    s3 = open_store("s3://bucket/some/prefix?endpoint_url=http://127.0.0.1:8333&region=eu-west-1")
    assert isinstance(s3, S3Store)
    assert (s3.bucket, s3.prefix, s3.endpoint_url, s3.region) == (
        "bucket",
        "some/prefix",
        "http://127.0.0.1:8333",
        "eu-west-1",
    )
    s3.close()
    for url in ("https://cdn.example.com/anvil", "http://127.0.0.1:8080/store/"):
        http = open_store(url)
        assert isinstance(http, HttpStore)
        assert http.read_only
        http.close()


@pytest.mark.parametrize(
    "url",
    [
        "ftp://host/x",
        "store/relative",
        "file://otherhost/x",
        "file:relative/path",
        "file://",
        "s3:///prefix",
        "s3://bucket/p?endpoint=http://x",
        "s3://bucket/p?endpoint_url=ftp://x",
        "http:///nohost",
        "https://user:pw@host/x",
        "https://host/x?token=1",
        "http://host:99999/x",
    ],
)
def test_open_store_refuses_bad_urls(url: str) -> None:
    with pytest.raises(ConfigError):
        open_store(url)


def test_check_key_and_cache_control() -> None:
    for key in (POINTER, HISTORY, BUNDLE, "a", "a-b_c.d/e"):
        check_key(key)
    for key in UNSAFE_KEYS:
        with pytest.raises(StoreError):
            check_key(key)
    assert cache_control_for(BUNDLE) == "public, max-age=31536000, immutable"
    assert cache_control_for(POINTER) == "no-cache"
    assert cache_control_for(HISTORY) == "no-cache"


def test_file_store_url_round_trips_through_open_store(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "with space")
    store.put(POINTER, b"x")
    reopened = open_store(store.url)
    assert isinstance(reopened, FileStore)
    assert reopened.get(POINTER).data == b"x"
    assert os.path.isdir(tmp_path / "with space")
