"""The disk cache: layout, re-verification on load, pruning, instance id, shared use."""

from __future__ import annotations

import base64
import builtins
import json
import os
import stat
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from anvil_client import AnvilClient, PromptNotFound
from anvil_client._cache import CacheState, DiskCache
from anvil_client.stores import FileStore
from anvil_client.wire import in_rollout
from tests.anvil_client.spy_stores import SpyStore, wait_for
from tests.anvil_client.wire_publisher import WirePublisher

MakeClient = Callable[..., AnvilClient]


def v(n: int) -> dict[str, str]:
    return {"welcome.message": f"v{n} {{{{ name }}}}"}


def test_layout_after_a_sync(publisher: WirePublisher, make_client: MakeClient) -> None:
    published = publisher.publish(v(1), version="1.0.0")
    client = make_client()
    client.sync()
    directory = Path(client.status()["cache_dir"])
    assert directory == client.config.cache_dir / publisher.project_id / "production"
    assert (directory / "pointer.json").read_bytes() == published.envelope  # as received
    content = published.release["content_sha256"]
    assert (directory / "bundles" / f"{content}.json").read_bytes() == published.plaintext
    state = json.loads((directory / "state.json").read_text())
    assert state["instance_id"] == client.instance_id
    assert str(uuid.UUID(state["instance_id"])) == state["instance_id"]
    assert state["sequence"] == 1
    assert state["etag"]
    assert state["last_error"] is None
    assert not (directory / "mode.json").exists()
    # Decrypted prompts are private to the app's user.
    assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(directory / "bundles" / f"{content}.json").st_mode) == 0o600


def test_a_restart_serves_from_the_verified_cache_without_the_store(
    publisher: WirePublisher, make_client: MakeClient, store: SpyStore
) -> None:
    publisher.publish(v(1), version="1.0.0")
    make_client().sync()
    calls = len(store.calls)
    restarted = make_client()
    assert restarted.prompt("welcome.message", name="Ada") == "v1 Ada"
    assert restarted.status()["source"] == "disk"
    assert len(store.calls) == calls  # loading the cache reads no store


@pytest.mark.parametrize("target", ["pointer", "bundle"])
def test_a_tampered_cache_is_not_loaded(
    publisher: WirePublisher, make_client: MakeClient, target: str
) -> None:
    published = publisher.publish(v(1), version="1.0.0")
    client = make_client()
    client.sync()
    directory = Path(client.status()["cache_dir"])
    if target == "pointer":  # a valid body the signature does not cover
        path = directory / "pointer.json"
        doc = json.loads(path.read_bytes())
        body = json.loads(base64.b64decode(doc["payload"]))
        body["sequence"] = 7
        doc["payload"] = base64.b64encode(json.dumps(body).encode()).decode()
        path.write_text(json.dumps(doc))
    else:  # a valid bundle that does not hash to the signed content
        path = directory / "bundles" / f"{published.release['content_sha256']}.json"
        path.write_bytes(path.read_bytes().replace(b'"v1 {{', b'"v6 {{'))
    restarted = make_client()
    with pytest.raises(PromptNotFound):
        restarted.prompt("welcome.message", name="Ada")
    assert "disk cache" in (restarted.status()["last_error"] or "")
    restarted.sync()  # and the store repairs it
    assert restarted.prompt("welcome.message", name="Ada") == "v1 Ada"


def test_old_bundles_are_pruned_keeping_current_and_previous(
    publisher: WirePublisher, make_client: MakeClient
) -> None:
    client = make_client()
    contents = []
    for n in (1, 2, 3):
        contents.append(publisher.publish(v(n), version=f"{n}.0.0").release["content_sha256"])
        client.sync()
    bundles = Path(client.status()["cache_dir"], "bundles")
    assert sorted(p.stem for p in bundles.glob("*.json")) == sorted(contents[1:])


def test_the_instance_id_is_shared_by_the_cache_dir_and_survives_restarts(
    make_client: MakeClient, tmp_path: Path
) -> None:
    first, second = make_client(), make_client()
    assert first.instance_id == second.instance_id
    assert make_client().instance_id == first.instance_id
    assert make_client(cache_dir=tmp_path / "other").instance_id != first.instance_id


def test_a_corrupt_state_file_keeps_the_sequence_from_the_pointer(
    publisher: WirePublisher, make_client: MakeClient
) -> None:
    publisher.publish(v(1), version="1.0.0")
    old = publisher.store.get(publisher.pointer_key).data
    publisher.publish(v(2), version="2.0.0")
    client = make_client()
    client.sync()
    Path(client.status()["cache_dir"], "state.json").write_text("{not json")
    publisher.put_pointer(old)
    restarted = make_client()
    assert restarted.status()["sequence"] == 2
    with pytest.raises(Exception, match="older"):
        restarted.sync()


