"""Hostile bundle objects behind correctly signed pointers: JWE tricks, bombs, lying bundles.

The pointer is signed by the trusted key (the attacker controls the publisher's input or the
publisher is buggy), so everything below the signature must hold on its own.
"""

from __future__ import annotations

import json
import os
import zlib
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.keywrap import aes_key_wrap

from anvil_client.errors import (
    ChecksumError,
    DecryptionError,
    FormatError,
    MissingVariable,
    RenderError,
    SizeLimitError,
    StoreUnavailable,
)
from anvil_client.stores import GetResult, ObjectStore
from anvil_client.wire import AccessToken, canonical_json, sha256_hex
from tests.anvil_client.hostile_kit import V2, MakeClient, b64url, refused, serving_v1, signed
from tests.anvil_client.spy_stores import SpyStore
from tests.anvil_client.wire_publisher import WirePublisher, make_bundle

HEADER = {
    "alg": "A256KW",
    "cty": "application/vnd.anvil.bundle.v1+json",
    "enc": "A256GCM",
    "zip": "DEF",
}


def deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    return compressor.compress(data) + compressor.flush()


def jwe(
    plaintext: bytes,
    to: list[tuple[str, bytes]],
    *,
    header: dict[str, Any] | None = None,
    compress: bool = True,
    cek: bytes | None = None,
    **overrides: Any,
) -> bytes:
    """A JWE built by hand for ``to`` (``(kid, kek)`` pairs); ``overrides`` replace members."""
    protected = b64url(canonical_json(HEADER if header is None else header))
    cek = cek or AESGCM.generate_key(bit_length=256)
    iv = os.urandom(12)
    body = deflate(plaintext) if compress else plaintext
    sealed = AESGCM(cek).encrypt(iv, body, protected.encode())
    doc: dict[str, Any] = {
        "protected": protected,
        "recipients": [
            {"header": {"kid": kid}, "encrypted_key": b64url(aes_key_wrap(kek, cek))}
            for kid, kek in to
        ],
        "iv": b64url(iv),
        "ciphertext": b64url(sealed[:-16]),
        "tag": b64url(sealed[-16:]),
    }
    doc.update(overrides)
    return json.dumps(doc).encode()


def point_at(
    publisher: WirePublisher,
    data: bytes,
    *,
    encoding: str = "jwe",
    plaintext: bytes | None = None,
    version: str = "2.0.0",
    sequence: int = 2,
) -> None:
    """Store ``data`` as a bundle object and sign a pointer that describes it exactly."""
    digest = sha256_hex(data)
    path = f"projects/{publisher.project_id}/bundles/{digest}.{encoding}"
    publisher.store.put(path, data)
    content = plaintext if plaintext is not None else make_bundle(V2, version=version)
    release = {
        "version": version,
        "prompt_set_id": publisher.prompt_set_id,
        "content_sha256": sha256_hex(content),
        "object": {"path": path, "sha256": digest, "size": len(data), "encoding": encoding},
    }
    publisher.put_pointer(signed(publisher, publisher.pointer_body(release, sequence=sequence)))


def mine(publisher: WirePublisher) -> tuple[str, bytes]:
    token = publisher.tokens[0]
    return token.token_id, token.kek()


def serves_v2(client: Any) -> None:
    client.sync()
    assert client.prompt("welcome.message", name="Ada") == "Hello Ada, v2."
    assert client.status()["last_error"] is None


V2_BYTES = make_bundle(V2, version="2.0.0")


# --- JWE recipients and keys ----------------------------------------------------------------


def test_our_kid_repeated_with_a_bad_key_first_still_decrypts(
    publisher: WirePublisher, make_client: MakeClient
) -> None:
    client = serving_v1(publisher, make_client)
    kid, kek = mine(publisher)
    point_at(publisher, jwe(V2_BYTES, [(kid, os.urandom(32)), ("zzzzzzzzzzzz", kek), (kid, kek)]))
    serves_v2(client)


