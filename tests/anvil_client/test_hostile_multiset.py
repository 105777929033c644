"""Hostile multi-set pointers (v2): every entry verified, applied all-or-nothing, never mixed.

A pointer names one entry per prompt set; the client serves the union. These cases come from a
broken publisher or an attacker with write access to the bucket (but not the signing key):
mixed entries, entries that lie about their bundle, shared prompt ids, too many or badly
ordered entries, one entry that fails while the others are fine.
"""

from __future__ import annotations

import base64
import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from anvil_client import AnvilClient, PromptNotFound
from anvil_client.errors import (
    ChecksumError,
    DecryptionError,
    FormatError,
    NotFound,
    RollbackError,
    SignatureError,
    StoreUnavailable,
)
from anvil_client.wire import AccessToken, in_rollout, sha256_hex
from tests.anvil_client.hostile_kit import (
    MakeClient,
    check_sentence,
    envelope,
    signed,
)
from tests.anvil_client.spy_stores import SpyStore
from tests.anvil_client.wire_publisher import (
    OTHER_SET_ID,
    OTHER_SET_NAME,
    WirePublisher,
    make_bundle,
)

A1 = {"welcome.message": "Welcome {{ name }}!"}
A2 = {"welcome.message": "Hello {{ name }}, v2."}
B1 = {"checkout.thanks": "Thank you, {{ name }}!"}
B2 = {"checkout.thanks": "Thanks again, {{ name }}!"}


def publish_b(publisher: WirePublisher, prompts: dict[str, Any], version: str, **kw: Any) -> Any:
    return publisher.publish(
        prompts, version=version, prompt_set_id=OTHER_SET_ID, name=OTHER_SET_NAME, **kw
    )


def serving_both(publisher: WirePublisher, make_client: MakeClient, **kw: Any) -> AnvilClient:
    """A client serving set A 1.0.0 and set B 1.0.0 (sequence 2)."""
    publisher.publish(A1, version="1.0.0")
    publish_b(publisher, B1, "1.0.0")
    client = make_client(**kw)
    client.sync()
    assert_serves_both_v1(client)
    return client


def assert_serves_both_v1(client: AnvilClient) -> None:
    assert client.prompt("welcome.message", name="Ada") == "Welcome Ada!"
    assert client.prompt("checkout.thanks", name="Ada") == "Thank you, Ada!"
    assert client.status()["version"] == "Support bot@1.0.0, Checkout helper@1.0.0"


def refused_all(client: AnvilClient, error: type[Exception], match: str) -> str:
    """``sync()`` raises ``error``; both sets still serve 1.0.0; status() has the sentence."""
    with pytest.raises(error) as caught:
        client.sync()
    assert caught.type is error, f"{caught.type.__name__}: {caught.value}"
    message = str(caught.value)
    check_sentence(message)
    assert match.lower() in message.lower(), message
    assert client.status()["last_error"] == message
    assert client.status()["sequence"] == 2
    assert_serves_both_v1(client)
    return message


def entry(
    publisher: WirePublisher, prompts: dict[str, Any], version: str, set_id: str, name: str
) -> dict[str, Any]:
    plaintext = make_bundle(prompts, version=version, prompt_set_id=set_id)
    return publisher.put_object(plaintext, version=version, prompt_set_id=set_id, name=name)


def a_entry(publisher: WirePublisher, prompts: dict[str, Any], version: str) -> dict[str, Any]:
    return entry(publisher, prompts, version, publisher.prompt_set_id, "Support bot")


def b_entry(publisher: WirePublisher, prompts: dict[str, Any], version: str) -> dict[str, Any]:
    return entry(publisher, prompts, version, OTHER_SET_ID, OTHER_SET_NAME)


def point(publisher: WirePublisher, releases: list[dict[str, Any]], **kw: Any) -> bytes:
    """Sign and store a pointer with exactly these entries (sequence 3 unless given)."""
    kw.setdefault("sequence", 3)
    body = publisher.pointer_body(releases, **kw)
    env = signed(publisher, body)
    publisher.put_pointer(env)
    return env


def cached_bundles(client: AnvilClient) -> set[str]:
    return {p.stem for p in Path(client.status()["cache_dir"], "bundles").glob("*.json")}


# --- the happy path, as a baseline ---------------------------------------------------------


