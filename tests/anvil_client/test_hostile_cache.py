"""A disk cache or bootstrap file tampered with between runs, byte by byte.

Whatever is on disk, the client starts (no exception out of the constructor, no hang),
serves nothing older than the highest sequence it ever accepted, and says what it refused.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from anvil_client import AnvilClient, PromptNotFound
from anvil_client.errors import RollbackError, StoreUnavailable
from anvil_client.wire import sha256_hex
from tests.anvil_client.hostile_kit import V1, V2, MakeClient, check_sentence, signed
from tests.anvil_client.spy_stores import SpyStore
from tests.anvil_client.wire_publisher import Published, WirePublisher, make_bundle


@pytest.fixture
def two_versions(
    publisher: WirePublisher, make_client: MakeClient
) -> tuple[Published, Published, Path]:
    """v1 then v2 synced into the cache; returns both publications and the cache dir."""
    old = publisher.publish(V1, version="1.0.0")
    client = make_client()
    client.sync()
    new = publisher.publish(V2, version="2.0.0")
    client.sync()
    client.close()
    return old, new, Path(client.status()["cache_dir"])


def v1_served(client: AnvilClient) -> bool:
    return client.prompt("welcome.message", fallback="none", name="Ada") == "Welcome Ada!"


def started_within(factory: Callable[[], AnvilClient], unblock: Callable[[], None]) -> AnvilClient:
    """Build a client in a thread; fail (after unblocking it) if that takes over 10 s."""
    made: list[Any] = []
    thread = threading.Thread(target=lambda: made.append(_call(factory)), daemon=True)
    thread.start()
    thread.join(timeout=10)
    if thread.is_alive():
        unblock()
        thread.join(timeout=10)
        pytest.fail("the client hung while reading its disk cache")
    result = made[0]
    if isinstance(result, BaseException):
        raise result
    assert isinstance(result, AnvilClient)
    return result


def _call(factory: Callable[[], AnvilClient]) -> AnvilClient | BaseException:
    try:
        return factory()
    except BaseException as e:  # handed to the test thread
        return e


def open_fifo_writer(path: Path) -> Callable[[], None]:
    def unblock() -> None:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)

    return unblock


# --- pointer.json ------------------------------------------------------------------------


def test_an_older_validly_signed_pointer_put_in_the_cache_is_not_served(
    two_versions: tuple[Published, Published, Path],
    make_client: MakeClient,
    store: SpyStore,
) -> None:
    old, _, directory = two_versions
    (directory / "pointer.json").write_bytes(old.envelope)  # v1's bundle is still cached
    store.down = True
    restarted = make_client()
    assert not v1_served(restarted)
    assert restarted.status()["version"] is None
    error = restarted.status()["last_error"] or ""
    check_sentence(error)
    assert "older" in error and "sequence 1" in error
    store.down = False
    restarted.sync()
    assert restarted.prompt("welcome.message", name="Ada") == "Hello Ada, v2."


def test_an_older_pointer_appearing_in_the_cache_of_a_running_client_is_ignored(
    two_versions: tuple[Published, Published, Path], make_client: MakeClient
) -> None:
    old, _, directory = two_versions
    running = make_client()
    assert running.status()["sequence"] == 2
    (directory / "pointer.json").write_bytes(old.envelope)
    running._check_disk(full=True)
    assert running.prompt("welcome.message", name="Ada") == "Hello Ada, v2."
    running.sync()  # and the next commit puts the newest pointer back
    assert json.loads((directory / "pointer.json").read_bytes()) != json.loads(old.envelope)


@pytest.mark.parametrize(
    "content",
    [b"", b"{", b"\xef\xbb\xbf{}", b"[" * 60000, b"\xff" * 100, b"null", b'{"payload": 1}'],
    ids=["empty", "truncated", "bom", "deep", "binary", "null", "shape"],
)
def test_a_garbage_pointer_file_is_reported_not_raised(
    two_versions: tuple[Published, Published, Path],
    make_client: MakeClient,
    store: SpyStore,
    content: bytes,
) -> None:
    _, _, directory = two_versions
    (directory / "pointer.json").write_bytes(content)
    store.down = True
    restarted = make_client()
    assert restarted.status()["version"] is None
    error = restarted.status()["last_error"] or ""
    check_sentence(error)
    assert "disk cache" in error
    store.down = False
    restarted.sync()
    assert restarted.status()["version"] == "2.0.0"


def test_a_pointer_of_another_project_copied_into_the_cache_is_refused(
    tmp_path: Path, make_client: MakeClient, store: SpyStore
) -> None:
    other = WirePublisher(store.inner, project_id="11111111-2222-4333-8444-555555555555")
    published = other.publish(V1, version="1.0.0")
    mine = make_client(trusted_keys=[other.trusted_key])
    directory = Path(mine.status()["cache_dir"])
    (directory / "pointer.json").write_bytes(published.envelope)
    content = published.release["content_sha256"]
    (directory / "bundles" / f"{content}.json").write_bytes(published.plaintext)
    restarted = make_client(trusted_keys=[other.trusted_key])
    assert restarted.status()["version"] is None
    assert "project" in (restarted.status()["last_error"] or "")


def test_a_fifo_in_place_of_the_pointer_file_does_not_hang_the_start(
    two_versions: tuple[Published, Published, Path], make_client: MakeClient
) -> None:
    _, _, directory = two_versions
    pointer = directory / "pointer.json"
    pointer.unlink()
    os.mkfifo(pointer)
    client = started_within(make_client, open_fifo_writer(pointer))
    assert client.status()["version"] is None


def test_a_fifo_in_place_of_the_bundle_file_does_not_hang_the_start(
    two_versions: tuple[Published, Published, Path], make_client: MakeClient
) -> None:
    _, new, directory = two_versions
    bundle = directory / "bundles" / f"{new.release['content_sha256']}.json"
    bundle.unlink()
    os.mkfifo(bundle)
    client = started_within(make_client, open_fifo_writer(bundle))
    assert client.status()["version"] is None
    assert "disk cache" in (client.status()["last_error"] or "")


@pytest.mark.parametrize("target", ["pointer.json", "bundle"])
def test_a_cache_file_linked_to_an_endless_device_is_bounded(
    two_versions: tuple[Published, Published, Path], make_client: MakeClient, target: str
) -> None:
    _, new, directory = two_versions
    path = (
        directory / "pointer.json"
        if target == "pointer.json"
        else directory / "bundles" / f"{new.release['content_sha256']}.json"
    )
    path.unlink()
    path.symlink_to("/dev/zero")
    client = make_client()
    assert client.status()["version"] is None
    assert "disk cache" in (client.status()["last_error"] or "")


def test_a_truncated_bundle_file_is_reported_and_repaired(
    two_versions: tuple[Published, Published, Path], make_client: MakeClient
) -> None:
    _, new, directory = two_versions
    bundle = directory / "bundles" / f"{new.release['content_sha256']}.json"
    bundle.write_bytes(bundle.read_bytes()[:20])
    restarted = make_client()
    assert restarted.status()["version"] is None
    assert "SHA-256" in (restarted.status()["last_error"] or "")
    restarted.sync()
    assert restarted.prompt("welcome.message", name="Ada") == "Hello Ada, v2."
    assert make_client().status()["version"] == "2.0.0"  # the next start loads it again


def test_a_bundle_file_edited_under_a_running_client_is_repaired_by_a_later_apply(
    publisher: WirePublisher, make_client: MakeClient
) -> None:
    publisher.publish(V1, version="1.0.0")
    client = make_client()
    client.sync()
    directory = Path(client.status()["cache_dir"])
    content = client.status()["content_sha256"]
    bundle = directory / "bundles" / f"{content}.json"
    bundle.write_bytes(b"{}")
    # The same content under a new pointer (a re-encryption, say): only the pointer changes.
    publisher.publish(V1, version="1.0.0")
    client.sync()
    assert make_client().status()["version"] == "1.0.0"


# --- state.json and mode.json -----------------------------------------------------------


STATE_GARBAGE = {
    "empty": b"",
    "truncated": b'{"instance_id": "0b7f4c2e',
    "binary": b"\xff\xfe\x00",
    "array": b"[1, 2]",
    "deep": b"[" * 60000 + b"]" * 60000,
    "deep-member": b'{"instance_id": ' + b"[" * 30000 + b"]" * 30000 + b"}",
    "huge-int": b'{"sequence": 1' + b"0" * 5000 + b"}",
    "not-uuid": b'{"instance_id": "../../etc", "sequence": 2}',
    "types": json.dumps(
        {
            "instance_id": "0b7f4c2e-1d3a-4e5f-8a9b-0c1d2e3f4a5b",
            "sequence": "9",
            "etag": ["x"],
            "etag_sequence": "2",
            "last_check": 5,
            "last_sync": {"a": 1},
            "last_error": 7,
            "version": None,
        }
    ).encode(),
    "bad-times": json.dumps(
        {
            "instance_id": "0b7f4c2e-1d3a-4e5f-8a9b-0c1d2e3f4a5b",
            "last_check": "0001-01-01T00:00:00+01:00",
            "last_sync": "not a time",
        }
    ).encode(),
    "nan": b'{"instance_id": "0b7f4c2e-1d3a-4e5f-8a9b-0c1d2e3f4a5b", "sequence": NaN}',
    "float-sequence": b'{"instance_id": "0b7f4c2e-1d3a-4e5f-8a9b-0c1d2e3f4a5b", "sequence": 1e999}',
    "bool-sequence": b'{"instance_id": "0b7f4c2e-1d3a-4e5f-8a9b-0c1d2e3f4a5b", "sequence": true}',
}


@pytest.mark.parametrize("content", STATE_GARBAGE.values(), ids=STATE_GARBAGE.keys())
def test_a_garbage_state_file_never_stops_the_client(
    two_versions: tuple[Published, Published, Path],
    make_client: MakeClient,
    publisher: WirePublisher,
    content: bytes,
) -> None:
    old, _, directory = two_versions
    (directory / "state.json").write_bytes(content)
    restarted = make_client()
    assert restarted.prompt("welcome.message", name="Ada") == "Hello Ada, v2."
    status = restarted.status()
    assert status["sequence"] == 2
    json.dumps(status)  # everything in it is still JSON
    publisher.put_pointer(old.envelope)  # the pointer on disk still bounds the sequence
    with pytest.raises(RollbackError):
        restarted.sync()
    publisher.publish(V1, version="3.0.0")
    restarted.sync()
    assert restarted.status()["version"] == "3.0.0"
    assert json.loads((directory / "state.json").read_bytes())["sequence"] == 3


def test_a_state_file_that_is_a_fifo_does_not_hang_the_start(
    two_versions: tuple[Published, Published, Path], make_client: MakeClient
) -> None:
    _, _, directory = two_versions
    state = directory / "state.json"
    state.unlink()
    os.mkfifo(state)
    started_within(make_client, open_fifo_writer(state))


MODE_GARBAGE = {
    "empty": b"",
    "binary": b"\xff\xfe",
    "array": b'["frozen"]',
    "deep": b"[" * 60000 + b"]" * 60000,
    "deep-value": b'{"mode": ' + b"[" * 30000 + b"]" * 30000 + b"}",
    "list-mode": b'{"mode": ["frozen"]}',
    "dict-mode": b'{"mode": {"frozen": true}}',
    "upper": b'{"mode": "FROZEN"}',
    "unknown": b'{"mode": "paused"}',
    "huge-int": b'{"mode": 1' + b"0" * 5000 + b"}",
    "nan": b'{"mode": NaN}',
    "null": b"null",
}


@pytest.mark.parametrize("content", MODE_GARBAGE.values(), ids=MODE_GARBAGE.keys())
def test_a_garbage_mode_file_is_no_override(
    two_versions: tuple[Published, Published, Path],
    make_client: MakeClient,
    content: bytes,
) -> None:
    _, _, directory = two_versions
    (directory / "mode.json").write_bytes(content)
    client = make_client(mode="frozen")
    assert client.status()["mode"] == "frozen"
    assert client.status()["mode_source"] == "config"
    client.sync()  # reads the disk again first
    running = make_client()
    assert running.mode == "accepting"
    (directory / "mode.json").write_bytes(b'{"mode": "frozen"}')
    running._check_disk(full=True)
    assert running.mode == "frozen"
    (directory / "mode.json").write_bytes(content)
    running._check_disk(full=True)
    assert running.mode == "accepting"


def test_a_fifo_mode_file_does_not_hang_the_start(
    two_versions: tuple[Published, Published, Path], make_client: MakeClient
) -> None:
    _, _, directory = two_versions
    mode = directory / "mode.json"
    os.mkfifo(mode)
    client = started_within(make_client, open_fifo_writer(mode))
    assert client.mode == "accepting"


# --- the bootstrap file ------------------------------------------------------------------


@pytest.fixture
def boot_parts(publisher: WirePublisher) -> tuple[dict[str, Any], str]:
    published = publisher.publish(V1, version="1.0.0")
    return json.loads(published.envelope), published.plaintext.decode()


def _client_from(
    make_client: MakeClient, tmp_path: Path, store: SpyStore, content: bytes
) -> AnvilClient:
    path = tmp_path / "boot.json"
    path.write_bytes(content)
    store.down = True
    return make_client(bootstrap=path)


def assert_not_bootstrapped(client: AnvilClient, match: str) -> None:
    with pytest.raises(PromptNotFound):
        client.prompt("welcome.message", name="Ada")
    error = client.status()["last_error"] or ""
    check_sentence(error)
    assert "bootstrap" in error
    assert match.lower() in error.lower(), error
    with pytest.raises(StoreUnavailable):
        client.sync()  # and the client is alive and polling


def bs(plaintext: str, text: Any = None) -> dict[str, Any]:
    """A v2 bootstrap's ``bundles``: the plaintext (or ``text``) under its content hash."""
    return {sha256_hex(plaintext.encode()): plaintext if text is None else text}