def test_our_kid_with_a_key_wrapped_for_someone_else_is_a_decryption_error(
    publisher: WirePublisher, make_client: MakeClient
) -> None:
    client = serving_v1(publisher, make_client)
    kid, _ = mine(publisher)
    stranger = AccessToken.generate()
    point_at(publisher, jwe(V2_BYTES, [(kid, stranger.kek()), (kid, stranger.kek())]))
    refused(client, DecryptionError, f"cannot be decrypted with this ACCESS_TOKEN ({kid})")


def test_a_bundle_for_other_tokens_only_says_we_may_be_revoked(
    publisher: WirePublisher, make_client: MakeClient
) -> None:
    client = serving_v1(publisher, make_client)
    stranger = AccessToken.generate()
    point_at(publisher, jwe(V2_BYTES, [(stranger.token_id, stranger.kek())]))
    refused(client, DecryptionError, "revoked")


def test_a_wrapped_key_of_the_wrong_length_is_a_decryption_error(
    publisher: WirePublisher, make_client: MakeClient
) -> None:
    client = serving_v1(publisher, make_client)
    kid, kek = mine(publisher)
    # AES key wrap of a 128-bit key with our KEK: it unwraps, but A256GCM needs 256 bits.
    short_cek = os.urandom(16)
    doc = json.loads(jwe(V2_BYTES, [(kid, kek)]))
    doc["recipients"][0]["encrypted_key"] = b64url(aes_key_wrap(kek, short_cek))
    point_at(publisher, json.dumps(doc).encode())
    refused(client, DecryptionError, "cannot be decrypted")


@pytest.mark.parametrize(
    ("header", "match"),
    [
        ({"alg": "none", "enc": "A256GCM"}, "alg A256KW"),
        ({"alg": "dir", "enc": "A256GCM", "zip": "DEF"}, "alg A256KW"),
        ({"alg": "A128KW", "enc": "A256GCM"}, "alg A256KW"),
        ({"alg": "A256KW", "enc": "A128CBC-HS256"}, "enc A256GCM"),
        ({"alg": "A256KW"}, "enc A256GCM"),
        ({"alg": "A256KW", "enc": "A256GCM", "zip": "GZIP"}, "zip"),
        ({"alg": "A256KW", "enc": "A256GCM", "zip": None}, "zip"),
        ({"alg": "A256KW", "enc": "A256GCM", "zip": "DEF", "crit": ["exp"]}, "critical"),
    ],
    ids=repr,
)
def test_protected_headers_other_than_ours_are_refused(
    publisher: WirePublisher, make_client: MakeClient, header: dict[str, Any], match: str
) -> None:
    client = serving_v1(publisher, make_client)
    point_at(publisher, jwe(V2_BYTES, [mine(publisher)], header=header))
    refused(client, FormatError, match)


def test_alg_dir_in_a_recipient_header_cannot_override_the_protected_one(
    publisher: WirePublisher, make_client: MakeClient
) -> None:
    client = serving_v1(publisher, make_client)
    kid, kek = mine(publisher)
    doc = json.loads(jwe(V2_BYTES, [(kid, kek)]))
    doc["recipients"][0]["header"]["alg"] = "dir"
    point_at(publisher, json.dumps(doc).encode())
    refused(client, FormatError, "repeats a header parameter")