def test_two_sets_are_served_as_one_union_with_per_entry_status(
    publisher: WirePublisher, make_client: MakeClient
) -> None:
    client = serving_both(publisher, make_client)
    status = client.status()
    assert status["content_sha256"] is None and status["prompt_set_id"] is None
    assert status["prompts"] == 2
    assert status["releases"] == [
        {
            "prompt_set_id": r["prompt_set_id"],
            "name": r["name"],
            "version": r["version"],
            "content_sha256": r["content_sha256"],
            "prompts": 1,
        }
        for r in publisher.releases()
    ]
    assert client.prompt_ids() == ["checkout.thanks", "welcome.message"]
    assert client.messages("checkout.thanks", name="Bo") == [
        {"role": "user", "content": "Thank you, Bo!"}
    ]


def test_publishing_one_set_downloads_only_that_set(
    publisher: WirePublisher, make_client: MakeClient, store: SpyStore
) -> None:
    client = serving_both(publisher, make_client)
    before = len(store.bundle_gets())
    published = publish_b(publisher, B2, "2.0.0")
    client.sync()
    assert [c.key for c in store.bundle_gets()[before:]] == [published.release["object"]["path"]]
    assert client.prompt("checkout.thanks", name="Ada") == "Thanks again, Ada!"
    assert client.prompt("welcome.message", name="Ada") == "Welcome Ada!"


def test_dropping_a_set_stops_serving_its_prompts(
    publisher: WirePublisher, make_client: MakeClient
) -> None:
    client = serving_both(publisher, make_client)
    publisher.remove(OTHER_SET_ID)
    client.sync()
    assert client.status()["version"] == "1.0.0"
    with pytest.raises(PromptNotFound):
        client.prompt("checkout.thanks", name="Ada")
    assert client.prompt("checkout.thanks", fallback="bye {{ name }}", name="Ada") == "bye Ada"


# --- all or nothing ------------------------------------------------------------------------


def test_one_entry_failing_its_hash_applies_nothing(
    publisher: WirePublisher, make_client: MakeClient, store: SpyStore
) -> None:
    client = serving_both(publisher, make_client)
    good_a = a_entry(publisher, A2, "2.0.0")
    bad_b = b_entry(publisher, B2, "2.0.0")
    publisher.store.put(bad_b["object"]["path"], b"x" * bad_b["object"]["size"])
    point(publisher, [good_a, bad_b])
    before = cached_bundles(client)
    refused_all(client, ChecksumError, "Checkout helper 2.0.0")
    assert cached_bundles(client) == before  # not even the good entry was written
    pointer = json.loads(Path(client.status()["cache_dir"], "pointer.json").read_bytes())
    assert json.loads(base64.b64decode(pointer["payload"]))["sequence"] == 2


def test_one_entry_this_token_cannot_read_applies_nothing(
    publisher: WirePublisher, make_client: MakeClient
) -> None:
    client = serving_both(publisher, make_client)
    good_a = a_entry(publisher, A2, "2.0.0")
    plaintext = make_bundle(B2, version="2.0.0", prompt_set_id=OTHER_SET_ID)
    other_token = AccessToken.generate()
    foreign_b = publisher.put_object(
        plaintext,
        version="2.0.0",
        prompt_set_id=OTHER_SET_ID,
        name=OTHER_SET_NAME,
        tokens=[other_token],
    )
    point(publisher, [good_a, foreign_b])
    refused_all(client, DecryptionError, "")


def test_a_missing_second_object_applies_nothing_until_it_is_there(
    publisher: WirePublisher, make_client: MakeClient
) -> None:
    client = serving_both(publisher, make_client)
    good_a = a_entry(publisher, A2, "2.0.0")
    good_b = b_entry(publisher, B2, "2.0.0")
    path = good_b["object"]["path"]
    stored = publisher.store.get(path).data
    publisher.store.delete(path)
    point(publisher, [good_a, good_b])
    refused_all(client, NotFound, path)
    # Once the object is there, the same pointer applies completely (its ETag was not kept).
    publisher.store.put(path, stored)
    status = client.sync()
    assert status["version"] == "Support bot@2.0.0, Checkout helper@2.0.0"
    assert client.prompt("welcome.message", name="Ada") == "Hello Ada, v2."
    assert client.prompt("checkout.thanks", name="Ada") == "Thanks again, Ada!"


