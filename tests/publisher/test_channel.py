"""One channel, several prompt sets (pointer v2): keep, add, clash, re-encrypt, remove, roll."""

from __future__ import annotations

from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from anvil_client.errors import ConfigError, DecryptionError, NotFound
from anvil_client.stores import FileStore, ObjectStore
from anvil_client.wire import (
    AccessToken,
    Pointer,
    TrustedKey,
    in_rollout,
    recipient_ids,
    rollout_key,
    verify_pointer,
)
from publisher import (
    BuiltBundle,
    PromptIdClash,
    Publisher,
    RemovalRefused,
    build_bundle,
    read_history,
)
from tests.publisher.conftest import client_apply, public_text

CHANNEL = "production"
SUPPORT_ID = "set-support"
CHECKOUT_ID = "set-checkout"  # sorts before SUPPORT_ID
AT = "2026-01-15T10:30:00Z"  # same prompts, same version: same bytes


def support(project_id: str, version: str = "0.3.0", extra: str = "") -> BuiltBundle:
    prompts: dict[str, Any] = {
        "support.greeting": {"template": "Hello {{ name }}" + extra},
        "support.bye": {"template": "Bye {{ name }}"},
    }
    return build_bundle(
        prompts, project_id=project_id, version=version, prompt_set_id=SUPPORT_ID, created_at=AT
    )


def checkout(project_id: str, version: str = "0.1.0", shared: bool = False) -> BuiltBundle:
    prompts: dict[str, Any] = {"checkout.total": {"template": "Total {{ amount }}"}}
    if shared:
        prompts["support.greeting"] = {"template": "Hi from checkout"}
    return build_bundle(
        prompts, project_id=project_id, version=version, prompt_set_id=CHECKOUT_ID, created_at=AT
    )


@pytest.fixture
def pub(file_store: FileStore, project_id: str, signing_key: Ed25519PrivateKey) -> Publisher:
    return Publisher(file_store, project_id=project_id, signing_key=signing_key)


def current(store: ObjectStore, project_id: str, key: Ed25519PrivateKey) -> Pointer:
    envelope = store.get(f"projects/{project_id}/channels/{CHANNEL}.json").data
    return verify_pointer(envelope, [TrustedKey.parse(public_text(key))], project_id=project_id)


def snapshot(store: FileStore) -> dict[str, bytes]:
    return {key: store.get(key).data for key in store.list("")}


def two_sets(pub: Publisher, project_id: str, tokens: list[str]) -> None:
    pub.publish(support(project_id), CHANNEL, name="Support bot", recipients=tokens)
    pub.publish(checkout(project_id), CHANNEL, name="Checkout helper", recipients=tokens)


# -- publishing one set keeps the others ------------------------------------------------------


def test_a_second_set_is_added_and_the_first_carried_over_byte_identical(
    pub: Publisher,
    file_store: FileStore,
    project_id: str,
    signing_key: Ed25519PrivateKey,
    token_a: AccessToken,
) -> None:
    first = pub.publish(support(project_id), CHANNEL, name="Support bot", recipients=[token_a.text])
    before = current(file_store, project_id, signing_key).releases[0]
    second = pub.publish(
        checkout(project_id), CHANNEL, name="Checkout helper", recipients=[token_a.text]
    )
    pointer = current(file_store, project_id, signing_key)
    assert [r.prompt_set_id for r in pointer.releases] == [CHECKOUT_ID, SUPPORT_ID]  # sorted
    assert pointer.entry(SUPPORT_ID) == before  # same name, version, hashes, object
    assert second.releases == tuple(pointer.releases)
    assert (second.prompt_set_id, second.name, second.version) == (
        CHECKOUT_ID,
        "Checkout helper",
        "0.1.0",
    )
    assert second.changes == ("Checkout helper added",)
    assert first.changes == ("Support bot added",)
    applied = client_apply(file_store, project_id, CHANNEL, signing_key, token_a)
    assert applied.render("support.greeting", name="Al") == "Hello Al"
    assert applied.render("checkout.total", amount=3) == "Total 3"
    # a new version of one set replaces only its own entry
    third = pub.publish(support(project_id, "0.4.0", "!"), CHANNEL, recipients=[token_a.text])
    after = current(file_store, project_id, signing_key)
    assert after.entry(CHECKOUT_ID) == pointer.entry(CHECKOUT_ID)
    assert third.changes == ("Support bot 0.3.0 → 0.4.0",)
    assert third.to_json()["releases"] == [
        {
            "prompt_set_id": r.prompt_set_id,
            "name": r.name,
            "version": r.version,
            "content_sha256": r.content_sha256,
            "object_path": r.object.path,
            "encoding": r.object.encoding,
        }
        for r in after.releases
    ]
    versions = client_apply(file_store, project_id, CHANNEL, signing_key, token_a).versions
    assert versions == {CHECKOUT_ID: "0.1.0", SUPPORT_ID: "0.4.0"}