def test_zip_in_the_unprotected_header_is_refused(
    publisher: WirePublisher, make_client: MakeClient
) -> None:
    client = serving_v1(publisher, make_client)
    header = {k: v for k, v in HEADER.items() if k != "zip"}
    data = jwe(V2_BYTES, [mine(publisher)], header=header, unprotected={"zip": "DEF"})
    point_at(publisher, data)
    refused(client, FormatError, "zip")


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        ({"protected": 5}, FormatError, "protected header"),
        ({"protected": "é"}, FormatError, "protected header"),
        ({"protected": b64url(b"[]")}, FormatError, "protected header"),
        ({"protected": b64url(b"\xff")}, FormatError, "protected header"),
        ({"recipients": []}, FormatError, "no recipients"),
        ({"recipients": {"header": {}}}, FormatError, "no recipients"),
        ({"recipients": [5]}, FormatError, "recipient"),
        ({"recipients": [{"header": "x"}]}, FormatError, "recipient header"),
        ({"recipients": [{"header": {"kid": 7}}]}, FormatError, "kid"),
        ({"recipients": [{"header": {"kid": "x"}, "encrypted_key": 3}]}, FormatError, "key"),
        ({"iv": b64url(b"123")}, FormatError, "iv or tag"),
        ({"iv": None}, FormatError, "iv"),
        ({"tag": b64url(b"t" * 15)}, FormatError, "iv or tag"),
        ({"ciphertext": "!!"}, FormatError, "ciphertext"),
        ({"unprotected": []}, FormatError, "unprotected"),
        ({"aad": 5}, FormatError, "aad"),
        ({"encrypted_key": "AAAA"}, FormatError, "mixes"),
    ],
    ids=repr,
)
def test_a_malformed_jwe_is_a_format_error(
    publisher: WirePublisher,
    make_client: MakeClient,
    change: dict[str, Any],
    error: type,
    match: str,
) -> None:
    client = serving_v1(publisher, make_client)
    point_at(publisher, jwe(V2_BYTES, [mine(publisher)], **change))
    refused(client, error, match)


@pytest.mark.parametrize(
    "data",
    [b"not json", b"[]", b"\xef\xbb\xbf{}", b'{"protected": "a", "protected": "b"}', b"{" * 5000],
    ids=["text", "array", "bom", "duplicate", "deep"],
)
def test_an_object_that_is_not_a_jwe_object_is_a_format_error(
    publisher: WirePublisher, make_client: MakeClient, data: bytes
) -> None:
    client = serving_v1(publisher, make_client)
    point_at(publisher, data)
    refused(client, FormatError, "JWE")


@pytest.mark.parametrize("cut", ["ciphertext", "tag"])
def test_a_truncated_ciphertext_or_tag_does_not_decrypt(
    publisher: WirePublisher, make_client: MakeClient, cut: str
) -> None:
    client = serving_v1(publisher, make_client)
    doc = json.loads(jwe(V2_BYTES, [mine(publisher)]))
    if cut == "ciphertext":
        doc["ciphertext"] = doc["ciphertext"][:-8]
        refused_error: type = DecryptionError
    else:
        doc["tag"] = doc["tag"][:-4]
        refused_error = FormatError
    point_at(publisher, json.dumps(doc).encode())
    refused(client, refused_error, "")


def test_aad_is_authenticated(publisher: WirePublisher, make_client: MakeClient) -> None:
    client = serving_v1(publisher, make_client)
    point_at(publisher, jwe(V2_BYTES, [mine(publisher)], aad=b64url(b"added later")))
    refused(client, DecryptionError, "cannot be decrypted")


def test_a_zip_bomb_stops_at_the_configured_cap(
    publisher: WirePublisher, make_client: MakeClient
) -> None:
    client = serving_v1(publisher, make_client, max_bundle_size=256 * 1024)
    bomb = b'{"a":"' + b"0" * (50 * 1024 * 1024) + b'"}'
    data = jwe(bomb, [mine(publisher)])
    assert len(data) < 256 * 1024  # small on the wire, 50 MiB inflated
    point_at(publisher, data, plaintext=bomb)
    refused(client, SizeLimitError, "inflates past the 262144-byte limit")


def test_an_uncompressed_jwe_larger_than_the_cap_is_refused(
    publisher: WirePublisher, make_client: MakeClient
) -> None:
    client = serving_v1(publisher, make_client, max_bundle_size=64 * 1024)
    header = {k: v for k, v in HEADER.items() if k != "zip"}
    big = make_bundle({"big": "x" * 60_000}, version="2.0.0")
    # Base64 makes the object larger than the plaintext: the cap hits the download first.
    point_at(publisher, jwe(big, [mine(publisher)], header=header, compress=False), plaintext=big)
    refused(client, SizeLimitError, "limit")