def test_mix_and_match_entries_of_two_signed_pointers_is_refused(
    publisher: WirePublisher, make_client: MakeClient
) -> None:
    client = serving_both(publisher, make_client)
    # Two genuine, signed publishes; the attacker wants A's new entry with B's old one, or a
    # body of one with the signature of the other.
    first = json.loads(
        point(publisher, [a_entry(publisher, A2, "2.0.0"), b_entry(publisher, B1, "1.0.0")])
    )
    second = json.loads(
        point(
            publisher,
            [a_entry(publisher, A1, "1.0.0"), b_entry(publisher, B2, "2.0.0")],
            sequence=4,
        )
    )
    body = json.loads(base64.b64decode(first["payload"]))
    other = json.loads(base64.b64decode(second["payload"]))
    body["releases"] = [body["releases"][0], other["releases"][1]]
    mixed = json.dumps(body).encode()
    publisher.put_pointer(envelope(mixed, first["signatures"]))
    refused_all(client, SignatureError, "signature")
    publisher.put_pointer(envelope(mixed, second["signatures"]))
    refused_all(client, SignatureError, "signature")
    # An old signed pointer put back is a rollback, not a mix.
    publisher.put_pointer(json.dumps(second).encode())
    client.sync()
    assert client.prompt("checkout.thanks", name="Ada") == "Thanks again, Ada!"
    publisher.put_pointer(json.dumps(first).encode())
    with pytest.raises(RollbackError):
        client.sync()
    assert client.prompt("checkout.thanks", name="Ada") == "Thanks again, Ada!"
    assert client.prompt("welcome.message", name="Ada") == "Welcome Ada!"


# --- entries that lie about their bundle ---------------------------------------------------


def test_an_entry_whose_bundle_names_another_set_is_refused(
    publisher: WirePublisher, make_client: MakeClient
) -> None:
    client = serving_both(publisher, make_client)
    # B's entry points at a genuine bundle of set A (hashes all match).
    plaintext = make_bundle(B2, version="2.0.0", prompt_set_id=publisher.prompt_set_id)
    lying = publisher.put_object(
        plaintext, version="2.0.0", prompt_set_id=OTHER_SET_ID, name=OTHER_SET_NAME
    )
    point(publisher, [a_entry(publisher, A2, "2.0.0"), lying])
    refused_all(client, FormatError, "prompt set")


def test_an_entry_whose_bundle_names_another_version_is_refused(
    publisher: WirePublisher, make_client: MakeClient
) -> None:
    client = serving_both(publisher, make_client)
    plaintext = make_bundle(B2, version="2.0.0", prompt_set_id=OTHER_SET_ID)
    lying = publisher.put_object(
        plaintext, version="2.0.1", prompt_set_id=OTHER_SET_ID, name=OTHER_SET_NAME
    )
    point(publisher, [a_entry(publisher, A2, "2.0.0"), lying])
    refused_all(client, FormatError, "version")


def test_an_entry_whose_bundle_is_of_another_project_is_refused(
    publisher: WirePublisher, make_client: MakeClient
) -> None:
    client = serving_both(publisher, make_client)
    plaintext = make_bundle(
        B2, version="2.0.0", prompt_set_id=OTHER_SET_ID, project_id=str(uuid.uuid4())
    )
    lying = publisher.put_object(
        plaintext, version="2.0.0", prompt_set_id=OTHER_SET_ID, name=OTHER_SET_NAME
    )
    point(publisher, [a_entry(publisher, A2, "2.0.0"), lying])
    refused_all(client, FormatError, "project")


def test_two_entries_naming_the_same_bundle_are_refused(
    publisher: WirePublisher, make_client: MakeClient
) -> None:
    client = serving_both(publisher, make_client)
    a = a_entry(publisher, A2, "2.0.0")
    twin = {**a, "prompt_set_id": OTHER_SET_ID, "name": OTHER_SET_NAME}
    point(publisher, [a, twin])
    refused_all(client, FormatError, "prompt set")


# --- the entry list itself ---------------------------------------------------------------


