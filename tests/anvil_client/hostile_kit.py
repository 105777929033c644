"""Pieces for the hostile tests: raw envelopes, a client serving v1, and the "refused" check.

Everything an attacker (or a broken publisher) could put in a store is built here byte by
byte, bypassing the models, so that the client's parsers see exactly what the test wrote.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from anvil_client import AnvilClient
from anvil_client.errors import AnvilError
from anvil_client.wire import POINTER_PAYLOAD_TYPE, canonical_json, key_id, pae
from tests.anvil_client.wire_publisher import WirePublisher

MakeClient = Callable[..., AnvilClient]
V1 = {"welcome.message": "Welcome {{ name }}!"}
V2 = {"welcome.message": "Hello {{ name }}, v2."}
UNEXPECTED = "unexpected error in the background poller"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def signature(
    body: bytes,
    key: Ed25519PrivateKey,
    *,
    payload_type: str = POINTER_PAYLOAD_TYPE,
    keyid: object = None,
) -> dict[str, Any]:
    """One DSSE signature entry over ``body`` (``keyid`` defaults to the key's id)."""
    entry: dict[str, Any] = {"sig": b64(key.sign(pae(payload_type, body)))}
    entry["keyid"] = key_id(key.public_key()) if keyid is None else keyid
    return entry


def envelope(
    body: bytes,
    signatures: list[Any] | Any,
    *,
    payload_type: Any = POINTER_PAYLOAD_TYPE,
    payload: Any = None,
) -> bytes:
    """An envelope around raw ``body`` bytes with the given signature entries, as JSON."""
    return json.dumps(
        {
            "payload": b64(body) if payload is None else payload,
            "payloadType": payload_type,
            "signatures": signatures,
        }
    ).encode()


def signed(publisher: WirePublisher, body: dict[str, Any] | bytes) -> bytes:
    """A correctly signed envelope over ``body`` (a dict is serialized canonically)."""
    raw = body if isinstance(body, bytes) else canonical_json(body)
    return envelope(raw, [signature(raw, publisher.key)])


def serving_v1(publisher: WirePublisher, make_client: MakeClient, **settings: Any) -> AnvilClient:
    publisher.publish(V1, version="1.0.0")
    client = make_client(**settings)
    client.sync()
    assert client.prompt("welcome.message", name="Ada") == "Welcome Ada!"
    return client


def check_sentence(message: str) -> None:
    """An error a user reads: one line, no traceback, not empty, not a novel."""
    assert message.strip(), "empty error message"
    assert "\n" not in message, f"multi-line error message: {message!r}"
    assert "Traceback" not in message
    assert len(message) < 600, f"error message too long ({len(message)} chars)"


def refused(
    client: AnvilClient, error: type[AnvilError], match: str, *, version: str | None = "1.0.0"
) -> AnvilError:
    """``client.sync()`` raises exactly ``error`` (one sentence matching ``match``), the
    last-known-good ``version`` is still served, and ``status()`` records the error."""
    with pytest.raises(AnvilError) as caught:
        client.sync()
    assert caught.type is error, (
        f"expected {error.__name__}, got {caught.type.__name__}: {caught.value}"
    )
    message = str(caught.value)
    check_sentence(message)
    assert match.lower() in message.lower(), f"{match!r} not in {message!r}"
    status = client.status()
    assert status["last_error"] == message
    assert status["version"] == version
    if version == "1.0.0":
        assert client.prompt("welcome.message", name="Ada") == "Welcome Ada!"
    return caught.value


def no_poller_crash(caplog: pytest.LogCaptureFixture) -> None:
    """The background loop logs this only when something leaked past the AnvilError net."""
    leaks = [r for r in caplog.records if UNEXPECTED in r.getMessage()]
    assert not leaks, leaks[0].exc_text or leaks[0].getMessage()


def capture(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="anvil_client")