@pytest.mark.parametrize(
    ("tail", "match"), [(b"", "truncated"), (b"extra", "extra bytes")], ids=["cut", "trailing"]
)
def test_a_deflate_stream_that_is_cut_or_followed_by_bytes_is_refused(
    publisher: WirePublisher, make_client: MakeClient, tail: bytes, match: str
) -> None:
    client = serving_v1(publisher, make_client)
    kid, kek = mine(publisher)
    stream = deflate(V2_BYTES)
    stream = stream[:-3] if not tail else stream + tail
    protected = b64url(canonical_json(HEADER))
    cek, iv = os.urandom(32), os.urandom(12)
    sealed = AESGCM(cek).encrypt(iv, stream, protected.encode())
    doc = {
        "protected": protected,
        "recipients": [{"header": {"kid": kid}, "encrypted_key": b64url(aes_key_wrap(kek, cek))}],
        "iv": b64url(iv),
        "ciphertext": b64url(sealed[:-16]),
        "tag": b64url(sealed[-16:]),
    }
    point_at(publisher, json.dumps(doc).encode())
    refused(client, FormatError, match)


# --- what the plaintext says ---------------------------------------------------------------


def _bundle(**changes: Any) -> bytes:
    doc = json.loads(V2_BYTES)
    doc.update(changes)
    return canonical_json(doc)


@pytest.mark.parametrize(
    ("plaintext", "match"),
    [
        (_bundle(version="2.0.1"), "version"),
        (_bundle(project_id="11111111-2222-4333-8444-555555555555"), "project"),
        (_bundle(prompt_set_id="another-set"), "prompt set"),
        (_bundle(type="anvil.bundle/v2"), "type"),
        (_bundle(version="v2"), "semver"),
        (_bundle(version=2), "version"),
        (_bundle(created_at="yesterday"), "timestamp"),
        (_bundle(created_at="0001-01-01T00:00:00+00:01"), "timestamp"),
        (_bundle(snapshot=[]), "snapshot"),
        (_bundle(snapshot={"Welcome": {"template": "x"}}), "invalid prompt id"),
        (_bundle(snapshot={"a" * 129: {"template": "x"}}), "invalid prompt id"),
        (_bundle(snapshot={"a.": {"template": "x"}}), "invalid prompt id"),
        (_bundle(snapshot={"a\n": {"template": "x"}}), "invalid prompt id"),
        (_bundle(snapshot={"": {"template": "x"}}), "invalid prompt id"),
        (_bundle(snapshot={"a": "x"}), "not an object"),
        (_bundle(snapshot={"a": {}}), "exactly one"),
        (_bundle(snapshot={"a": {"template": "x", "messages": []}}), "exactly one"),
        (_bundle(snapshot={"a": {"template": 5}}), "template must be a string"),
        (_bundle(snapshot={"a": {"messages": []}}), "non-empty list"),
        (_bundle(snapshot={"a": {"messages": [{"role": "root", "template": "x"}]}}), "role"),
        (_bundle(snapshot={"a": {"messages": [{"role": "user"}]}}), "template string"),
        (_bundle(snapshot={"a": {"messages": ["x"]}}), "not an object"),
        (_bundle(snapshot={"a": {"template": "x", "variables": "name"}}), "variables"),
        (_bundle(snapshot={"a": {"template": "x", "variables": [1]}}), "variables"),
        (_bundle(snapshot={"a": {"template": "x", "metadata": []}}), "metadata"),
        (b"\xef\xbb\xbf" + V2_BYTES, "UTF-8 JSON"),
        (V2_BYTES + b"\x00", "UTF-8 JSON"),
        (V2_BYTES.replace(b'"snapshot"', b'"version":"9.9.9","snapshot"'), "repeats"),
        (b'{"type":"anvil.bundle/v1","x":' + b"[" * 100_000 + b"]" * 100_000 + b"}", "JSON"),
        (b"[]", "not a JSON object"),
    ],
    ids=lambda v: repr(v)[:60],
)
def test_a_plaintext_bundle_that_lies_or_is_malformed_is_refused(
    publisher: WirePublisher, make_client: MakeClient, plaintext: bytes, match: str
) -> None:
    client = serving_v1(publisher, make_client)
    point_at(publisher, plaintext, encoding="json", plaintext=plaintext)
    refused(client, FormatError, match)