def test_the_name_defaults_to_the_channels_entry_then_the_given_default(
    pub: Publisher, file_store: FileStore, project_id: str, signing_key: Ed25519PrivateKey
) -> None:
    pub.publish(support(project_id), CHANNEL, plaintext=True, default_name="support-dir")
    assert current(file_store, project_id, signing_key).releases[0].name == "support-dir"
    pub.publish(support(project_id), CHANNEL, name="Support bot", plaintext=True)
    kept = pub.publish(
        support(project_id, "0.4.0"), CHANNEL, plaintext=True, default_name="ignored"
    )
    assert kept.name == "Support bot"
    assert current(file_store, project_id, signing_key).entry(SUPPORT_ID).name == "Support bot"  # type: ignore[union-attr]
    renamed = pub.publish(support(project_id, "0.4.0"), CHANNEL, name="Helpdesk", plaintext=True)
    assert renamed.changes == ("Support bot renamed to Helpdesk",)
    with pytest.raises(ConfigError, match="at most 200 characters"):
        pub.publish(support(project_id), CHANNEL, name="x" * 201, plaintext=True)


# -- a prompt id in two sets is refused -----------------------------------------------------------


def test_a_prompt_id_of_another_set_is_refused_and_nothing_is_written(
    pub: Publisher, file_store: FileStore, project_id: str, token_a: AccessToken
) -> None:
    pub.publish(support(project_id), CHANNEL, name="Support bot", recipients=[token_a.text])
    before = snapshot(file_store)
    clashing = checkout(project_id, shared=True)
    with pytest.raises(PromptIdClash) as caught:
        pub.publish(clashing, CHANNEL, name="Checkout helper", recipients=[token_a.text])
    error = caught.value
    assert error.prompt_id == "support.greeting"
    assert error.existing.prompt_set_id == SUPPORT_ID
    assert error.incoming == "Checkout helper 0.1.0"
    assert str(error).startswith(
        "prompt 'support.greeting' is in both Support bot 0.3.0 (already on 'production') and "
        "Checkout helper 0.1.0;"
    )
    assert snapshot(file_store) == before  # not even the bundle object was written
    # the check alone, as the FORGE runs it before enabling its publish button
    with pytest.raises(PromptIdClash, match=r"support\.greeting"):
        pub.check_publish(clashing, CHANNEL, access_token=token_a)
    pub.check_publish(checkout(project_id), CHANNEL, access_token=token_a)
    pub.check_publish(support(project_id, "0.4.0"), CHANNEL, access_token=token_a)  # own set
    assert snapshot(file_store) == before
    # reading the other set needs a key: the check says which option gives one
    with pytest.raises(ConfigError, match="--access-token"):
        pub.check_publish(clashing, CHANNEL)
    kept = {support(project_id).content_sha256: support(project_id).data}
    with pytest.raises(PromptIdClash):
        pub.check_publish(clashing, CHANNEL, bundle_source=kept.get)