def test_a_prompt_id_in_two_entries_is_refused(
    publisher: WirePublisher, make_client: MakeClient
) -> None:
    client = serving_both(publisher, make_client)
    clash = b_entry(publisher, {**B2, "welcome.message": "Pwned {{ name }}"}, "2.0.0")
    point(publisher, [a_entry(publisher, A2, "2.0.0"), clash])
    message = refused_all(client, FormatError, "'welcome.message' is in two prompt sets")
    assert "Support bot 2.0.0" in message and "Checkout helper 2.0.0" in message


def test_a_prompt_id_shared_with_an_unchanged_entry_is_refused(
    publisher: WirePublisher, make_client: MakeClient, store: SpyStore
) -> None:
    client = serving_both(publisher, make_client)
    # Set A is unchanged (reused from the cache, not downloaded): the check still sees it.
    a_now = publisher.entries[publisher.prompt_set_id]
    clash = b_entry(publisher, {"welcome.message": "Pwned"}, "2.0.0")
    before = len(store.bundle_gets())
    point(publisher, [a_now, clash])
    refused_all(client, FormatError, "two prompt sets")
    assert [c.key for c in store.bundle_gets()[before:]] == [clash["object"]["path"]]


@pytest.mark.parametrize("count", [0, 101])
def test_a_pointer_with_zero_or_more_than_a_hundred_entries_is_refused(
    publisher: WirePublisher, make_client: MakeClient, count: int
) -> None:
    client = serving_both(publisher, make_client)
    one = a_entry(publisher, A2, "2.0.0")
    releases = [{**one, "prompt_set_id": f"set-{i:04d}"} for i in range(count)]
    point(publisher, releases)
    refused_all(client, FormatError, "1 to 100 entries")


def test_a_hundred_entries_are_accepted(publisher: WirePublisher, make_client: MakeClient) -> None:
    releases = []
    for i in range(100):
        set_id = f"set-{i:04d}"
        releases.append(entry(publisher, {f"p{i}.text": f"text {i}"}, "1.0.0", set_id, f"S{i}"))
    point(publisher, releases, sequence=1)
    client = make_client()
    status = client.sync()
    assert len(status["releases"]) == 100
    assert status["prompts"] == 100
    assert client.prompt("p99.text") == "text 99"
    assert (status["version"] or "").startswith("S0@1.0.0, S1@1.0.0, ")


def test_unsorted_entries_are_refused(publisher: WirePublisher, make_client: MakeClient) -> None:
    client = serving_both(publisher, make_client)
    point(publisher, [b_entry(publisher, B2, "2.0.0"), a_entry(publisher, A2, "2.0.0")])
    refused_all(client, FormatError, "sorted")


def test_a_set_named_twice_is_refused(publisher: WirePublisher, make_client: MakeClient) -> None:
    client = serving_both(publisher, make_client)
    point(publisher, [a_entry(publisher, A1, "1.0.0"), a_entry(publisher, A2, "2.0.0")])
    refused_all(client, FormatError, "twice")


def test_entries_must_be_a_list_of_objects(
    publisher: WirePublisher, make_client: MakeClient
) -> None:
    client = serving_both(publisher, make_client)
    body = publisher.pointer_body([a_entry(publisher, A2, "2.0.0")], sequence=3)
    body["releases"] = {"0": body["releases"][0]}
    publisher.put_pointer(signed(publisher, body))
    refused_all(client, FormatError, "releases")
    body["releases"] = [body["releases"]["0"], "x"]
    publisher.put_pointer(signed(publisher, body))
    refused_all(client, FormatError, "releases")


@pytest.mark.parametrize("where", ["releases", "previous"])
def test_an_entry_object_outside_the_projects_bundles_is_refused(
    publisher: WirePublisher, make_client: MakeClient, where: str
) -> None:
    client = serving_both(publisher, make_client)
    good = [a_entry(publisher, A2, "2.0.0"), b_entry(publisher, B2, "2.0.0")]
    outside = json.loads(json.dumps(good))
    digest = outside[1]["object"]["sha256"]
    outside[1]["object"]["path"] = f"projects/{uuid.uuid4()}/bundles/{digest}.jwe"
    if where == "releases":
        point(publisher, outside)
    else:  # refused whatever list this instance would select
        point(publisher, good, rollout={"percent": 100, "previous": outside})
    refused_all(client, FormatError, "outside")


