"""The pure verification core: DESIGN §7's checks in their order, with no I/O at all."""

from __future__ import annotations

import builtins
import json
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from anvil_client._verify import Verifier, check_sequence
from anvil_client.errors import (
    ChecksumError,
    ExpiredError,
    FormatError,
    RollbackError,
    SignatureError,
    SizeLimitError,
)
from anvil_client.stores import FileStore
from anvil_client.wire import (
    POINTER_MAX_SIZE,
    AccessToken,
    Pointer,
    TrustedKey,
    format_timestamp,
    generate_private_key,
    verify_envelope,
)
from tests.anvil_client.wire_publisher import (
    OTHER_SET_ID,
    WirePublisher,
    make_bundle,
    new_project_id,
)

NOW = datetime(2026, 6, 1, tzinfo=UTC)


@pytest.fixture
def pub(tmp_path: Path) -> WirePublisher:
    return WirePublisher(FileStore(tmp_path / "store"))


@pytest.fixture
def verifier(pub: WirePublisher) -> Verifier:
    return Verifier(
        project_id=pub.project_id,
        channel=pub.channel,
        trusted_keys=[TrustedKey.parse(pub.trusted_key)],
        token=AccessToken.parse(pub.token),
        max_bundle_size=1024 * 1024,
    )


def release(pub: WirePublisher, version: str = "1.0.0", **kw: Any) -> dict[str, Any]:
    return pub.put_object(make_bundle({"a": "x"}, version=version), version=version, **kw)