def test_a_clash_found_after_a_lost_race_is_refused_too(
    file_store: FileStore, project_id: str, signing_key: Ed25519PrivateKey
) -> None:
    rival = Publisher(file_store, project_id=project_id, signing_key=signing_key)
    rival.publish(checkout(project_id), CHANNEL, plaintext=True)
    raced: list[int] = []

    class Racing(FileStore):
        def _put(self, key: str, data: bytes, **kwargs: Any) -> Any:
            if key.endswith(f"channels/{CHANNEL}.json") and not raced:
                raced.append(1)
                # the rival publishes a set that has our prompt id in between
                clash = build_bundle(
                    {"support.bye": {"template": "later"}},
                    project_id=project_id,
                    version="0.1.0",
                    prompt_set_id="set-aaa",
                )
                rival.publish(clash, CHANNEL, plaintext=True)
            return super()._put(key, data, **kwargs)

    ours = Publisher(Racing(file_store.root), project_id=project_id, signing_key=signing_key)
    with pytest.raises(PromptIdClash, match=r"support\.bye"):
        ours.publish(support(project_id), CHANNEL, plaintext=True)
    pointer = current(file_store, project_id, signing_key)
    assert [r.prompt_set_id for r in pointer.releases] == ["set-aaa", CHECKOUT_ID]


# -- recipients change: every entry is re-encrypted ---------------------------------------------


def test_new_recipients_re_encrypt_the_other_entries_with_an_access_token(
    pub: Publisher,
    file_store: FileStore,
    project_id: str,
    signing_key: Ed25519PrivateKey,
    token_a: AccessToken,
    token_b: AccessToken,
) -> None:
    pub.publish(support(project_id), CHANNEL, name="Support bot", recipients=[token_a.text])
    before = snapshot(file_store)
    with pytest.raises(ConfigError, match="--access-token") as caught:
        pub.publish(checkout(project_id), CHANNEL, recipients=[token_b.text])
    assert "Support bot 0.3.0" in str(caught.value)
    assert snapshot(file_store) == before
    result = pub.publish(
        checkout(project_id),
        CHANNEL,
        name="Checkout helper",
        recipients=[token_b.text],
        access_token=token_a.text,
    )
    assert "Support bot 0.3.0 re-encrypted" in result.changes
    pointer = current(file_store, project_id, signing_key)
    for release in pointer.releases:
        assert recipient_ids(file_store.get(release.object.path).data) == [token_b.token_id]
    client_apply(file_store, project_id, CHANNEL, signing_key, token_b)
    with pytest.raises(DecryptionError):
        client_apply(file_store, project_id, CHANNEL, signing_key, token_a)
    # a recipient that is also one of the old recipients reads them without --access-token
    both = pub.publish(
        support(project_id, "0.4.0"), CHANNEL, recipients=[token_a.text, token_b.text]
    )
    assert both.changes == ("Checkout helper 0.1.0 re-encrypted", "Support bot 0.3.0 → 0.4.0")
    for token in (token_a, token_b):
        client_apply(file_store, project_id, CHANNEL, signing_key, token)
    # or the exact bytes the FORGE kept; going unencrypted re-writes every entry as plaintext
    kept = {b.content_sha256: b.data for b in (checkout(project_id), support(project_id, "0.4.0"))}
    plain = pub.publish(
        support(project_id, "0.4.0"), CHANNEL, plaintext=True, bundle_source=kept.__getitem__
    )
    assert {r.object.encoding for r in plain.releases} == {"json"}
    client_apply(file_store, project_id, CHANNEL, signing_key, None)


def test_the_same_recipients_carry_the_other_entries_over_without_a_token(
    pub: Publisher, file_store: FileStore, project_id: str, token_a: AccessToken
) -> None:
    two_sets(pub, project_id, [token_a.text])
    objects = set(file_store.list(f"projects/{project_id}/bundles/"))
    result = pub.publish(support(project_id, "0.4.0"), CHANNEL, recipients=[token_a.text])
    new_objects = set(file_store.list(f"projects/{project_id}/bundles/")) - objects
    assert new_objects == {result.object_path}  # only the published set's object is new


# -- remove ---------------------------------------------------------------------------------------