def test_a_huge_set_name_is_refused_with_a_short_sentence(
    publisher: WirePublisher, make_client: MakeClient
) -> None:
    client = serving_both(publisher, make_client)
    huge = {**a_entry(publisher, A2, "2.0.0"), "name": "N" * 30_000}
    point(publisher, [huge, b_entry(publisher, B2, "2.0.0")])
    refused_all(client, FormatError, "name")


def test_a_set_name_of_200_characters_is_served(
    publisher: WirePublisher, make_client: MakeClient
) -> None:
    client = serving_both(publisher, make_client)
    named = {**a_entry(publisher, A2, "2.0.0"), "name": "é" * 200}
    point(publisher, [named, publisher.entries[OTHER_SET_ID]])
    status = client.sync()
    assert status["releases"][0]["name"] == "é" * 200
    assert status["version"] == f"{'é' * 200}@2.0.0, Checkout helper@1.0.0"


# --- sequence and rollout --------------------------------------------------------------------


def test_the_same_sequence_with_other_entries_is_a_rollback(
    publisher: WirePublisher, make_client: MakeClient
) -> None:
    client = serving_both(publisher, make_client)
    # Sequence 2 again, with set B's entry swapped for another: a rewritten history.
    point(
        publisher,
        [publisher.entries[publisher.prompt_set_id], b_entry(publisher, B2, "2.0.0")],
        sequence=2,
    )
    refused_all(client, RollbackError, "already accepted")
    # Sequence 2 again, with one entry dropped.
    point(publisher, [publisher.entries[publisher.prompt_set_id]], sequence=2)
    refused_all(client, RollbackError, "already accepted")


def test_a_lower_sequence_is_a_rollback(publisher: WirePublisher, make_client: MakeClient) -> None:
    client = serving_both(publisher, make_client)
    point(publisher, [a_entry(publisher, A2, "2.0.0"), b_entry(publisher, B2, "2.0.0")], sequence=1)
    refused_all(client, RollbackError, "older")


def _instances(key: str, percent: int) -> tuple[str, str]:
    """One instance id inside the rollout of ``key`` at ``percent`` and one outside."""
    inside = outside = None
    while inside is None or outside is None:
        candidate = str(uuid.uuid4())
        if in_rollout(candidate, key, percent):
            inside = inside or candidate
        else:
            outside = outside or candidate
    return inside, outside


def _with_instance(cache: Path, project_id: str, channel: str, instance_id: str) -> None:
    directory = cache / project_id / channel
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "state.json").write_text(json.dumps({"instance_id": instance_id}))


def test_a_rollout_selects_a_whole_list_by_the_joined_key(
    publisher: WirePublisher, make_client: MakeClient, tmp_path: Path
) -> None:
    publisher.publish(A1, version="1.0.0")
    publish_b(publisher, B1, "1.0.0")
    previous = publisher.releases()
    new = [a_entry(publisher, A2, "2.0.0"), b_entry(publisher, B2, "2.0.0")]
    key = ",".join(r["content_sha256"] for r in new)
    # The first entry's hash alone would bucket differently for some instance: pick one
    # whose joined-key bucket and single-hash bucket disagree, to prove the joined key is used.
    inside = outside = None
    while inside is None or outside is None:
        candidate = str(uuid.uuid4())
        joined = in_rollout(candidate, key, 50)
        single = in_rollout(candidate, new[0]["content_sha256"], 50)
        if joined and not single:
            inside = inside or candidate
        if not joined and single:
            outside = outside or candidate
    point(publisher, new, rollout={"percent": 50, "previous": previous})
    served = {}
    for name, instance in (("in", inside), ("out", outside)):
        cache = tmp_path / f"cache-{name}"
        _with_instance(cache, publisher.project_id, publisher.channel, instance)
        client = make_client(cache_dir=cache)
        assert client.instance_id == instance
        status = client.sync()
        served[name] = [r["version"] for r in status["releases"]]
    assert served == {"in": ["2.0.0", "2.0.0"], "out": ["1.0.0", "1.0.0"]}


