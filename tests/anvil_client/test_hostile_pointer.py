"""Hostile pointers: envelopes and bodies crafted byte by byte in a FileStore.

Each case is refused with the right error and one sentence while v1 keeps being served, or
(for the odd-but-valid ones) accepted exactly as signed.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from anvil_client.errors import (
    ExpiredError,
    FormatError,
    RollbackError,
    SignatureError,
    SizeLimitError,
)
from anvil_client.wire import canonical_json, format_timestamp, generate_private_key
from tests.anvil_client.hostile_kit import (
    V2,
    MakeClient,
    b64,
    b64url,
    envelope,
    refused,
    serving_v1,
    signature,
    signed,
)
from tests.anvil_client.wire_publisher import WirePublisher, make_bundle

PAYLOAD_TYPE = "application/vnd.anvil.pointer.v2+json"


def v2_body(publisher: WirePublisher, **changes: Any) -> dict[str, Any]:
    """A pointer body for a v2 that is really in the store, with ``changes`` applied."""
    release = publisher.put_object(make_bundle(V2, version="2.0.0"), version="2.0.0")
    body = publisher.pointer_body(release, sequence=2)
    body.update(changes)
    return body


def serves_v2(client: Any) -> None:
    client.sync()
    assert client.prompt("welcome.message", name="Ada") == "Hello Ada, v2."
    assert client.status()["sequence"] == 2
    assert client.status()["last_error"] is None


# --- the envelope's JSON -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mangle", "match"),
    [
        (lambda e: b"\xef\xbb\xbf" + e, "not valid UTF-8 JSON"),  # a BOM
        (lambda e: e + b" garbage", "not valid UTF-8 JSON"),
        (lambda e: e + b"{}", "not valid UTF-8 JSON"),
        (lambda e: e[:-1], "not valid UTF-8 JSON"),  # truncated
        (lambda e: e.replace(b"{", b'{"payload": "e30=", ', 1), "repeats the member"),
        (lambda e: b"[" * 30000 + b"]" * 30000, "not valid UTF-8 JSON"),
        (lambda e: b'{"x": ' + b"[" * 30000 + b"]" * 30000 + b"}", "not valid UTF-8 JSON"),
        (lambda e: b'{"x": 1' + b"0" * 5000 + b"}", "not valid UTF-8 JSON"),
        (lambda e: b'{"x": NaN}', "not valid UTF-8 JSON"),
        (lambda e: b"\xff\xfe" + e, "not valid UTF-8 JSON"),
        (lambda e: e.decode().encode("utf-16"), "not valid UTF-8 JSON"),
        (lambda e: b"", "not valid UTF-8 JSON"),
        (lambda e: b"null", "not a JSON object"),
        (lambda e: b'"a string"', "not a JSON object"),
    ],
    ids=[
        "bom",
        "trailing-garbage",
        "two-objects",
        "truncated",
        "duplicate-payload",
        "deep-array",
        "deep-member",
        "huge-integer",
        "nan",
        "utf16-bom",
        "utf16",
        "empty",
        "null",
        "string",
    ],
)
def test_a_malformed_envelope_is_a_format_error(
    publisher: WirePublisher, make_client: MakeClient, mangle: Any, match: str
) -> None:
    client = serving_v1(publisher, make_client)
    publisher.put_pointer(mangle(signed(publisher, v2_body(publisher))))
    refused(client, FormatError, match)


def test_a_huge_exponent_in_the_envelope_does_not_overflow(
    publisher: WirePublisher, make_client: MakeClient
) -> None:
    client = serving_v1(publisher, make_client)
    good = json.loads(signed(publisher, v2_body(publisher)))
    # Unknown members of the envelope are ignored; an infinite float must not break anything.
    raw = json.dumps(good)[:-1] + ', "x": 1e999, "y": -1e999}'
    publisher.put_pointer(raw.encode())
    serves_v2(client)


@pytest.mark.parametrize(
    ("doc", "error", "match"),
    [
        ({"payloadType": 7}, FormatError, "payloadType"),
        ({"payloadType": None}, FormatError, "payloadType"),
        ({"payloadType": ["a"]}, FormatError, "payloadType"),
        ({"signatures": {"sig": "x"}}, FormatError, "signatures"),
        ({"signatures": "sig"}, FormatError, "signatures"),
        ({"signatures": None}, FormatError, "signatures"),
        ({"signatures": []}, SignatureError, "no signatures"),
        ({"signatures": [1, "a", None, [], {}]}, SignatureError, "does not verify"),
        ({"signatures": [{"sig": 5}, {"sig": None}, {"sig": "!!"}]}, SignatureError, "verify"),
        ({"payload": 12}, FormatError, "payload"),
        ({"payload": "not base64!"}, FormatError, "payload"),
        ({"payload": "é"}, FormatError, "payload"),
        ({"payload": None}, FormatError, "payload"),
    ],
    ids=lambda v: str(v)[:20] if not isinstance(v, type) else v.__name__,
)
def test_envelope_members_of_the_wrong_shape(
    publisher: WirePublisher, make_client: MakeClient, doc: dict[str, Any], error: type, match: str
) -> None:
    client = serving_v1(publisher, make_client)
    good = json.loads(signed(publisher, v2_body(publisher)))
    good.update(doc)
    publisher.put_pointer(json.dumps(good).encode())
    refused(client, error, match)


def test_a_pointer_larger_than_64_kib_is_refused_even_if_signed(
    publisher: WirePublisher, make_client: MakeClient
) -> None:
    client = serving_v1(publisher, make_client)
    body = v2_body(publisher, padding="x" * 70_000)
    publisher.put_pointer(signed(publisher, body))
    refused(client, SizeLimitError, "limit")


# --- signatures ----------------------------------------------------------------------------


def test_a_bad_first_signature_does_not_hide_a_good_second(
    publisher: WirePublisher, make_client: MakeClient
) -> None:
    client = serving_v1(publisher, make_client)
    body = canonical_json(v2_body(publisher))
    good = signature(body, publisher.key)
    forged = dict(good, sig=b64(b"\x00" * 64))  # same keyid, wrong signature
    stranger = signature(body, generate_private_key())
    publisher.put_pointer(envelope(body, [forged, stranger, "junk", good]))
    serves_v2(client)


def test_only_bad_signatures_are_a_signature_error(
    publisher: WirePublisher, make_client: MakeClient
) -> None:
    client = serving_v1(publisher, make_client)
    body = canonical_json(v2_body(publisher))
    good = signature(body, publisher.key)
    entries = [
        dict(good, sig=b64(b"\x00" * 64)),
        dict(good, sig=b64(b"\x01" * 10)),  # the wrong length for Ed25519
        dict(good, sig=""),
        signature(body, generate_private_key()),
        signature(body, publisher.key, payload_type="application/other"),
        signature(body + b" ", publisher.key),
    ]
    publisher.put_pointer(envelope(body, entries))
    refused(client, SignatureError, "does not verify")


@pytest.mark.parametrize(
    "keyid",
    [
        lambda k: k.upper(),
        lambda k: "",
        lambda k: 42,  # not a string: try every trusted key
        lambda k: None,
    ],
    ids=["uppercase", "empty", "int", "null"],
)
def test_keyid_is_only_a_hint(
    publisher: WirePublisher, make_client: MakeClient, keyid: Any
) -> None:
    client = serving_v1(publisher, make_client)
    body = canonical_json(v2_body(publisher))
    entry = signature(body, publisher.key)
    entry["keyid"] = keyid(entry["keyid"])
    publisher.put_pointer(envelope(body, [entry]))
    serves_v2(client)


def test_a_keyid_of_an_untrusted_key_is_not_tried_against_ours(
    publisher: WirePublisher, make_client: MakeClient
) -> None:
    client = serving_v1(publisher, make_client)
    body = canonical_json(v2_body(publisher))
    entry = signature(body, publisher.key, keyid="ab" * 32)
    publisher.put_pointer(envelope(body, [entry]))
    refused(client, SignatureError, "does not verify")


def test_url_safe_base64_without_padding_is_accepted(
    publisher: WirePublisher, make_client: MakeClient
) -> None:
    client = serving_v1(publisher, make_client)
    # Pad the body so that its base64 has '-'/'_' characters and needs padding.
    body = canonical_json(v2_body(publisher, note="\u00ff\u00fe>>>???"))
    while len(body) % 3 == 0:
        body = body[:-1] + b" }"
    raw_sig = publisher.key.sign(
        b"DSSEv1 %d %b %d %b" % (len(PAYLOAD_TYPE), PAYLOAD_TYPE.encode(), len(body), body)
    )
    payload = b64url(body)
    assert "=" not in payload
    entry = {"keyid": "", "sig": b64url(raw_sig)}
    publisher.put_pointer(envelope(body, [entry], payload=payload))
    serves_v2(client)


def test_a_signed_pointer_of_another_payload_type_is_a_format_error(
    publisher: WirePublisher, make_client: MakeClient
) -> None:
    client = serving_v1(publisher, make_client)
    body = canonical_json(v2_body(publisher))
    other = "application/vnd.in-toto+json"
    publisher.put_pointer(
        envelope(body, [signature(body, publisher.key, payload_type=other)], payload_type=other)
    )
    refused(client, FormatError, "payloadType")


def test_an_unsigned_pointer_of_another_payload_type_is_a_signature_error(
    publisher: WirePublisher, make_client: MakeClient
) -> None:
    client = serving_v1(publisher, make_client)
    body = canonical_json(v2_body(publisher))
    publisher.put_pointer(envelope(body, [{"sig": b64(b"\0" * 64)}], payload_type="x/y"))
    refused(client, SignatureError, "does not verify")  # signature first, then the type


# --- the signed body ---------------------------------------------------------------------


def test_a_non_canonical_but_signed_body_is_accepted_and_cached_as_received(
    publisher: WirePublisher, make_client: MakeClient
) -> None:
    client = serving_v1(publisher, make_client)
    body = v2_body(publisher)
    # Readers never re-serialize: spaces, reordered keys, escapes and a trailing newline.
    raw = json.dumps(dict(reversed(list(body.items()))), indent=2, ensure_ascii=True).encode()
    raw = raw.replace(b'"type"', b'"\\u0074ype"') + b"\n"
    sent = signed(publisher, raw)
    publisher.put_pointer(sent)
    serves_v2(client)
    assert Path(client.status()["cache_dir"], "pointer.json").read_bytes() == sent


def test_unknown_body_fields_are_ignored(publisher: WirePublisher, make_client: MakeClient) -> None:
    client = serving_v1(publisher, make_client)
    body = v2_body(publisher, future={"nested": [1, 2, {"x": None}]}, labels=["a"])
    body["releases"][0]["object"]["future"] = True
    publisher.put_pointer(signed(publisher, body))
    serves_v2(client)


@pytest.mark.parametrize(
    "sequence",
    [0, -1, 2**63, 10**30, 1.0, 2.0, True, "2", None, [2], {"n": 2}],
    ids=repr,
)
def test_a_signed_sequence_that_is_not_a_positive_int64_is_refused(
    publisher: WirePublisher, make_client: MakeClient, sequence: object
) -> None:
    client = serving_v1(publisher, make_client)
    publisher.put_pointer(signed(publisher, v2_body(publisher, sequence=sequence)))
    refused(client, FormatError, "sequence")


def test_the_largest_int64_sequence_is_accepted(
    publisher: WirePublisher, make_client: MakeClient
) -> None:
    client = serving_v1(publisher, make_client)
    publisher.put_pointer(signed(publisher, v2_body(publisher, sequence=2**63 - 1)))
    client.sync()
    assert client.status()["sequence"] == 2**63 - 1
    assert client.prompt("welcome.message", name="Ada") == "Hello Ada, v2."


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("published_at", "2026-01-15T10:30:00"),  # no zone
        ("published_at", "2026-01-15 10:30:00Z"),
        ("published_at", "2026-02-30T10:30:00Z"),
        ("published_at", "2026-01-15T24:00:00Z"),
        ("published_at", "2026-01-15T10:30:00+25:00"),
        ("published_at", "2026-01-15T10:30:00Z\n"),
        ("published_at", "0001-01-01T00:00:00+01:00"),  # before year 1 in UTC
        ("published_at", 1768473000),
        ("published_at", None),
        ("expires_at", "9999-12-31T23:59:59-01:00"),  # after year 9999 in UTC
        ("expires_at", "0001-01-01T00:30:00+01:00"),  # long expired, and before year 1
        ("expires_at", "tomorrow"),
        ("expires_at", "2026-01-15T10:30:00"),
        ("expires_at", 0),
        ("expires_at", ""),
    ],
    ids=repr,
)
def test_timestamps_that_are_not_rfc3339_with_a_zone_are_refused(
    publisher: WirePublisher, make_client: MakeClient, field: str, value: object
) -> None:
    client = serving_v1(publisher, make_client)
    publisher.put_pointer(signed(publisher, v2_body(publisher, **{field: value})))
    refused(client, FormatError, field)


def test_a_pointer_expired_one_second_ago_is_refused(
    publisher: WirePublisher, make_client: MakeClient
) -> None:
    client = serving_v1(publisher, make_client)
    expired = format_timestamp(datetime.now(UTC) - timedelta(seconds=1))
    publisher.put_pointer(signed(publisher, v2_body(publisher, expires_at=expired)))
    error = refused(client, ExpiredError, "expired at")
    assert expired in str(error)


def test_expiry_with_an_offset_is_compared_in_utc(
    publisher: WirePublisher, make_client: MakeClient
) -> None:
    client = serving_v1(publisher, make_client)
    # Ten minutes from now, written at +14:00 and at -12:00: both are in the future.
    later = datetime.now(UTC) + timedelta(minutes=10)
    for sequence, hours in ((2, 14), (3, -12)):
        zone = timezone(timedelta(hours=hours))
        text = later.astimezone(zone).isoformat(timespec="seconds")
        body = v2_body(publisher, sequence=sequence, expires_at=text)
        publisher.put_pointer(signed(publisher, body))
        client.sync()
        assert client.prompt("welcome.message", name="Ada") == "Hello Ada, v2."
        assert client.status()["expires_at"] == text
    # And one minute ago written at +14:00 (a wall-clock reading ahead of UTC) is expired.
    earlier = (datetime.now(UTC) - timedelta(minutes=1)).astimezone(timezone(timedelta(hours=14)))
    text = earlier.isoformat(timespec="seconds")
    publisher.put_pointer(signed(publisher, v2_body(publisher, sequence=4, expires_at=text)))
    with pytest.raises(ExpiredError):
        client.sync()


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"project_id": "11111111-2222-4333-8444-555555555555"}, "project"),
        ({"project_id": ""}, "project"),
        ({"project_id": None}, "project_id"),
        ({"channel": "staging"}, "channel"),
        ({"channel": "Production"}, "channel"),
        ({"channel": "production "}, "channel"),
        ({"type": "anvil.pointer/v1"}, "type"),
        ({"type": None}, "type"),
        ({"releases": None}, "releases"),
        ({"releases": "x"}, "releases"),
    ],
    ids=repr,
)
def test_a_signed_pointer_for_something_else_is_refused(
    publisher: WirePublisher, make_client: MakeClient, changes: dict[str, Any], match: str
) -> None:
    client = serving_v1(publisher, make_client)
    publisher.put_pointer(signed(publisher, v2_body(publisher, **changes)))
    refused(client, FormatError, match)


@pytest.mark.parametrize(
    "body",
    [b"[]", b"null", b"\xff\xfe", b'{"type": "anvil.pointer/v1"', b"\xef\xbb\xbf{}", b""],
    ids=repr,
)
def test_a_signed_body_that_is_not_a_json_object_is_refused(
    publisher: WirePublisher, make_client: MakeClient, body: bytes
) -> None:
    client = serving_v1(publisher, make_client)
    publisher.put_pointer(signed(publisher, body))
    refused(client, FormatError, "pointer")


def test_a_signed_body_with_duplicate_members_is_refused(
    publisher: WirePublisher, make_client: MakeClient
) -> None:
    client = serving_v1(publisher, make_client)
    raw = canonical_json(v2_body(publisher))
    # Two parsers could read two different sequences out of these bytes.
    raw = raw[:-1] + b',"sequence":99}'
    publisher.put_pointer(signed(publisher, raw))
    refused(client, FormatError, "repeats the member 'sequence'")


# --- where the object is and what it should be ---------------------------------------------


def _object_case(publisher: WirePublisher, **object_changes: Any) -> dict[str, Any]:
    body = v2_body(publisher)
    body["releases"][0]["object"].update(object_changes)
    return body


@pytest.mark.parametrize(
    "path",
    [
        "projects/{p}/bundles/../bundles/{h}.jwe",
        "projects/{p}/bundles/%2e%2e/{h}.jwe",
        "projects/{p}/bundles/%2E%2E%2F{h}.jwe",
        "/projects/{p}/bundles/{h}.jwe",
        "/etc/passwd",
        "projects\\{p}\\bundles\\{h}.jwe",
        "projects/{p}/bundles\\{h}.jwe",
        "projects/11111111-2222-4333-8444-555555555555/bundles/{h}.jwe",
        "projects/{p}/bundles/{h}.json",  # the extension does not match jwe
        "projects/{p}/bundles/{h}.JWE",
        "projects/{p}/bundles/{H}.jwe",
        "projects/{p}/bundles/sub/{h}.jwe",
        "projects/{p}/channels/production.json",
        "projects/{p}/bundles/{h}.jwe\u0000",
        "projects/{p}/bundles/{h}.jwe?x=1",
        "https://evil.example/{h}.jwe",
        "file:///etc/passwd",
        "",
    ],
)
def test_an_object_path_outside_the_projects_bundles_is_refused(
    publisher: WirePublisher, make_client: MakeClient, path: str
) -> None:
    client = serving_v1(publisher, make_client)
    body = v2_body(publisher)
    digest = body["releases"][0]["object"]["sha256"]
    body["releases"][0]["object"]["path"] = path.format(
        p=publisher.project_id, h=digest, H=digest.upper()
    )
    publisher.put_pointer(signed(publisher, body))
    refused(client, FormatError, "path")


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"size": -1}, "size"),
        ({"size": 1.5}, "size"),
        ({"size": "10"}, "size"),
        ({"size": None}, "size"),
        ({"size": True}, "size"),
        ({"sha256": "A" * 64}, "sha256"),
        ({"sha256": "a" * 63}, "sha256"),
        ({"sha256": "g" * 64}, "sha256"),
        ({"encoding": "gzip"}, "encoding"),
        ({"encoding": None}, "encoding"),
    ],
    ids=repr,
)
def test_object_fields_of_the_wrong_shape_are_refused(
    publisher: WirePublisher, make_client: MakeClient, changes: dict[str, Any], match: str
) -> None:
    client = serving_v1(publisher, make_client)
    publisher.put_pointer(signed(publisher, _object_case(publisher, **changes)))
    refused(client, FormatError, match)


def test_an_uppercase_sha256_of_the_real_object_is_refused(
    publisher: WirePublisher, make_client: MakeClient
) -> None:
    client = serving_v1(publisher, make_client)
    body = v2_body(publisher)
    body["releases"][0]["object"]["sha256"] = body["releases"][0]["object"]["sha256"].upper()
    publisher.put_pointer(signed(publisher, body))
    refused(client, FormatError, "sha256")


def test_an_uppercase_content_sha256_is_refused(
    publisher: WirePublisher, make_client: MakeClient
) -> None:
    client = serving_v1(publisher, make_client)
    body = v2_body(publisher)
    body["releases"][0]["content_sha256"] = body["releases"][0]["content_sha256"].upper()
    publisher.put_pointer(signed(publisher, body))
    refused(client, FormatError, "content_sha256")


def test_a_signed_size_smaller_than_the_object_stops_the_download(
    publisher: WirePublisher, make_client: MakeClient
) -> None:
    client = serving_v1(publisher, make_client)
    body = v2_body(publisher)
    body["releases"][0]["object"]["size"] -= 1
    publisher.put_pointer(signed(publisher, body))
    refused(client, SizeLimitError, "limit")


def test_a_signed_size_larger_than_the_object_is_a_checksum_error(
    publisher: WirePublisher, make_client: MakeClient
) -> None:
    client = serving_v1(publisher, make_client)
    body = v2_body(publisher)
    body["releases"][0]["object"]["size"] += 1
    publisher.put_pointer(signed(publisher, body))
    from anvil_client.errors import ChecksumError

    refused(client, ChecksumError, "bytes but the signed pointer says")


def test_a_signed_size_of_zero_is_a_checksum_error(
    publisher: WirePublisher, make_client: MakeClient
) -> None:
    client = serving_v1(publisher, make_client)
    publisher.put_pointer(signed(publisher, _object_case(publisher, size=0)))
    refused(client, SizeLimitError, "limit")


# --- sequence and rollback -----------------------------------------------------------------


def served_body(client: Any) -> dict[str, Any]:
    served = json.loads(Path(client.status()["cache_dir"], "pointer.json").read_bytes())
    body: dict[str, Any] = json.loads(base64.b64decode(served["payload"]))
    return body


def test_the_same_sequence_with_another_rollout_is_a_rollback(
    publisher: WirePublisher, make_client: MakeClient
) -> None:
    client = serving_v1(publisher, make_client)
    body = served_body(client)
    body["rollout"] = {"percent": 0, "previous": body["releases"]}
    publisher.put_pointer(signed(publisher, body))
    refused(client, RollbackError, "already accepted")


def test_the_same_pointer_re_signed_with_a_later_expiry_is_accepted(
    publisher: WirePublisher, make_client: MakeClient
) -> None:
    client = serving_v1(publisher, make_client)
    body = served_body(client)
    body["expires_at"] = format_timestamp(datetime.now(UTC) + timedelta(days=1))
    publisher.put_pointer(signed(publisher, body))
    client.sync()
    assert client.status()["expires_at"] == body["expires_at"]
    assert client.status()["version"] == "1.0.0"


@pytest.mark.parametrize(
    ("rollout", "match"),
    [
        ({"percent": 101, "previous": "SAME"}, "percent"),
        ({"percent": -1, "previous": "SAME"}, "percent"),
        ({"percent": 50.0, "previous": "SAME"}, "percent"),
        ({"percent": True, "previous": "SAME"}, "percent"),
        ({"percent": 50}, "previous"),
        ({"percent": 50, "previous": None}, "previous"),
        ({"percent": 50, "previous": []}, "previous"),
        ({"percent": 50, "previous": {"x": 1}}, "previous"),
        ({"previous": "SAME"}, "percent"),
        ("50%", "rollout"),
        ([50], "rollout"),
    ],
    ids=repr,
)
def test_a_malformed_rollout_is_refused(
    publisher: WirePublisher, make_client: MakeClient, rollout: Any, match: str
) -> None:
    client = serving_v1(publisher, make_client)
    body = v2_body(publisher)
    if isinstance(rollout, dict) and rollout.get("previous") == "SAME":
        rollout = dict(rollout, previous=body["releases"])
    body["rollout"] = rollout
    publisher.put_pointer(signed(publisher, body))
    refused(client, FormatError, match)


@pytest.mark.parametrize("percent", [0, 100])
def test_a_rollout_whose_previous_is_outside_the_project_is_refused_for_everyone(
    publisher: WirePublisher, make_client: MakeClient, percent: int
) -> None:
    client = serving_v1(publisher, make_client)
    body = v2_body(publisher)
    previous = json.loads(json.dumps(body["releases"][0]))
    previous["object"]["path"] = "projects/other/bundles/" + previous["object"]["sha256"] + ".jwe"
    body["rollout"] = {"percent": percent, "previous": [previous]}
    publisher.put_pointer(signed(publisher, body))
    refused(client, FormatError, "path")


@pytest.mark.parametrize(
    "changes",
    [
        {"project_id": "p" * 30_000},
        {"channel": "c" * 30_000},
        {"type": "t" * 30_000},
        {"published_at": "2" * 30_000},
        {"sequence": "9" * 30_000},
        {"releases": [{"version": "1" * 30_000}]},
        {"rollout": {"percent": 5, "previous": [{"x": "y" * 30_000}]}},
    ],
    ids=["project", "channel", "type", "published", "sequence", "version", "rollout"],
)
def test_huge_values_in_a_signed_pointer_give_short_errors(
    publisher: WirePublisher, make_client: MakeClient, changes: dict[str, Any]
) -> None:
    client = serving_v1(publisher, make_client)
    publisher.put_pointer(signed(publisher, v2_body(publisher, **changes)))
    refused(client, FormatError, "")