def boot(pointer: Any, bundle: str) -> bytes:
    return json.dumps({"pointer": pointer, "bundles": bs(bundle)}).encode()


BOOT_GARBAGE: dict[str, Callable[[dict[str, Any], str], tuple[bytes, str]]] = {
    "not-json": lambda p, b: (b"not json", "JSON"),
    "bom": lambda p, b: (b"\xef\xbb\xbf" + boot(p, b), "JSON"),
    "array": lambda p, b: (b"[]", "JSON object"),
    "deep": lambda p, b: (b"[" * 60000 + b"]" * 60000, "JSON"),
    "no-pointer": lambda p, b: (json.dumps({"bundles": bs(b)}).encode(), "pointer"),
    "pointer-number": lambda p, b: (
        json.dumps({"pointer": 5, "bundles": bs(b)}).encode(),
        "pointer",
    ),
    "no-bundles": lambda p, b: (json.dumps({"pointer": p}).encode(), "bundles"),
    "v1-single-bundle": lambda p, b: (json.dumps({"pointer": p, "bundle": b}).encode(), "bundles"),
    "bundles-list": lambda p, b: (json.dumps({"pointer": p, "bundles": [b]}).encode(), "bundles"),
    "entry-missing": lambda p, b: (
        json.dumps({"pointer": p, "bundles": {"0" * 64: b}}).encode(),
        "no bundle for",
    ),
    "bundle-object": lambda p, b: (
        json.dumps({"pointer": p, "bundles": bs(b, json.loads(b))}).encode(),
        "bundle",
    ),
    "bundle-surrogate": lambda p, b: (
        json.dumps({"pointer": p, "bundles": bs(b, b.replace("Welcome", "\ud800"))}).encode(),
        "bundle",
    ),
    "pointer-string-surrogate": lambda p, b: (
        json.dumps({"pointer": json.dumps(p)[:-1] + ', "x": "\ud800"}', "bundles": bs(b)}).encode(),
        "pointer",
    ),
    "pointer-infinite": lambda p, b: (
        boot(p, b).decode().replace('"payloadType"', '"x": 1e999, "payloadType"', 1).encode(),
        "pointer",
    ),
    "tampered-bundle": lambda p, b: (
        json.dumps({"pointer": p, "bundles": bs(b, b.replace("Welcome", "Pwned"))}).encode(),
        "SHA-256",
    ),
    "unsigned": lambda p, b: (boot(dict(p, signatures=[]), b), "signature"),
    "duplicate": lambda p, b: (boot(p, b)[:-1] + b', "bundles": {}}', "repeats"),
}