def test_the_same_lie_inside_a_jwe_is_refused_too(
    publisher: WirePublisher, make_client: MakeClient
) -> None:
    client = serving_v1(publisher, make_client)
    lying = _bundle(version="2.0.1")
    point_at(publisher, jwe(lying, [mine(publisher)]), plaintext=lying)
    refused(client, FormatError, "version")


def test_plaintext_that_does_not_hash_to_content_sha256_is_refused(
    publisher: WirePublisher, make_client: MakeClient
) -> None:
    client = serving_v1(publisher, make_client)
    evil = make_bundle({"welcome.message": "evil {{ name }}"}, version="2.0.0")
    point_at(publisher, jwe(evil, [mine(publisher)]), plaintext=V2_BYTES)
    refused(client, ChecksumError, "bundle content of")


def test_a_jwe_object_signed_as_json_is_refused(
    publisher: WirePublisher, make_client: MakeClient
) -> None:
    client = serving_v1(publisher, make_client)
    point_at(publisher, jwe(V2_BYTES, [mine(publisher)]), encoding="json")
    refused(client, ChecksumError, "bundle content of")


def test_templates_that_fail_only_at_render_time_break_only_themselves(
    publisher: WirePublisher, make_client: MakeClient
) -> None:
    client = serving_v1(publisher, make_client)
    prompts = {
        "welcome.message": "Hello {{ name }}, v2.",
        "broken.syntax": "{% if %}",
        "broken.divide": "{{ 1 / 0 }}",
        "broken.attr": "{{ name.__class__.__mro__ }}",
        "broken.power": "{{ 9 ** 999999 }}",
        "broken.block": "{% block a %}{% endblock %}{% block a %}{% endblock %}",
        "broken.chat": [("system", "ok"), ("user", "{{ }}")],
        "broken.call": "{{ name() }}",
        "broken.loop": "{% for i in range(10**9) %}{{ i }}{% endfor %}",
    }
    plaintext = make_bundle(
        {k: v if not k.startswith("broken.") else {"template": v} for k, v in prompts.items()}
        | {"broken.chat": {"messages": [{"role": "system", "template": "ok"},
                                        {"role": "user", "template": "{{ }}"}]}},
        version="2.0.0",
    )  # fmt: skip
    point_at(publisher, jwe(plaintext, [mine(publisher)]), plaintext=plaintext)
    serves_v2(client)
    assert client.status()["prompts"] == len(prompts)
    for prompt_id in prompts:
        if prompt_id.startswith("broken."):
            with pytest.raises(RenderError) as caught:
                client.prompt(prompt_id, name="Ada")
            assert not isinstance(caught.value, MissingVariable)
            assert repr(prompt_id) in str(caught.value)
            assert "\n" not in str(caught.value)
    with pytest.raises(RenderError):
        client.messages("broken.chat")
    assert client.prompt("welcome.message", name="Ada") == "Hello Ada, v2."


def test_a_bundle_of_100k_tiny_prompts_is_served(
    publisher: WirePublisher, make_client: MakeClient
) -> None:
    client = serving_v1(publisher, make_client)
    snapshot = {
        f"p.n{i}": {"template": "x", "variables": [], "metadata": {}} for i in range(100_000)
    }
    snapshot["welcome.message"] = {"template": "Hello {{ name }}, v2.", "variables": ["name"]}
    plaintext = canonical_json(dict(json.loads(V2_BYTES), snapshot=snapshot))
    point_at(publisher, jwe(plaintext, [mine(publisher)]), plaintext=plaintext)
    serves_v2(client)
    assert client.status()["prompts"] == 100_001
    assert client.prompt("p.n99999") == "x"