def test_remove_drops_one_entry_and_refuses_the_last(
    pub: Publisher,
    file_store: FileStore,
    project_id: str,
    signing_key: Ed25519PrivateKey,
    token_a: AccessToken,
) -> None:
    two_sets(pub, project_id, [token_a.text])
    kept = current(file_store, project_id, signing_key).entry(SUPPORT_ID)
    removed = pub.remove(CHANNEL, CHECKOUT_ID)
    pointer = current(file_store, project_id, signing_key)
    assert (removed.sequence, pointer.releases) == (3, [kept])
    assert removed.changes == ("Checkout helper removed",)
    assert removed.version is None and removed.prompt_set_id is None
    assert client_apply(file_store, project_id, CHANNEL, signing_key, token_a).versions == {
        SUPPORT_ID: "0.3.0"
    }
    before = snapshot(file_store)
    with pytest.raises(RemovalRefused, match="only prompt set on 'production'") as last:
        pub.remove(CHANNEL, SUPPORT_ID)
    assert (last.value.reason, last.value.entry) == ("last", kept)
    with pytest.raises(RemovalRefused, match="serves no prompt set 'nope'") as unknown:
        pub.remove(CHANNEL, "nope")
    assert (unknown.value.reason, unknown.value.entry) == ("not_served", None)
    assert isinstance(unknown.value, ConfigError), "anvil-publish reports it as before"
    with pytest.raises(NotFound, match="nothing published"):
        pub.remove("staging", SUPPORT_ID)
    assert snapshot(file_store) == before
    pub.publish(checkout(project_id), CHANNEL, recipients=[token_a.text])
    pub.publish(support(project_id, "0.4.0"), CHANNEL, recipients=[token_a.text], rollout_percent=5)
    with pytest.raises(RemovalRefused, match="rollout in progress") as rolling:
        pub.remove(CHANNEL, CHECKOUT_ID)
    assert rolling.value.reason == "rollout" and rolling.value.channel == CHANNEL


# -- rollback, promote, rollout: whole lists ------------------------------------------------------


def test_rollback_restores_the_whole_list_re_encrypted_for_current_recipients(
    pub: Publisher,
    file_store: FileStore,
    project_id: str,
    signing_key: Ed25519PrivateKey,
    token_a: AccessToken,
    token_b: AccessToken,
) -> None:
    two_sets(pub, project_id, [token_a.text, token_b.text])  # sequence 2: both sets
    listed = current(file_store, project_id, signing_key).releases
    pub.remove(CHANNEL, CHECKOUT_ID)
    pub.publish(support(project_id, "0.9.0", "?"), CHANNEL, recipients=[token_a.text])
    back = pub.rollback(CHANNEL, to_sequence=2, recipients=[token_a.text])  # token_b revoked
    pointer = current(file_store, project_id, signing_key)
    assert back.sequence == 5
    assert [(r.prompt_set_id, r.name, r.version, r.content_sha256) for r in pointer.releases] == [
        (r.prompt_set_id, r.name, r.version, r.content_sha256) for r in listed
    ]
    for release in pointer.releases:
        assert recipient_ids(file_store.get(release.object.path).data) == [token_a.token_id]
    assert back.version is None  # a list of two: no single entry
    assert set(back.changes) == {"Checkout helper added", "Support bot 0.9.0 → 0.3.0"}
    with pytest.raises(DecryptionError):
        client_apply(file_store, project_id, CHANNEL, signing_key, token_b)
    assert client_apply(file_store, project_id, CHANNEL, signing_key, token_a).versions == {
        CHECKOUT_ID: "0.1.0",
        SUPPORT_ID: "0.3.0",
    }