def test_a_bootstrap_holds_both_lists_of_a_rollout(
    publisher: WirePublisher, make_client: MakeClient, tmp_path: Path, store: SpyStore
) -> None:
    a1 = publisher.publish(A1, version="1.0.0")
    b1 = publish_b(publisher, B1, "1.0.0")
    previous = publisher.releases()
    plain = {
        a1.release["content_sha256"]: a1.plaintext.decode(),
        b1.release["content_sha256"]: b1.plaintext.decode(),
    }
    new = []
    for prompts, set_id, name in (
        (A2, publisher.prompt_set_id, "Support bot"),
        (B2, OTHER_SET_ID, OTHER_SET_NAME),
    ):
        text = make_bundle(prompts, version="2.0.0", prompt_set_id=set_id)
        new.append(publisher.put_object(text, version="2.0.0", prompt_set_id=set_id, name=name))
        plain[sha256_hex(text)] = text.decode()
    env = point(publisher, new, rollout={"percent": 50, "previous": previous})
    key = ",".join(r["content_sha256"] for r in new)
    inside, outside = _instances(key, 50)
    boot = tmp_path / "boot.json"
    boot.write_text(json.dumps({"pointer": json.loads(env), "bundles": plain}))
    store.down = True
    versions = {}
    for name, instance in (("in", inside), ("out", outside)):
        cache = tmp_path / f"cache-{name}"
        _with_instance(cache, publisher.project_id, publisher.channel, instance)
        client = make_client(cache_dir=cache, bootstrap=boot)
        assert client.status()["source"] == "bootstrap", client.status()["last_error"]
        versions[name] = [r["version"] for r in client.status()["releases"]]
        with pytest.raises(StoreUnavailable):
            client.sync()
    assert versions == {"in": ["2.0.0", "2.0.0"], "out": ["1.0.0", "1.0.0"]}


def test_a_bootstrap_missing_one_entry_is_not_used_at_all(
    publisher: WirePublisher, make_client: MakeClient, tmp_path: Path, store: SpyStore
) -> None:
    a1 = publisher.publish(A1, version="1.0.0")
    b1 = publish_b(publisher, B1, "1.0.0")
    boot = tmp_path / "boot.json"
    only_a = {a1.release["content_sha256"]: a1.plaintext.decode()}
    boot.write_text(json.dumps({"pointer": json.loads(b1.envelope), "bundles": only_a}))
    store.down = True
    client = make_client(bootstrap=boot)
    error = client.status()["last_error"] or ""
    check_sentence(error)
    assert "no bundle for Checkout helper 1.0.0" in error
    with pytest.raises(PromptNotFound):
        client.prompt("welcome.message", name="Ada")


# --- the disk cache ------------------------------------------------------------------------


def test_the_cache_keeps_the_served_and_the_previous_lists_only(
    publisher: WirePublisher, make_client: MakeClient
) -> None:
    client = serving_both(publisher, make_client)
    first = cached_bundles(client)
    assert first == {r["content_sha256"] for r in publisher.releases()}
    b2 = publish_b(publisher, B2, "2.0.0")
    client.sync()
    assert cached_bundles(client) == first | {b2.release["content_sha256"]}
    b3 = publish_b(publisher, {"checkout.thanks": "Third {{ name }}"}, "3.0.0")
    client.sync()
    served = {r["content_sha256"] for r in publisher.releases()}
    assert cached_bundles(client) == served | {b2.release["content_sha256"]}
    assert b3.release["content_sha256"] in served


def test_a_restart_serves_every_entry_from_the_disk_cache(
    publisher: WirePublisher, make_client: MakeClient, store: SpyStore
) -> None:
    client = serving_both(publisher, make_client)
    client.close()
    store.down = True
    restarted = make_client()
    assert restarted.status()["source"] == "disk"
    assert_serves_both_v1(restarted)


def test_a_cache_missing_one_entry_is_not_loaded_half(
    publisher: WirePublisher, make_client: MakeClient, store: SpyStore
) -> None:
    client = serving_both(publisher, make_client)
    client.close()
    b = publisher.entries[OTHER_SET_ID]["content_sha256"]
    Path(client.status()["cache_dir"], "bundles", f"{b}.json").unlink()
    store.down = True
    restarted = make_client()
    assert restarted.status()["version"] is None
    assert "Checkout helper 1.0.0" in (restarted.status()["last_error"] or "")
    with pytest.raises(PromptNotFound):
        restarted.prompt("welcome.message", name="Ada")
    store.down = False
    restarted.sync()  # the store heals it: only the missing entry is fetched
    assert_serves_both_v1(restarted)