def test_lone_surrogates_in_a_template_do_not_break_sync(
    publisher: WirePublisher, make_client: MakeClient
) -> None:
    client = serving_v1(publisher, make_client)
    plaintext = V2_BYTES.replace(b"Hello {{ name }}", b"Hello \\ud800{{ name }}")
    point_at(publisher, jwe(plaintext, [mine(publisher)]), plaintext=plaintext)
    client.sync()
    assert client.prompt("welcome.message", name="Ada") == "Hello \ud800Ada, v2."


def test_metadata_with_huge_numbers_is_served_as_parsed(
    publisher: WirePublisher, make_client: MakeClient
) -> None:
    client = serving_v1(publisher, make_client)
    doc = json.loads(V2_BYTES)
    doc["snapshot"]["welcome.message"]["metadata"] = {"temperature": 0.2}
    plaintext = canonical_json(doc).replace(b"0.2", b"1e999")
    point_at(publisher, jwe(plaintext, [mine(publisher)]), plaintext=plaintext)
    serves_v2(client)
    assert client.metadata("welcome.message")["temperature"] == float("inf")


class GrowingStore(SpyStore):
    """A store whose bundle objects grow while read: it ignores ``max_size``, as a buggy
    driver might. The base class must still enforce the cap."""

    def __init__(self, inner: ObjectStore) -> None:
        super().__init__(inner)
        self.extra = b""
        self.fail: Exception | None = None

    def _get(self, key: str, if_none_match: str | None, max_size: int) -> GetResult:
        if "/bundles/" not in key:
            return self.inner.get(key, if_none_match=if_none_match, max_size=max_size)
        if self.fail is not None:
            raise self.fail
        result = self.inner.get(key)
        return GetResult(data=result.data + self.extra, etag=result.etag)


def test_an_object_that_grows_while_read_is_cut_by_the_store_base(
    publisher: WirePublisher, make_client: MakeClient
) -> None:
    store = GrowingStore(publisher.store)
    client = serving_v1(publisher, make_client, store=store)
    store.extra = b" " * 1000
    publisher.publish(V2, version="2.0.0")
    refused(client, SizeLimitError, "limit")


@pytest.mark.parametrize(
    "error", [KeyError("x"), TypeError("t"), UnicodeDecodeError("utf-8", b"\xff", 0, 1, "bad")]
)
def test_a_store_driver_bug_is_store_unavailable(
    publisher: WirePublisher, make_client: MakeClient, error: Exception
) -> None:
    store = GrowingStore(publisher.store)
    client = serving_v1(publisher, make_client, store=store)
    store.fail = error
    publisher.publish(V2, version="2.0.0")
    refused(client, StoreUnavailable, "failed")


@pytest.mark.parametrize(
    "changes",
    [
        {"version": "v" * 100_000},
        {"snapshot": {"a": {"messages": [{"role": "r" * 100_000, "template": "x"}]}}},
        {"snapshot": {"a": {"messages": [{"role": ["r"] * 30_000, "template": "x"}]}}},
        {"snapshot": {"a" * 100_000: {"template": "x"}}},
        {"project_id": "p" * 100_000},
        {"prompt_set_id": "s" * 100_000},
    ],
    ids=["version", "role", "role-list", "prompt-id", "project", "set"],
)
def test_huge_values_in_a_bundle_give_short_errors(
    publisher: WirePublisher, make_client: MakeClient, changes: dict[str, Any]
) -> None:
    client = serving_v1(publisher, make_client)
    plaintext = _bundle(**changes)
    point_at(publisher, plaintext, encoding="json", plaintext=plaintext)
    refused(client, FormatError, "")