def _rollout_instance(cache: Path, publisher: WirePublisher, content: str, inside: bool) -> None:
    """Give the cache dir an instance id that falls inside (or outside) a 50% rollout."""
    while True:
        instance_id = str(uuid.uuid4())
        if in_rollout(instance_id, content, 50) == inside:
            break
    disk = DiskCache(cache, publisher.project_id, publisher.channel)
    disk.prepare()
    disk.write_state(CacheState(instance_id=instance_id), durable=True)


def test_a_rollout_selects_by_the_cache_dirs_instance_id(
    publisher: WirePublisher, make_client: MakeClient, store: SpyStore, tmp_path: Path
) -> None:
    first = publisher.publish(v(1), version="1.0.0")
    plaintext = publisher.publish(v(2), version="2.0.0").plaintext
    new_release = publisher.put_object(plaintext, version="2.0.0")
    rollout = {"percent": 50, "previous": first.release}
    body = publisher.pointer_body(new_release, sequence=3, rollout=rollout)
    _rollout_instance(tmp_path / "in", publisher, new_release["content_sha256"], inside=True)
    _rollout_instance(tmp_path / "out", publisher, new_release["content_sha256"], inside=False)
    inside, outside = (
        make_client(cache_dir=tmp_path / "in"),
        make_client(cache_dir=tmp_path / "out"),
    )
    publisher.put_pointer(publisher.sign(publisher.pointer_body(first.release, sequence=2)))
    inside.sync()
    outside.sync()
    publisher.put_pointer(publisher.sign(body))
    bundle_gets = len(store.bundle_gets())
    assert inside.sync()["version"] == "2.0.0"
    assert len(store.bundle_gets()) == bundle_gets + 1
    assert outside.sync()["version"] == "1.0.0"  # stays on previous: only the pointer persists
    assert len(store.bundle_gets()) == bundle_gets + 1
    assert outside.status()["sequence"] == 3
    restarted = make_client(cache_dir=tmp_path / "out")
    assert restarted.status()["version"] == "1.0.0"
    assert restarted.status()["sequence"] == 3


def test_a_second_client_on_the_cache_dir_follows_the_first(
    publisher: WirePublisher, make_client: MakeClient, tmp_path: Path
) -> None:
    publisher.publish(v(1), version="1.0.0")
    leader = make_client()
    assert leader._cache.try_lead()
    leader.sync()
    follower_store = SpyStore(FileStore(tmp_path / "store"))
    follower = make_client(store=follower_store, start=True, poll_interval=0.05)
    assert follower.prompt("welcome.message", name="Ada") == "v1 Ada"
    publisher.publish(v(2), version="2.0.0")
    leader.sync()
    wait_for(lambda: follower.status()["version"] == "2.0.0", message="the follower to reload")
    assert follower.prompt("welcome.message", name="Ada") == "v2 Ada"
    assert follower.status()["leader"] is False
    assert follower_store.calls == []  # followers never read the store


def test_prompt_does_no_io(
    publisher: WirePublisher, make_client: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    publisher.publish(v(1), version="1.0.0")
    client = make_client()
    client.sync()

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("prompt() did I/O")

    for name in ("stat", "open", "read", "listdir", "scandir"):
        monkeypatch.setattr(os, name, forbidden)
    monkeypatch.setattr(builtins, "open", forbidden)
    for _ in range(3):
        assert client.prompt("welcome.message", name="Ada") == "v1 Ada"
    assert client.prompt("nope", fallback="f {{ x }}", x=1) == "f 1"
    assert client.messages("welcome.message", name="Ada")[0]["content"] == "v1 Ada"


def test_the_mode_override_file_is_honoured(
    publisher: WirePublisher, make_client: MakeClient
) -> None:
    client = make_client(mode="accepting")
    DiskCache(client.config.cache_dir, publisher.project_id, "production").write_mode("frozen")
    client._check_disk()
    assert client.mode == "frozen"
    assert client.status()["mode_source"] == "override"
    assert make_client().status()["mode"] == "frozen"
    DiskCache(client.config.cache_dir, publisher.project_id, "production").clear_mode()
    client._check_disk()
    assert client.mode == "accepting"
    assert client.status()["mode_source"] == "default"


def test_a_cache_dir_that_cannot_be_created_is_a_config_error(
    make_client: MakeClient, tmp_path: Path
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(Exception, match="cannot create the cache dir"):
        make_client(cache_dir=blocker)
