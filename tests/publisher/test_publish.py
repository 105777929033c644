"""Publisher on a FileStore: what it writes, a conforming reader applies; every channel move."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from anvil_client.errors import (
    ChecksumError,
    ConfigError,
    DecryptionError,
    FormatError,
    NotFound,
    PreconditionFailed,
    SignatureError,
    StoreUnavailable,
    ValidationError,
)
from anvil_client.stores import FileStore, GetResult, ObjectStore, PutResult
from anvil_client.wire import (
    AccessToken,
    Pointer,
    TrustedKey,
    canonical_json,
    decrypt_bundle,
    in_rollout,
    parse_json_object,
    recipient_ids,
    rollout_key,
    sha256_hex,
    verify_envelope,
)
from publisher import (
    BuiltBundle,
    NoRolloutInProgress,
    Publisher,
    build_bundle,
    export_bootstrap,
    inspect,
    read_history,
)
from tests.publisher.conftest import client_apply, public_text

CHANNEL = "production"


def bundle(project_id: str, prompts: dict[str, Any], version: str = "1.0.0") -> BuiltBundle:
    return build_bundle(prompts, project_id=project_id, version=version, prompt_set_id="set-1")


def v2_prompts(prompts: dict[str, Any]) -> dict[str, Any]:
    changed = dict(prompts)
    changed["welcome.message"] = {"template": "Hello {{ name }} ({{ role }})."}
    return changed


@pytest.fixture
def pub(file_store: FileStore, project_id: str, signing_key: Ed25519PrivateKey) -> Publisher:
    return Publisher(file_store, project_id=project_id, signing_key=signing_key)


def pointer_at(store: ObjectStore, project_id: str, channel: str = CHANNEL) -> Pointer:
    data = store.get(f"projects/{project_id}/channels/{channel}.json").data
    return Pointer.parse(parse_envelope_body(data))


def parse_envelope_body(data: bytes) -> bytes:
    import base64

    return base64.b64decode(parse_json_object(data, "envelope")["payload"])


# -- round trips ----------------------------------------------------------------------------


def test_encrypted_publish_is_applied_by_a_conforming_reader(
    pub: Publisher,
    file_store: FileStore,
    project_id: str,
    signing_key: Ed25519PrivateKey,
    token_a: AccessToken,
    token_b: AccessToken,
    prompts: dict[str, Any],
) -> None:
    built = bundle(project_id, prompts)
    result = pub.publish(built, channel=CHANNEL, recipients=[token_a.text, token_b.text])
    assert (result.sequence, result.version, result.encoding) == (1, "1.0.0", "jwe")
    assert result.content_sha256 == built.content_sha256
    assert result.plaintext_size == len(built.data)
    assert sorted(result.recipients) == sorted([token_a.token_id, token_b.token_id])
    assert result.object_path == f"projects/{project_id}/bundles/{result.object_sha256}.jwe"
    assert set(result.timings) >= {"validate", "serialize", "encrypt", "upload", "pointer_cas"}
    for token in (token_a, token_b):
        applied = client_apply(file_store, project_id, CHANNEL, signing_key, token)
        assert applied.data == built.data
        assert applied.render("welcome.message", name="Al", role="admin", access_level="full") == (
            "Welcome Al! As admin, you have full access."
        )
    stranger = AccessToken.generate()
    with pytest.raises(DecryptionError):
        client_apply(file_store, project_id, CHANNEL, signing_key, stranger)


def test_plaintext_publish_and_layout(
    pub: Publisher,
    file_store: FileStore,
    project_id: str,
    signing_key: Ed25519PrivateKey,
    prompts: dict[str, Any],
) -> None:
    built = bundle(project_id, prompts)
    result = pub.publish(built, channel="development", plaintext=True)
    assert result.encoding == "json"
    assert result.object_sha256 == built.content_sha256
    root = f"projects/{project_id}"
    assert file_store.list("") == sorted(
        [
            f"{root}/bundles/{built.content_sha256}.json",
            f"{root}/channels/development.json",
            f"{root}/channels/development/history/000000000001.json",
        ]
    )
    pointer_bytes = file_store.get(f"{root}/channels/development.json").data
    assert file_store.get(f"{root}/channels/development/history/000000000001.json").data == (
        pointer_bytes
    )
    assert client_apply(file_store, project_id, "development", signing_key, None).data == built.data


def test_sequences_increase_and_history_verifies(
    pub: Publisher, project_id: str, token_a: AccessToken, prompts: dict[str, Any]
) -> None:
    for n, version in enumerate(["1.0.0", "1.1.0", "2.0.0"], start=1):
        result = pub.publish(
            bundle(project_id, {**prompts, "extra": {"template": version}}, version),
            channel=CHANNEL,
            recipients=[token_a.text],
        )
        assert result.sequence == n
    history = pub.history(CHANNEL)
    assert [e.sequence for e in history] == [1, 2, 3]
    assert all(e.verified for e in history)
    assert [[r.version for r in e.releases] for e in history] == [["1.0.0"], ["1.1.0"], ["2.0.0"]]
    current = pub.current(CHANNEL)
    assert current is not None and current.sequence == 3
    assert pub.current("staging") is None


def test_publish_accepts_canonical_bytes(
    pub: Publisher, project_id: str, prompts: dict[str, Any], token_a: AccessToken
) -> None:
    built = bundle(project_id, prompts)
    result = pub.publish(built.data, channel=CHANNEL, recipients=[token_a.text])
    assert result.content_sha256 == built.content_sha256
    other = build_bundle(prompts, project_id="other", version="1.0.0", prompt_set_id="s")
    with pytest.raises(ValidationError, match="belongs to project"):
        pub.publish(other.data, channel=CHANNEL, recipients=[token_a.text])
    with pytest.raises(ConfigError, match="belongs to project"):
        pub.publish(other, channel=CHANNEL, recipients=[token_a.text])


def test_recipients_as_keks(
    pub: Publisher,
    file_store: FileStore,
    project_id: str,
    signing_key: Ed25519PrivateKey,
    token_a: AccessToken,
    prompts: dict[str, Any],
) -> None:
    pub.publish(
        bundle(project_id, prompts), channel=CHANNEL, recipients={token_a.token_id: token_a.kek()}
    )
    assert (
        client_apply(file_store, project_id, CHANNEL, signing_key, token_a).bundle.version
        == "1.0.0"
    )


# -- object reuse, crashes, races -----------------------------------------------------------


def test_same_content_twice_reuses_the_object(
    pub: Publisher,
    file_store: FileStore,
    project_id: str,
    token_a: AccessToken,
    token_b: AccessToken,
    prompts: dict[str, Any],
) -> None:
    built = bundle(project_id, prompts)
    first = pub.publish(built, channel=CHANNEL, recipients=[token_a.text])
    second = pub.publish(built, channel=CHANNEL, recipients=[token_a.text])
    assert (first.reused_object, second.reused_object) == (False, True)
    assert second.object_path == first.object_path
    assert second.sequence == 2
    assert len(file_store.list(f"projects/{project_id}/bundles/")) == 1
    # other recipients: the object must be new (a revoked token must not keep access)
    third = pub.publish(built, channel=CHANNEL, recipients=[token_b.text])
    assert not third.reused_object and third.object_path != first.object_path
    # plaintext objects are named by content and land on the same name
    plain_one = pub.publish(built, channel="development", plaintext=True)
    plain_two = pub.publish(built, channel="development", plaintext=True)
    assert plain_one.object_path == plain_two.object_path and plain_two.reused_object


class FailingStore(ObjectStore):
    """Delegates to a real store; fails (or runs a hook) on chosen keys. A spy, not a fake."""

    def __init__(self, inner: ObjectStore, fail_on: str = "", hook: Any = None) -> None:
        self.inner = inner
        self.url = inner.url
        self.fail_on = fail_on
        self.hook = hook
        self.puts: list[str] = []

    def _get(self, key: str, if_none_match: str | None, max_size: int) -> GetResult:
        return self.inner.get(key, if_none_match=if_none_match, max_size=max_size)

    def _put(self, key: str, data: bytes, **kwargs: Any) -> PutResult:
        self.puts.append(key)
        if self.hook is not None:
            self.hook(key)
        if self.fail_on and key.endswith(self.fail_on):
            raise StoreUnavailable(f"PUT {key} failed: connection reset")
        return self.inner.put(key, data, **kwargs)

    def _list(self, prefix: str) -> list[str]:
        return self.inner.list(prefix)

    def _delete(self, key: str) -> None:
        self.inner.delete(key)


def test_crash_between_object_and_pointer_keeps_serving_the_old_release(
    file_store: FileStore,
    project_id: str,
    signing_key: Ed25519PrivateKey,
    token_a: AccessToken,
    prompts: dict[str, Any],
) -> None:
    Publisher(file_store, project_id=project_id, signing_key=signing_key).publish(
        bundle(project_id, prompts), channel=CHANNEL, recipients=[token_a.text]
    )
    broken = FailingStore(file_store, fail_on=f"channels/{CHANNEL}.json")
    with pytest.raises(StoreUnavailable):
        Publisher(broken, project_id=project_id, signing_key=signing_key).publish(
            bundle(project_id, v2_prompts(prompts), "2.0.0"),
            channel=CHANNEL,
            recipients=[token_a.text],
        )
    assert any("/bundles/" in key for key in broken.puts)  # the object was written first
    applied = client_apply(file_store, project_id, CHANNEL, signing_key, token_a)
    assert (applied.pointer.sequence, applied.bundle.version) == (1, "1.0.0")
    retry = Publisher(file_store, project_id=project_id, signing_key=signing_key).publish(
        bundle(project_id, v2_prompts(prompts), "2.0.0"), channel=CHANNEL, recipients=[token_a.text]
    )
    assert retry.sequence == 2


def test_a_concurrent_publish_is_never_overwritten(
    file_store: FileStore,
    project_id: str,
    signing_key: Ed25519PrivateKey,
    token_a: AccessToken,
    prompts: dict[str, Any],
) -> None:
    rival = Publisher(file_store, project_id=project_id, signing_key=signing_key)
    rival.publish(bundle(project_id, prompts), channel=CHANNEL, recipients=[token_a.text])
    raced: list[int] = []

    def rival_publishes_first(key: str) -> None:
        if key.endswith(f"channels/{CHANNEL}.json") and not raced:
            raced.append(
                rival.publish(
                    bundle(project_id, prompts, "1.1.0"), channel=CHANNEL, recipients=[token_a.text]
                ).sequence
            )

    spy = FailingStore(file_store, hook=rival_publishes_first)
    ours = Publisher(spy, project_id=project_id, signing_key=signing_key).publish(
        bundle(project_id, v2_prompts(prompts), "2.0.0"), channel=CHANNEL, recipients=[token_a.text]
    )
    assert raced == [2]
    assert (ours.sequence, ours.attempts) == (3, 2)
    history = rival.history(CHANNEL)
    assert [(e.sequence, e.releases[0].version) for e in history] == [
        (1, "1.0.0"),
        (2, "1.1.0"),
        (3, "2.0.0"),
    ]


def test_gives_up_after_bounded_attempts_without_writing(
    file_store: FileStore,
    project_id: str,
    signing_key: Ed25519PrivateKey,
    token_a: AccessToken,
    prompts: dict[str, Any],
) -> None:
    rival = Publisher(file_store, project_id=project_id, signing_key=signing_key)
    rival.publish(bundle(project_id, prompts), channel=CHANNEL, recipients=[token_a.text])

    def rival_always_wins(key: str) -> None:
        if key.endswith(f"channels/{CHANNEL}.json"):
            rival.publish(bundle(project_id, prompts), channel=CHANNEL, recipients=[token_a.text])

    spy = FailingStore(file_store, hook=rival_always_wins)
    loser = Publisher(spy, project_id=project_id, signing_key=signing_key, max_attempts=3)
    with pytest.raises(PreconditionFailed, match="changed on each of 3 attempts"):
        loser.publish(
            bundle(project_id, v2_prompts(prompts), "2.0.0"),
            channel=CHANNEL,
            recipients=[token_a.text],
        )
    versions = {r.version for e in rival.history(CHANNEL) for r in e.releases}
    assert versions == {"1.0.0"}


def test_missing_history_entry_is_backfilled(
    pub: Publisher, file_store: FileStore, project_id: str, prompts: dict[str, Any]
) -> None:
    pub.publish(bundle(project_id, prompts), channel=CHANNEL, plaintext=True)
    file_store.delete(f"projects/{project_id}/channels/{CHANNEL}/history/000000000001.json")
    pub.publish(bundle(project_id, prompts, "1.0.1"), channel=CHANNEL, plaintext=True)
    assert [e.sequence for e in pub.history(CHANNEL)] == [1, 2]


# -- never build on what cannot be verified ---------------------------------------------------


def test_refuses_a_pointer_signed_by_another_key(
    file_store: FileStore,
    project_id: str,
    signing_key: Ed25519PrivateKey,
    other_key: Ed25519PrivateKey,
    token_a: AccessToken,
    prompts: dict[str, Any],
) -> None:
    Publisher(file_store, project_id=project_id, signing_key=other_key).publish(
        bundle(project_id, prompts), channel=CHANNEL, recipients=[token_a.text]
    )
    before = {key: file_store.get(key).data for key in file_store.list("")}
    ours = Publisher(file_store, project_id=project_id, signing_key=signing_key)
    with pytest.raises(SignatureError, match="not signed by this signing key"):
        ours.publish(
            bundle(project_id, prompts, "2.0.0"), channel=CHANNEL, recipients=[token_a.text]
        )
    assert {key: file_store.get(key).data for key in file_store.list("")} == before
    # rotating keys: the old public key is trusted explicitly
    rotating = Publisher(
        file_store,
        project_id=project_id,
        signing_key=signing_key,
        trusted_keys=[public_text(other_key)],
    )
    result = rotating.publish(
        bundle(project_id, prompts, "2.0.0"), channel=CHANNEL, recipients=[token_a.text]
    )
    assert result.sequence == 2
    assert (
        client_apply(file_store, project_id, CHANNEL, signing_key, token_a).bundle.version
        == "2.0.0"
    )


def test_refuses_a_tampered_or_foreign_pointer(
    pub: Publisher,
    file_store: FileStore,
    project_id: str,
    signing_key: Ed25519PrivateKey,
    prompts: dict[str, Any],
) -> None:
    pub.publish(bundle(project_id, prompts), channel=CHANNEL, plaintext=True)
    key = f"projects/{project_id}/channels/{CHANNEL}.json"
    envelope = json.loads(file_store.get(key).data)
    body = json.loads(parse_envelope_body(file_store.get(key).data))
    body["sequence"] = 99
    import base64

    envelope["payload"] = base64.b64encode(canonical_json(body)).decode()
    file_store.put(key, canonical_json(envelope))
    with pytest.raises(SignatureError):
        pub.publish(bundle(project_id, prompts, "2.0.0"), channel=CHANNEL, plaintext=True)
    # a validly signed pointer of another channel copied over this one
    pub.publish(bundle(project_id, prompts), channel="staging", plaintext=True)
    file_store.put(key, file_store.get(f"projects/{project_id}/channels/staging.json").data)
    with pytest.raises(FormatError, match="channel 'staging'"):
        pub.publish(bundle(project_id, prompts, "2.0.0"), channel=CHANNEL, plaintext=True)
    file_store.put(key, b"not json")
    with pytest.raises(FormatError, match="refusing to build on the pointer"):
        pub.current(CHANNEL)


# -- arguments --------------------------------------------------------------------------------


def test_bad_arguments_are_refused_before_anything_is_written(
    pub: Publisher,
    file_store: FileStore,
    project_id: str,
    token_a: AccessToken,
    prompts: dict[str, Any],
) -> None:
    built = bundle(project_id, prompts)
    with pytest.raises(ConfigError, match="without recipients"):
        pub.publish(built, channel=CHANNEL)
    with pytest.raises(ConfigError, match="without recipients"):
        pub.publish(built, channel=CHANNEL, recipients=[])
    with pytest.raises(ConfigError, match="not both"):
        pub.publish(built, channel=CHANNEL, recipients=[token_a.text], plaintext=True)
    with pytest.raises(ConfigError, match="ACCESS_TOKEN is malformed") as caught:
        pub.publish(built, channel=CHANNEL, recipients=["anvil_short_secretvalue"])
    assert "secretvalue" not in str(caught.value)
    with pytest.raises(ConfigError, match="not one string"):
        pub.publish(built, channel=CHANNEL, recipients=token_a.text)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="32 bytes"):
        pub.publish(built, channel=CHANNEL, recipients={token_a.token_id: b"short"})
    with pytest.raises(ConfigError, match="channel 'Prod!' is invalid"):
        pub.publish(built, channel="Prod!", plaintext=True)
    with pytest.raises(ConfigError, match="not in the future"):
        pub.publish(built, channel=CHANNEL, plaintext=True, expires_at=timedelta(seconds=-1))
    with pytest.raises(ConfigError, match="0 to 100"):
        pub.publish(built, channel=CHANNEL, plaintext=True, rollout_percent=101)
    with pytest.raises(ConfigError, match="no release yet to roll out from"):
        pub.publish(built, channel=CHANNEL, plaintext=True, rollout_percent=10)
    assert file_store.list("") == []


def test_expiry_is_signed_into_the_pointer(
    pub: Publisher, file_store: FileStore, project_id: str, prompts: dict[str, Any]
) -> None:
    result = pub.publish(
        bundle(project_id, prompts), channel=CHANNEL, plaintext=True, expires_at=timedelta(days=30)
    )
    pointer = pointer_at(file_store, project_id)
    assert pointer.expires_at == result.expires_at
    assert pointer.expires is not None
    assert timedelta(days=29) < pointer.expires - datetime.now(UTC) <= timedelta(days=30)
    absolute = pub.publish(
        bundle(project_id, prompts),
        channel=CHANNEL,
        plaintext=True,
        expires_at="2999-01-01T00:00:00Z",
    )
    assert absolute.expires_at == "2999-01-01T00:00:00Z"


# -- rollout, rollback, promote, re-encrypt ------------------------------------------------------


def test_gradual_rollout(
    pub: Publisher,
    file_store: FileStore,
    project_id: str,
    signing_key: Ed25519PrivateKey,
    token_a: AccessToken,
    prompts: dict[str, Any],
) -> None:
    one = pub.publish(bundle(project_id, prompts), channel=CHANNEL, recipients=[token_a.text])
    pub.publish(
        bundle(project_id, v2_prompts(prompts), "2.0.0"),
        channel=CHANNEL,
        recipients=[token_a.text],
        rollout_percent=30,
    )
    pointer = pointer_at(file_store, project_id)
    assert pointer.rollout is not None and pointer.rollout.percent == 30
    assert [r.content_sha256 for r in pointer.rollout.previous] == [one.content_sha256]
    instances = [f"00000000-0000-4000-8000-{i:012d}" for i in range(200)]
    served = {
        i: client_apply(file_store, project_id, CHANNEL, signing_key, token_a, i).bundle.version
        for i in instances[:40]
    }
    for instance, version in served.items():
        assert version == (
            "2.0.0" if in_rollout(instance, rollout_key(pointer.releases), 30) else "1.0.0"
        )
    assert set(served.values()) == {"1.0.0", "2.0.0"}
    # a new publish during an unfinished rollout rolls out from what everyone had
    three = pub.publish(
        bundle(project_id, prompts, "3.0.0"),
        channel=CHANNEL,
        recipients=[token_a.text],
        rollout_percent=10,
    )
    pointer = pointer_at(file_store, project_id)
    assert pointer.rollout is not None
    assert [r.version for r in pointer.rollout.previous] == ["1.0.0"]
    assert pub.set_rollout(CHANNEL, 60).rollout_percent == 60
    done = pub.complete_rollout(CHANNEL)
    assert (done.rollout_percent, done.version, done.sequence) == (None, "3.0.0", 5)
    assert done.content_sha256 == three.content_sha256
    for move in (
        lambda: pub.set_rollout(CHANNEL, 20),
        lambda: pub.complete_rollout(CHANNEL),
        lambda: pub.abort_rollout(CHANNEL),
    ):
        with pytest.raises(NoRolloutInProgress) as raised:
            move()
        # a ConfigError as before, with the same sentence
        assert isinstance(raised.value, ConfigError) and raised.value.channel == CHANNEL
        assert str(raised.value) == f"channel {CHANNEL!r} has no rollout in progress"
    with pytest.raises(ConfigError, match="from 0 to 100") as raised:
        pub.set_rollout(CHANNEL, 101)
    assert not isinstance(raised.value, NoRolloutInProgress)
    pub.publish(
        bundle(project_id, v2_prompts(prompts), "4.0.0"),
        channel=CHANNEL,
        recipients=[token_a.text],
        rollout_percent=50,
    )
    aborted = pub.abort_rollout(CHANNEL)
    assert (aborted.version, aborted.rollout_percent) == ("3.0.0", None)
    assert (
        client_apply(file_store, project_id, CHANNEL, signing_key, token_a).bundle.version
        == "3.0.0"
    )


def test_rollback_re_encrypts_the_old_content_for_current_recipients(
    pub: Publisher,
    file_store: FileStore,
    project_id: str,
    signing_key: Ed25519PrivateKey,
    token_a: AccessToken,
    token_b: AccessToken,
    prompts: dict[str, Any],
) -> None:
    first = bundle(project_id, prompts)
    one = pub.publish(first, channel=CHANNEL, recipients=[token_a.text, token_b.text])
    pub.publish(
        bundle(project_id, v2_prompts(prompts), "2.0.0"), channel=CHANNEL, recipients=[token_a.text]
    )
    # token_b was revoked: the rollback must not hand it the old object again
    back = pub.rollback(
        CHANNEL, to_sequence=1, recipients=[token_a.text], access_token=token_b.text
    )
    assert (back.sequence, back.version, back.content_sha256) == (3, "1.0.0", one.content_sha256)
    assert back.object_path != one.object_path
    stored = file_store.get(back.object_path).data
    assert recipient_ids(stored) == [token_a.token_id]
    with pytest.raises(DecryptionError):
        decrypt_bundle(stored, token_b.token_id, token_b.kek(), max_plaintext=1 << 20)
    assert (
        client_apply(file_store, project_id, CHANNEL, signing_key, token_a).bundle.version
        == "1.0.0"
    )
    # or with the exact bytes the FORGE kept
    kept = {one.content_sha256: first.data}
    again = pub.rollback(
        CHANNEL, to_sequence=1, recipients=[token_a.text], bundle_source=kept.__getitem__
    )
    assert again.sequence == 4 and again.reused_object  # same content, same recipients: reused
    with pytest.raises(ChecksumError, match="bundle source returned other bytes"):
        pub.rollback(
            CHANNEL, to_sequence=2, recipients=[token_a.text], bundle_source=lambda _: b"{}"
        )
    with pytest.raises(ConfigError, match="pass --access-token"):
        pub.rollback(CHANNEL, to_sequence=2, recipients=[token_b.text])
    with pytest.raises(NotFound, match="no history entry 42"):
        pub.rollback(CHANNEL, to_sequence=42, recipients=[token_a.text], access_token=token_a.text)
    with pytest.raises(DecryptionError):
        pub.rollback(CHANNEL, to_sequence=2, recipients=[token_b.text], access_token=token_b.text)
    assert pointer_at(file_store, project_id).sequence == 4


def test_promote_copies_the_release_signed_anew(
    pub: Publisher,
    file_store: FileStore,
    project_id: str,
    signing_key: Ed25519PrivateKey,
    token_a: AccessToken,
    token_b: AccessToken,
    prompts: dict[str, Any],
) -> None:
    staged = pub.publish(bundle(project_id, prompts), channel="staging", recipients=[token_a.text])
    promoted = pub.promote("staging", CHANNEL)
    assert (promoted.sequence, promoted.object_path) == (1, staged.object_path)
    assert (
        client_apply(file_store, project_id, CHANNEL, signing_key, token_a).bundle.version
        == "1.0.0"
    )
    reencrypted = pub.promote(
        "staging", CHANNEL, recipients=[token_b.text], access_token=token_a.text
    )
    assert reencrypted.sequence == 2 and reencrypted.object_path != staged.object_path
    assert (
        client_apply(file_store, project_id, CHANNEL, signing_key, token_b).bundle.version
        == "1.0.0"
    )
    with pytest.raises(NotFound, match="nothing published to promote"):
        pub.promote("development", CHANNEL)
    with pytest.raises(ConfigError, match="two different channels"):
        pub.promote(CHANNEL, CHANNEL)


def test_rollback_and_promote_refuse_an_unknown_keyword(pub: Publisher) -> None:
    # Their shared options travel as **kwargs: a misspelt one must not pass unnoticed.
    with pytest.raises(TypeError, match="'recipient'"):
        pub.promote("staging", CHANNEL, recipient=["x"])  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="'expires'"):
        pub.rollback(CHANNEL, to_sequence=1, expires="1d")  # type: ignore[call-arg]


def test_reencrypt_for_a_revoked_token_covers_the_rollout_previous(
    pub: Publisher,
    file_store: FileStore,
    project_id: str,
    signing_key: Ed25519PrivateKey,
    token_a: AccessToken,
    token_b: AccessToken,
    prompts: dict[str, Any],
) -> None:
    both = [token_a.text, token_b.text]
    first, second = bundle(project_id, prompts), bundle(project_id, v2_prompts(prompts), "2.0.0")
    one = pub.publish(first, channel=CHANNEL, recipients=both, expires_at=timedelta(days=3))
    two = pub.publish(
        second, channel=CHANNEL, recipients=both, rollout_percent=40, expires_at=timedelta(days=3)
    )
    result = pub.reencrypt(CHANNEL, recipients=[token_a.text], access_token=token_a.text)
    assert (result.sequence, result.content_sha256) == (3, two.content_sha256)
    assert result.expires_at == two.expires_at  # kept
    pointer = pointer_at(file_store, project_id)
    assert pointer.rollout is not None and pointer.rollout.percent == 40
    for release in (*pointer.releases, *pointer.rollout.previous):
        stored = file_store.get(release.object.path).data
        assert recipient_ids(stored) == [token_a.token_id]
    assert [r.content_sha256 for r in pointer.rollout.previous] == [one.content_sha256]
    for instance in ("a", "b", "c", "d", "e", "f"):
        client_apply(file_store, project_id, CHANNEL, signing_key, token_a, instance)
        with pytest.raises(DecryptionError):
            client_apply(file_store, project_id, CHANNEL, signing_key, token_b, instance)
    # the FORGE passes the exact bytes it kept instead of a token
    kept = {first.content_sha256: first.data, second.content_sha256: second.data}
    again = pub.reencrypt(CHANNEL, recipients=[token_b.text], bundle_source=kept.__getitem__)
    assert again.sequence == 4
    client_apply(file_store, project_id, CHANNEL, signing_key, token_b)
    with pytest.raises(NotFound):
        pub.reencrypt("staging", recipients=[token_a.text], access_token=token_a.text)


# -- inspect and export ---------------------------------------------------------------------------


def test_inspect_verifies_and_summarises(
    pub: Publisher,
    file_store: FileStore,
    project_id: str,
    signing_key: Ed25519PrivateKey,
    other_key: Ed25519PrivateKey,
    token_a: AccessToken,
    prompts: dict[str, Any],
) -> None:
    result = pub.publish(bundle(project_id, prompts), channel=CHANNEL, recipients=[token_a.text])
    trusted = [public_text(signing_key)]
    seen = inspect(file_store, project_id, CHANNEL, trusted)
    assert (seen.sequence, seen.version, seen.prompt_count) == (1, "1.0.0", None)
    assert seen.releases[0].recipients == (token_a.token_id,)
    assert seen.keyid == pub.keyid
    opened = inspect(file_store, project_id, CHANNEL, trusted, token_a.text)
    assert opened.prompt_count == 3
    assert opened.to_json()["releases"][0]["content_sha256"] == result.content_sha256
    with pytest.raises(SignatureError, match="not signed by a trusted key"):
        inspect(file_store, project_id, CHANNEL, [public_text(other_key)])
    with pytest.raises(NotFound):
        inspect(file_store, project_id, "staging", trusted)
    file_store.put(result.object_path, b"tampered")
    with pytest.raises(ChecksumError):
        inspect(file_store, project_id, CHANNEL, trusted)


def test_export_bootstrap(
    pub: Publisher,
    file_store: FileStore,
    project_id: str,
    signing_key: Ed25519PrivateKey,
    token_a: AccessToken,
    prompts: dict[str, Any],
) -> None:
    built = bundle(project_id, prompts)
    pub.publish(built, channel=CHANNEL, recipients=[token_a.text])
    trusted = [public_text(signing_key)]
    data = export_bootstrap(file_store, project_id, CHANNEL, trusted, token_a.text)
    doc = json.loads(data)
    assert set(doc) == {"pointer", "bundles"}
    assert doc["bundles"] == {built.content_sha256: built.data.decode("utf-8")}
    key = TrustedKey.parse(trusted[0])
    pointer = Pointer.parse(verify_envelope(json.dumps(doc["pointer"]).encode(), [key]))
    assert [r.content_sha256 for r in pointer.releases] == [
        sha256_hex(text.encode("utf-8")) for text in doc["bundles"].values()
    ]
    with pytest.raises(ConfigError, match="needs an ACCESS_TOKEN"):
        export_bootstrap(file_store, project_id, CHANNEL, trusted)


def test_read_only_store_is_refused_up_front(
    project_id: str, signing_key: Ed25519PrivateKey
) -> None:
    with pytest.raises(ConfigError, match="read-only"):
        Publisher("http://127.0.0.1:9/anvil", project_id=project_id, signing_key=signing_key)
    with pytest.raises(ValidationError, match="project id"):
        Publisher("file:///tmp/x", project_id="../up", signing_key=signing_key)


def test_history_reports_entries_that_do_not_verify(
    pub: Publisher,
    file_store: FileStore,
    project_id: str,
    other_key: Ed25519PrivateKey,
    prompts: dict[str, Any],
) -> None:
    pub.publish(bundle(project_id, prompts), channel=CHANNEL, plaintext=True)
    pub.publish(bundle(project_id, prompts, "1.0.1"), channel=CHANNEL, plaintext=True)
    forged = Publisher(
        FileStore(file_store.root / "elsewhere"), project_id=project_id, signing_key=other_key
    )
    fake = forged.publish(bundle(project_id, prompts, "6.6.6"), channel=CHANNEL, plaintext=True)
    file_store.put(
        f"projects/{project_id}/channels/{CHANNEL}/history/000000000002.json", fake.envelope
    )
    entries = pub.history(CHANNEL)
    assert [(e.sequence, e.verified) for e in entries] == [(1, True), (2, False)]
    assert entries[1].pointer is None and "does not verify" in (entries[1].error or "")
    unchecked = read_history(file_store, project_id, CHANNEL)
    assert [e.verified for e in unchecked] == [None, None]
    assert unchecked[1].to_json()["releases"][0]["version"] == "6.6.6"