@pytest.mark.parametrize("build", BOOT_GARBAGE.values(), ids=BOOT_GARBAGE.keys())
def test_a_hostile_bootstrap_file_is_reported_not_served(
    boot_parts: tuple[dict[str, Any], str],
    make_client: MakeClient,
    tmp_path: Path,
    store: SpyStore,
    build: Callable[[dict[str, Any], str], tuple[bytes, str]],
) -> None:
    content, match = build(*boot_parts)
    client = _client_from(make_client, tmp_path, store, content)
    assert_not_bootstrapped(client, match)


def test_a_bootstrap_pointer_given_as_a_string_is_accepted(
    boot_parts: tuple[dict[str, Any], str],
    make_client: MakeClient,
    tmp_path: Path,
    store: SpyStore,
) -> None:
    pointer, bundle = boot_parts
    content = boot(json.dumps(pointer), bundle)
    client = _client_from(make_client, tmp_path, store, content)
    assert client.prompt("welcome.message", name="Ada") == "Welcome Ada!"
    assert client.status()["source"] == "bootstrap"


def test_a_bootstrap_of_another_project_is_refused(
    make_client: MakeClient, tmp_path: Path, store: SpyStore, publisher: WirePublisher
) -> None:
    other = WirePublisher(
        store.inner, project_id="11111111-2222-4333-8444-555555555555", key=publisher.key
    )
    published = other.publish(V1, version="1.0.0", encoding="json")
    content = boot(json.loads(published.envelope), published.plaintext.decode())
    client = _client_from(make_client, tmp_path, store, content)
    assert_not_bootstrapped(client, "project")