def banned(monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("the pure core did I/O")

    monkeypatch.setattr(builtins, "open", forbidden)
    monkeypatch.setattr(socket, "socket", forbidden)


def accept(verifier: Verifier, envelope: bytes, applied: Pointer | None = None, floor: int = 0):  # type: ignore[no-untyped-def]
    return verifier.accept_pointer(
        envelope,
        applied=applied,
        floor=floor,
        instance_id="11111111-2222-4333-8444-555555555555",
        now=NOW,
    )


def test_a_good_pointer_is_accepted_without_io(
    pub: WirePublisher, verifier: Verifier, monkeypatch: pytest.MonkeyPatch
) -> None:
    rel = release(pub)
    envelope = pub.sign(pub.pointer_body(rel, sequence=3))
    plaintext = make_bundle({"a": "x"}, version="1.0.0")
    stored = pub.store.get(rel["object"]["path"]).data
    banned(monkeypatch)
    accepted = accept(verifier, envelope)
    assert accepted.pointer.sequence == 3
    (entry,) = accepted.releases
    assert entry.content_sha256 == rel["content_sha256"]
    assert verifier.open_entry(entry, stored) == plaintext
    bundle = verifier.verify_bundle(plaintext, accepted.pointer, entry)
    assert bundle.version == "1.0.0"
    again = accept(verifier, envelope, applied=accepted.pointer)
    assert again.releases == accepted.releases


def test_signature_is_checked_before_project_and_channel(
    pub: WirePublisher, verifier: Verifier
) -> None:
    body = pub.pointer_body(release(pub), sequence=1, project_id=new_project_id())
    with pytest.raises(SignatureError):
        accept(verifier, pub.sign(body, key=generate_private_key()))
    with pytest.raises(FormatError, match="for project"):
        accept(verifier, pub.sign(body))


def test_project_and_channel_are_checked_before_the_sequence(
    pub: WirePublisher, verifier: Verifier
) -> None:
    signed = pub.sign(pub.pointer_body(release(pub), sequence=5))
    applied = Pointer.parse(verify_envelope(signed, verifier.trusted_keys))
    other_channel = pub.pointer_body(release(pub), sequence=1, channel="staging")
    with pytest.raises(FormatError, match="for channel"):
        accept(verifier, pub.sign(other_channel), applied=applied)
    with pytest.raises(RollbackError):
        accept(verifier, pub.sign(pub.pointer_body(release(pub), sequence=1)), applied=applied)


def test_the_sequence_is_checked_before_expiry_and_locations_before_both(
    pub: WirePublisher, verifier: Verifier
) -> None:
    past = NOW - timedelta(days=1)
    expired_old = pub.pointer_body(release(pub), sequence=1, expires_at=past)
    with pytest.raises(RollbackError):
        accept(verifier, pub.sign(expired_old), floor=2)
    with pytest.raises(ExpiredError):
        accept(verifier, pub.sign(expired_old))
    # Where the objects are is part of the one pointer verification: refused for everyone.
    outside = release(pub)
    outside["object"]["path"] = f"projects/{new_project_id()}/bundles/{'0' * 64}.jwe"
    with pytest.raises(FormatError, match="outside"):
        accept(verifier, pub.sign(pub.pointer_body(outside, sequence=1, expires_at=past)), floor=2)


def test_expiry_is_exclusive_of_the_future(pub: WirePublisher, verifier: Verifier) -> None:
    body = pub.pointer_body(release(pub), sequence=1, expires_at=NOW + timedelta(seconds=1))
    assert accept(verifier, pub.sign(body)).pointer.expires_at == format_timestamp(
        NOW + timedelta(seconds=1)
    )


def test_the_pointer_size_is_capped(verifier: Verifier) -> None:
    with pytest.raises(SizeLimitError):
        verifier.verify_pointer(b" " * (POINTER_MAX_SIZE + 1))


def test_check_sequence_rules(pub: WirePublisher, verifier: Verifier) -> None:
    first = Pointer.parse(
        verify_envelope(pub.sign(pub.pointer_body(release(pub), sequence=4)), verifier.trusted_keys)
    )
    check_sequence(first, applied=first, floor=4)  # the same pointer again is fine
    check_sequence(first, applied=None, floor=3)
    with pytest.raises(RollbackError):
        check_sequence(first, applied=None, floor=5)


def test_open_object_checks_size_hash_and_content(pub: WirePublisher, verifier: Verifier) -> None:
    rel = release(pub)
    envelope = pub.sign(pub.pointer_body(rel, sequence=1))
    (entry,) = accept(verifier, envelope).releases
    stored = pub.store.get(rel["object"]["path"]).data
    assert verifier.fetch_entry(pub.store, entry) == make_bundle({"a": "x"}, version="1.0.0")
    pub.store.put(rel["object"]["path"], stored[:-1])
    with pytest.raises(ChecksumError, match="bytes but the signed pointer says"):
        verifier.fetch_entry(pub.store, entry)
    flipped = bytes([stored[0] ^ 1]) + stored[1:]
    pub.store.put(rel["object"]["path"], flipped)
    with pytest.raises(ChecksumError, match=r"bundle object of .* \(SHA-256\)"):
        verifier.fetch_entry(pub.store, entry)


def test_the_same_sequence_with_other_entries_is_a_rollback(
    pub: WirePublisher, verifier: Verifier
) -> None:
    first = pub.sign(pub.pointer_body(release(pub), sequence=4))
    applied = accept(verifier, first).pointer
    extra = release(pub, prompt_set_id=OTHER_SET_ID, name="Checkout helper")
    both = pub.pointer_body([release(pub), extra], sequence=4)
    with pytest.raises(RollbackError, match="already accepted with other entries"):
        accept(verifier, pub.sign(both), applied=applied)
    renamed = pub.pointer_body({**release(pub), "name": "Renamed"}, sequence=4)
    with pytest.raises(RollbackError):
        accept(verifier, pub.sign(renamed), applied=applied)
    newer = accept(verifier, pub.sign({**both, "sequence": 5}), applied=applied)
    assert [r.prompt_set_id for r in newer.releases] == [pub.prompt_set_id, OTHER_SET_ID]


def test_an_entry_larger_than_the_maximum_is_refused_before_any_fetch(
    pub: WirePublisher, verifier: Verifier, monkeypatch: pytest.MonkeyPatch
) -> None:
    big = {**release(pub), "prompt_set_id": OTHER_SET_ID}
    big["object"] = {**big["object"], "size": 1024 * 1024 + 1}
    envelope = pub.sign(pub.pointer_body([release(pub), big], sequence=1))
    banned(monkeypatch)
    with pytest.raises(SizeLimitError, match="larger than the 1048576-byte limit"):
        accept(verifier, envelope)


def test_bootstrap_files_are_verified(pub: WirePublisher, verifier: Verifier) -> None:
    published = pub.publish({"a": "x"}, version="1.0.0")
    content = published.release["content_sha256"]
    good = json.dumps(
        {
            "pointer": json.loads(published.envelope),
            "bundles": {content: published.plaintext.decode()},
        }
    ).encode()
    envelope, verified = verifier.verify_bootstrap(good, "i")
    assert [b.version for b in verified.bundles] == ["1.0.0"]
    assert envelope == published.envelope
    with pytest.raises(FormatError, match="no 'pointer'"):
        verifier.verify_bootstrap(b'{"bundles": {}}', "i")
    with pytest.raises(FormatError, match="no bundle for"):
        verifier.verify_bootstrap(good.replace(content.encode(), b"0" * 64), "i")
    tampered = good.replace(b'\\"x\\"', b'\\"y\\"')
    assert tampered != good
    with pytest.raises(ChecksumError):
        verifier.verify_bootstrap(tampered, "i")