def test_promote_the_whole_list_or_one_set(
    pub: Publisher,
    file_store: FileStore,
    project_id: str,
    signing_key: Ed25519PrivateKey,
    token_a: AccessToken,
    token_b: AccessToken,
) -> None:
    pub.publish(support(project_id), "staging", name="Support bot", recipients=[token_a.text])
    pub.publish(checkout(project_id), "staging", name="Checkout helper", recipients=[token_a.text])
    staged = pub.current("staging")
    assert staged is not None
    whole = pub.promote("staging", CHANNEL)
    assert whole.releases == tuple(staged.releases)  # the very objects
    # one set only: the target keeps its other entries
    pub.publish(support(project_id, "0.4.0"), "staging", recipients=[token_a.text])
    with pytest.raises(ConfigError, match="--access-token"):  # the id check reads the entries
        pub.promote("staging", CHANNEL, prompt_set_id=SUPPORT_ID)
    one = pub.promote("staging", CHANNEL, prompt_set_id=SUPPORT_ID, access_token=token_a)
    pointer = current(file_store, project_id, signing_key)
    assert pointer.entry(CHECKOUT_ID) == staged.entry(CHECKOUT_ID)
    assert pointer.entry(SUPPORT_ID).version == "0.4.0"  # type: ignore[union-attr]
    assert (one.prompt_set_id, one.changes) == (SUPPORT_ID, ("Support bot 0.3.0 → 0.4.0",))
    with pytest.raises(NotFound, match="serves no prompt set 'nope'"):
        pub.promote("staging", CHANNEL, prompt_set_id="nope")
    # a clash with the target's other entries is refused
    pub.publish(
        build_bundle(
            {"checkout.total": {"template": "x"}},
            project_id=project_id,
            version="1.0.0",
            prompt_set_id="set-zzz",
        ),
        "development",
        plaintext=True,
    )
    with pytest.raises(PromptIdClash, match=r"checkout\.total"):
        pub.promote("development", CHANNEL, prompt_set_id="set-zzz", access_token=token_a)
    # entries for other recipients than the copied one: re-encrypt them by giving recipients
    pub.publish(checkout(project_id, "0.2.0"), "dev-two", plaintext=True)
    with pytest.raises(ConfigError, match="other recipients"):
        pub.promote("dev-two", CHANNEL, prompt_set_id=CHECKOUT_ID, access_token=token_a)
    moved = pub.promote(
        "dev-two",
        CHANNEL,
        prompt_set_id=CHECKOUT_ID,
        recipients=[token_b.text],
        access_token=token_a,
    )
    assert {recipient_ids(file_store.get(r.object.path).data)[0] for r in moved.releases} == {
        token_b.token_id
    }
    assert client_apply(file_store, project_id, CHANNEL, signing_key, token_b).versions == {
        CHECKOUT_ID: "0.2.0",
        SUPPORT_ID: "0.4.0",
    }


def test_a_rollout_covers_the_whole_list(
    pub: Publisher,
    file_store: FileStore,
    project_id: str,
    signing_key: Ed25519PrivateKey,
    token_a: AccessToken,
) -> None:
    two_sets(pub, project_id, [token_a.text])
    served_before = current(file_store, project_id, signing_key).releases
    rolled = pub.publish(
        support(project_id, "0.4.0"), CHANNEL, recipients=[token_a.text], rollout_percent=50
    )
    pointer = current(file_store, project_id, signing_key)
    assert pointer.rollout is not None and pointer.rollout.previous == served_before
    assert pointer.entry(CHECKOUT_ID) == served_before[0]
    assert "rollout started at 50%" in rolled.changes
    key = rollout_key(pointer.releases)
    seen = set()
    for n in range(30):
        instance = f"00000000-0000-4000-8000-{n:012d}"
        versions = client_apply(
            file_store, project_id, CHANNEL, signing_key, token_a, instance
        ).versions
        expected = "0.4.0" if in_rollout(instance, key, 50) else "0.3.0"
        assert versions == {CHECKOUT_ID: "0.1.0", SUPPORT_ID: expected}
        seen.add(expected)
    assert seen == {"0.3.0", "0.4.0"}
    # publishing the other set during the rollout rolls out from the same settled list
    pub.publish(
        checkout(project_id, "0.2.0"), CHANNEL, recipients=[token_a.text], rollout_percent=20
    )
    pointer = current(file_store, project_id, signing_key)
    assert pointer.rollout is not None and pointer.rollout.previous == served_before
    assert [r.version for r in pointer.releases] == ["0.2.0", "0.4.0"]  # both changes roll
    aborted = pub.abort_rollout(CHANNEL)
    assert aborted.releases == tuple(served_before) and aborted.changes[-1] == "rollout ended"