def test_a_bootstrap_below_the_accepted_sequence_is_not_served(
    publisher: WirePublisher, make_client: MakeClient, tmp_path: Path, store: SpyStore
) -> None:
    old = publisher.publish(V1, version="1.0.0")
    publisher.publish(V2, version="2.0.0")
    first = make_client()
    first.sync()
    first.close()
    (Path(first.status()["cache_dir"]) / "pointer.json").unlink()  # state.json remembers 2
    content = boot(json.loads(old.envelope), old.plaintext.decode())
    client = _client_from(make_client, tmp_path, store, content)
    assert_not_bootstrapped(client, "older")


def test_a_huge_bootstrap_file_is_not_read_whole(
    make_client: MakeClient, tmp_path: Path, store: SpyStore
) -> None:
    path = tmp_path / "boot.json"
    with path.open("wb") as f:
        f.truncate(8 * 1024 * 1024 * 1024)  # 8 GiB, sparse
    store.down = True
    client = make_client(bootstrap=path, max_bundle_size=1024 * 1024)
    assert_not_bootstrapped(client, "larger")


def test_a_fifo_bootstrap_does_not_hang_the_start(
    make_client: MakeClient, tmp_path: Path, store: SpyStore
) -> None:
    path = tmp_path / "boot.json"
    os.mkfifo(path)
    store.down = True
    client = started_within(lambda: make_client(bootstrap=path), open_fifo_writer(path))
    assert "bootstrap" in (client.status()["last_error"] or "")


def test_a_bootstrap_directory_is_reported(
    make_client: MakeClient, tmp_path: Path, store: SpyStore
) -> None:
    store.down = True
    client = make_client(bootstrap=tmp_path)
    error = client.status()["last_error"] or ""
    check_sentence(error)
    assert "bootstrap" in error


def test_a_bootstrap_signed_for_an_old_sequence_gives_way_to_the_store(
    publisher: WirePublisher, make_client: MakeClient, tmp_path: Path, store: SpyStore
) -> None:
    published = publisher.publish(V1, version="1.0.0")
    path = tmp_path / "boot.json"
    path.write_bytes(boot(json.loads(published.envelope), published.plaintext.decode()))
    client = make_client(bootstrap=path)
    assert client.status()["source"] == "bootstrap"
    # The store holds the same sequence with another release: a rewrite, refused.
    other = publisher.put_object(make_bundle(V2, version="2.0.0"), version="2.0.0")
    publisher.put_pointer(signed(publisher, publisher.pointer_body(other, sequence=1)))
    with pytest.raises(RollbackError):
        client.sync()
    assert client.prompt("welcome.message", name="Ada") == "Welcome Ada!"
