"""Publisher output read by independent libraries, and held to the rules of tests/vectors."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from anvil_client.stores import FileStore
from anvil_client.wire import AccessToken, b64url_encode, canonical_json, key_id
from publisher import Publisher, build_bundle

VECTOR_PROJECT = "6f1c2a4e-8d3b-4c5a-9e7f-0a1b2c3d4e5f"


def published_store(
    tmp_path: Path, signing_key: Ed25519PrivateKey, tokens: list[AccessToken], vectors: Any
) -> tuple[FileStore, Any, Any]:
    doc = json.loads(vectors["bundle_1_0_0"])
    built = build_bundle(
        doc["snapshot"],
        project_id=doc["project_id"],
        version=doc["version"],
        prompt_set_id=doc["prompt_set_id"],
        created_at=doc["created_at"],
    )
    store = FileStore(tmp_path / "store")
    pub = Publisher(store, project_id=VECTOR_PROJECT, signing_key=signing_key)
    encrypted = pub.publish(built, channel="production", recipients=[t.text for t in tokens])
    plain = pub.publish(built, channel="development", plaintext=True)
    return store, encrypted, plain


def test_pointer_verifies_with_securesystemslib(
    tmp_path: Path, signing_key: Ed25519PrivateKey, token_a: AccessToken, vectors: Any
) -> None:
    from securesystemslib.dsse import Envelope
    from securesystemslib.signer import SSlibKey

    store, result, _ = published_store(tmp_path, signing_key, [token_a], vectors)
    data = store.get(f"projects/{VECTOR_PROJECT}/channels/production.json").data
    envelope = Envelope.from_dict(json.loads(data))
    public = signing_key.public_key()
    key = SSlibKey.from_crypto(public, keyid=key_id(public))
    assert list(envelope.verify([key], threshold=1)) == [key_id(public)]
    assert envelope.payload_type == "application/vnd.anvil.pointer.v1+json"
    assert json.loads(envelope.pae().split(b" ", 4)[4])["sequence"] == result.sequence


def test_bundle_decrypts_with_jwcrypto_for_every_recipient(
    tmp_path: Path,
    signing_key: Ed25519PrivateKey,
    token_a: AccessToken,
    token_b: AccessToken,
    vectors: Any,
) -> None:
    from jwcrypto import jwe, jwk

    store, result, _ = published_store(tmp_path, signing_key, [token_a, token_b], vectors)
    data = store.get(result.object_path).data.decode()
    for token in (token_a, token_b):
        reader = jwe.JWE()
        reader.deserialize(data, key=jwk.JWK(kty="oct", k=b64url_encode(token.kek())))
        assert reader.payload == vectors["bundle_1_0_0"]


def test_output_follows_the_vectors_rules(
    tmp_path: Path, signing_key: Ed25519PrivateKey, token_a: AccessToken, vectors: Any
) -> None:
    store, encrypted, plain = published_store(tmp_path, signing_key, [token_a], vectors)
    theirs_root = Path(vectors["step1"]) / "projects" / VECTOR_PROJECT
    ours_root = f"projects/{VECTOR_PROJECT}"
    for channel in ("production", "development"):
        theirs = json.loads((theirs_root / "channels" / f"{channel}.json").read_bytes())
        ours_bytes = store.get(f"{ours_root}/channels/{channel}.json").data
        ours = json.loads(ours_bytes)
        # same envelope shape, canonical encoding, standard padded base64
        assert ours_bytes == canonical_json(ours)
        assert set(ours) == set(theirs)
        assert ours["payloadType"] == theirs["payloadType"]
        assert [set(s) for s in ours["signatures"]] == [set(s) for s in theirs["signatures"]]
        assert ours["signatures"][0]["keyid"] == key_id(signing_key.public_key())
        assert base64.b64encode(base64.b64decode(ours["payload"])).decode() == ours["payload"]
        body, their_body = (base64.b64decode(e["payload"]) for e in (ours, theirs))
        assert body == canonical_json(json.loads(body))
        mine, reference = json.loads(body), json.loads(their_body)
        assert set(mine) == set(reference)
        assert set(mine["release"]) == set(reference["release"])
        assert set(mine["release"]["object"]) == set(reference["release"]["object"])
        # identical release fields apart from the object (fresh CEK and IV)
        for field in ("version", "prompt_set_id", "content_sha256"):
            assert mine["release"][field] == reference["release"][field]
        assert mine["release"]["object"]["encoding"] == reference["release"]["object"]["encoding"]
        assert (mine["sequence"], mine["channel"], mine["rollout"]) == (1, channel, None)
        history = store.get(f"{ours_root}/channels/{channel}/history/000000000001.json").data
        assert history == ours_bytes
        assert (
            theirs_root / "channels" / channel / "history" / "000000000001.json"
        ).read_bytes() == ((theirs_root / "channels" / f"{channel}.json").read_bytes())
    # plaintext objects are byte-identical to the vectors'; the JWE has the same header
    their_plain = theirs_root / "bundles" / f"{plain.content_sha256}.json"
    assert store.get(plain.object_path).data == their_plain.read_bytes()
    their_jwe = json.loads(next((theirs_root / "bundles").glob("*.jwe")).read_bytes())
    our_jwe = json.loads(store.get(encrypted.object_path).data)
    assert set(our_jwe) == set(their_jwe)
    assert our_jwe["protected"] == their_jwe["protected"]
    assert set(our_jwe["recipients"][0]) == set(their_jwe["recipients"][0])
    assert our_jwe["recipients"][0]["header"] == {"kid": token_a.token_id}