def test_reencrypt_covers_every_entry_of_both_lists(
    pub: Publisher,
    file_store: FileStore,
    project_id: str,
    signing_key: Ed25519PrivateKey,
    token_a: AccessToken,
    token_b: AccessToken,
) -> None:
    both = [token_a.text, token_b.text]
    two_sets(pub, project_id, both)
    pub.publish(support(project_id, "0.4.0"), CHANNEL, recipients=both, rollout_percent=30)
    result = pub.reencrypt(CHANNEL, recipients=[token_a.text], access_token=token_b.text)
    pointer = current(file_store, project_id, signing_key)
    assert pointer.rollout is not None
    for release in pointer.all_releases():
        assert recipient_ids(file_store.get(release.object.path).data) == [token_a.token_id]
    # one set in both lists shares one new object
    assert pointer.entry(CHECKOUT_ID) == pointer.rollout.previous[0]
    assert result.sequence == 4


def test_history_and_inspect_show_every_entry(
    pub: Publisher,
    file_store: FileStore,
    project_id: str,
    signing_key: Ed25519PrivateKey,
    token_a: AccessToken,
) -> None:
    from publisher import export_bootstrap, inspect

    two_sets(pub, project_id, [token_a.text])
    entries = read_history(file_store, project_id, CHANNEL, [public_text(signing_key)])
    last = entries[-1].to_json()
    assert [(r["prompt_set_id"], r["name"], r["version"]) for r in last["releases"]] == [
        (CHECKOUT_ID, "Checkout helper", "0.1.0"),
        (SUPPORT_ID, "Support bot", "0.3.0"),
    ]
    assert last["version"] == "Checkout helper@0.1.0, Support bot@0.3.0"
    seen = inspect(file_store, project_id, CHANNEL, [public_text(signing_key)], token_a)
    out = seen.to_json()
    assert [(r["prompt_set_id"], r["name"], r["version"]) for r in out["releases"]] == [
        (CHECKOUT_ID, "Checkout helper", "0.1.0"),
        (SUPPORT_ID, "Support bot", "0.3.0"),
    ]
    assert [r["prompt_count"] for r in out["releases"]] == [1, 2] and out["prompt_count"] == 3
    assert all(len(r["content_sha256"]) == 64 for r in out["releases"])
    doc = export_bootstrap(file_store, project_id, CHANNEL, [public_text(signing_key)], token_a)
    import json

    assert set(json.loads(doc)["bundles"]) == {r["content_sha256"] for r in out["releases"]}


def test_a_tampered_other_entry_stops_the_publish(
    pub: Publisher, file_store: FileStore, project_id: str, signing_key: Ed25519PrivateKey
) -> None:
    from anvil_client.errors import ChecksumError

    pub.publish(support(project_id), CHANNEL, plaintext=True)
    entry = current(file_store, project_id, signing_key).releases[0]
    file_store.put(entry.object.path, b'{"tampered": true}')
    before = snapshot(file_store)
    with pytest.raises(ChecksumError, match="bytes but the signed pointer says"):
        pub.publish(checkout(project_id), CHANNEL, plaintext=True)
    assert snapshot(file_store) == before


def test_at_most_releases_max_sets_per_channel(
    pub: Publisher, file_store: FileStore, project_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from publisher import _drafts

    monkeypatch.setattr(_drafts, "RELEASES_MAX", 1)
    pub.publish(support(project_id), CHANNEL, plaintext=True)
    before = snapshot(file_store)
    with pytest.raises(ConfigError, match="would serve 2 prompt sets; at most 1"):
        pub.publish(checkout(project_id), CHANNEL, plaintext=True)
    assert snapshot(file_store) == before
