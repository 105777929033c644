"""Publisher output read by independent libraries, and held to the rules of tests/vectors (v2)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from anvil_client.stores import FileStore
from anvil_client.wire import (
    AccessToken,
    b64url_encode,
    canonical_json,
    decrypt_bundle,
    key_id,
    parse_json_object,
)
from publisher import BuiltBundle, Publisher, build_bundle

VECTOR_PROJECT = "6f1c2a4e-8d3b-4c5a-9e7f-0a1b2c3d4e5f"
STEP3 = Path(__file__).parents[1] / "vectors" / "step3" / "store" / "projects" / VECTOR_PROJECT


def rebuilt(data: bytes) -> BuiltBundle:
    doc = json.loads(data)
    built = build_bundle(
        doc["snapshot"],
        project_id=doc["project_id"],
        version=doc["version"],
        prompt_set_id=doc["prompt_set_id"],
        created_at=doc["created_at"],
    )
    assert built.data == data
    return built


def step3_body() -> dict[str, Any]:
    envelope = json.loads((STEP3 / "channels" / "production.json").read_bytes())
    body: dict[str, Any] = json.loads(base64.b64decode(envelope["payload"]))
    return body


def checkout_helper(vectors: Any) -> BuiltBundle:
    """The step-3 "Checkout helper" bundle, decrypted from the vectors with token_a."""
    token = AccessToken.parse(vectors["keys"]["token_a"])
    entry = step3_body()["releases"][1]
    stored = (STEP3 / "bundles" / Path(entry["object"]["path"]).name).read_bytes()
    return rebuilt(decrypt_bundle(stored, token.token_id, token.kek(), max_plaintext=1 << 20))


def published_store(
    tmp_path: Path, signing_key: Ed25519PrivateKey, tokens: list[AccessToken], vectors: Any
) -> tuple[FileStore, Publisher]:
    """Step 1 and a step-3-like second set, published by this publisher."""
    store = FileStore(tmp_path / "store")
    pub = Publisher(store, project_id=VECTOR_PROJECT, signing_key=signing_key)
    support = rebuilt(vectors["bundle_1_0_0"])
    texts = [t.text for t in tokens]
    pub.publish(support, "production", name="Support bot", recipients=texts)
    pub.publish(checkout_helper(vectors), "production", name="Checkout helper", recipients=texts)
    pub.publish(support, "development", name="Support bot", plaintext=True)
    return store, pub


def body_of(data: bytes) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(base64.b64decode(json.loads(data)["payload"]))
    return body


def test_pointer_verifies_with_securesystemslib(
    tmp_path: Path, signing_key: Ed25519PrivateKey, token_a: AccessToken, vectors: Any
) -> None:
    from securesystemslib.dsse import Envelope
    from securesystemslib.signer import SSlibKey

    store, _ = published_store(tmp_path, signing_key, [token_a], vectors)
    data = store.get(f"projects/{VECTOR_PROJECT}/channels/production.json").data
    envelope = Envelope.from_dict(json.loads(data))
    public = signing_key.public_key()
    key = SSlibKey.from_crypto(public, keyid=key_id(public))
    assert list(envelope.verify([key], threshold=1)) == [key_id(public)]
    assert envelope.payload_type == "application/vnd.anvil.pointer.v2+json"
    body = json.loads(envelope.pae().split(b" ", 4)[4])
    assert body["sequence"] == 2 and len(body["releases"]) == 2


def test_every_entry_decrypts_with_jwcrypto_for_every_recipient(
    tmp_path: Path,
    signing_key: Ed25519PrivateKey,
    token_a: AccessToken,
    token_b: AccessToken,
    vectors: Any,
) -> None:
    from jwcrypto import jwe, jwk

    store, _ = published_store(tmp_path, signing_key, [token_a, token_b], vectors)
    body = body_of(store.get(f"projects/{VECTOR_PROJECT}/channels/production.json").data)
    expected = {
        vectors["bundle_1_0_0"],
        checkout_helper(vectors).data,
    }
    for token in (token_a, token_b):
        found = set()
        for entry in body["releases"]:
            reader = jwe.JWE()
            data = store.get(entry["object"]["path"]).data.decode()
            reader.deserialize(data, key=jwk.JWK(kty="oct", k=b64url_encode(token.kek())))
            found.add(reader.payload)
        assert found == expected


def test_output_follows_the_vectors_rules(
    tmp_path: Path, signing_key: Ed25519PrivateKey, token_a: AccessToken, vectors: Any
) -> None:
    store, pub = published_store(tmp_path, signing_key, [token_a], vectors)
    reference = step3_body()
    ours_root = f"projects/{VECTOR_PROJECT}"
    theirs_envelope = json.loads((STEP3 / "channels" / "production.json").read_bytes())
    ours_bytes = store.get(f"{ours_root}/channels/production.json").data
    ours = json.loads(ours_bytes)
    # same envelope shape, canonical encoding, standard padded base64, keyid of DESIGN §4
    assert ours_bytes == canonical_json(ours)
    assert set(ours) == set(theirs_envelope)
    assert ours["payloadType"] == theirs_envelope["payloadType"]
    assert [set(s) for s in ours["signatures"]] == [set(s) for s in theirs_envelope["signatures"]]
    assert ours["signatures"][0]["keyid"] == key_id(signing_key.public_key())
    for encoded in (ours["payload"], ours["signatures"][0]["sig"]):
        assert base64.b64encode(base64.b64decode(encoded)).decode() == encoded
    body_bytes = base64.b64decode(ours["payload"])
    assert body_bytes == canonical_json(json.loads(body_bytes))
    mine = json.loads(body_bytes)
    assert set(mine) == set(reference)
    assert (mine["type"], mine["sequence"], mine["rollout"]) == ("anvil.pointer/v2", 2, None)
    # the same entries, sorted by prompt_set_id, with the same fields (objects differ: new CEKs)
    assert [set(e) for e in mine["releases"]] == [set(e) for e in reference["releases"]]
    assert [set(e["object"]) for e in mine["releases"]] == [
        set(e["object"]) for e in reference["releases"]
    ]
    fields = ("prompt_set_id", "name", "version")
    assert [[e[f] for f in fields] for e in mine["releases"]] == [
        ["9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d", "Support bot", "1.0.0"],
        [reference["releases"][1][f] for f in fields],
    ]
    assert mine["releases"][1]["content_sha256"] == reference["releases"][1]["content_sha256"]
    # one history copy per sequence, byte-identical to the pointer it was
    history = {e.sequence: e for e in pub.history("production")}
    assert sorted(history) == [1, 2]
    assert store.get(f"{ours_root}/channels/production/history/000000000002.json").data == (
        ours_bytes
    )
    assert [len(e.releases) for e in history.values()] == [1, 2]
    # plaintext objects are byte-identical to the vectors'; the JWE has the same header
    plain = body_of(store.get(f"{ours_root}/channels/development.json").data)["releases"][0]
    their_plain = STEP3 / "bundles" / Path(plain["object"]["path"]).name
    assert store.get(plain["object"]["path"]).data == their_plain.read_bytes()
    their_jwe = json.loads(next((STEP3 / "bundles").glob("*.jwe")).read_bytes())
    our_jwe = parse_json_object(store.get(mine["releases"][0]["object"]["path"]).data, "jwe")
    assert set(our_jwe) == set(their_jwe)
    assert our_jwe["protected"] == their_jwe["protected"]
    assert set(our_jwe["recipients"][0]) == set(their_jwe["recipients"][0])
    assert our_jwe["recipients"][0]["header"] == {"kid": token_a.token_id}


def test_every_move_leaves_a_history_copy_equal_to_the_pointer(
    tmp_path: Path, signing_key: Ed25519PrivateKey, token_a: AccessToken, vectors: Any
) -> None:
    """Kept, removed, rolled back: an independent reader finds each sequence in history."""
    store, pub = published_store(tmp_path, signing_key, [token_a], vectors)
    root = f"projects/{VECTOR_PROJECT}/channels/production"
    pub.remove("production", "c4d5e6f7-0a1b-4c2d-9e3f-5a6b7c8d9e0f")  # sequence 3
    assert store.get(f"{root}/history/000000000003.json").data == store.get(f"{root}.json").data
    pub.rollback("production", to_sequence=2, recipients=[token_a.text])  # sequence 4
    pointer = store.get(f"{root}.json").data
    assert store.get(f"{root}/history/000000000004.json").data == pointer
    body = body_of(pointer)
    assert [e["name"] for e in body["releases"]] == ["Support bot", "Checkout helper"]
    assert body == json.loads(canonical_json(body))
