"""Revoking an application's ACCESS_TOKEN, as the FORGE does it (README, *Tokens → Revoke…*).

The FORGE re-encrypts every served entry for the remaining tokens: same content, new objects,
new sequence. The client has nothing to decrypt (the content digest is unchanged), so it keeps
serving; the FORGE refuses its heartbeats (401) and ``status()`` says so. Only a release with
new content, encrypted without its token, shows a decryption error — and it still keeps serving
what it has.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from anvil_client import AnvilClient
from anvil_client.wire import AccessToken
from tests.anvil_client.fake_forge import FakeForge
from tests.anvil_client.spy_stores import SpyStore, wait_for
from tests.anvil_client.wire_publisher import WirePublisher, make_bundle

REFUSED = "the FORGE refused this ACCESS_TOKEN (401: revoked or unknown)"


@pytest.fixture
def forge() -> Iterator[FakeForge]:
    fake = FakeForge()
    try:
        yield fake
    finally:
        fake.close()


def test_a_revoked_token_keeps_serving_and_status_says_it_was_refused(
    publisher: WirePublisher,
    make_client: Callable[..., AnvilClient],
    store: SpyStore,
    forge: FakeForge,
) -> None:
    app_token, other = publisher.tokens[0], AccessToken.generate()
    publisher.tokens = [app_token, other]
    publisher.publish({"welcome.message": "Hi {{ name }}"}, version="1.0.0")
    client = make_client(start=True, poll_interval=0.05, forge_url=forge.url)
    wait_for(lambda: client.status()["version"] == "1.0.0")
    wait_for(lambda: client.status()["last_heartbeat"] is not None)
    assert client.status()["heartbeat_error"] is None

    # Revoke: the FORGE refuses the token and re-encrypts the same content for `other` only.
    forge.answer = 401
    plaintext = make_bundle({"welcome.message": "Hi {{ name }}"}, version="1.0.0")
    entry = publisher.put_object(plaintext, tokens=[other], version="1.0.0")
    publisher.entries[publisher.prompt_set_id] = entry
    publisher.sequence += 1
    publisher.put_pointer(publisher.sign(publisher.pointer_body(publisher.releases(), sequence=2)))

    wait_for(lambda: client.status()["sequence"] == 2)
    assert not [c for c in store.calls if c.key == entry["object"]["path"]]  # no download
    assert client.prompt("welcome.message", name="Ada") == "Hi Ada"
    wait_for(lambda: client.status()["heartbeat_error"] is not None)
    status = client.status()
    assert status["heartbeat_error"] == REFUSED
    assert status["last_error"] is None  # nothing it serves is wrong: the store was read fine
    assert forge.heartbeats[-1]["headers"]["Authorization"] == f"Bearer {app_token.text}"

    # New content encrypted without the app's token: it cannot be read; the old stays served.
    publisher.publish({"welcome.message": "Hello {{ name }}"}, version="1.1.0", tokens=[other])
    wait_for(lambda: client.status()["last_error"] is not None)
    status = client.status()
    assert f"this ACCESS_TOKEN ({app_token.token_id}) is not a recipient" in (
        status["last_error"] or ""
    )
    assert status["version"] == "1.0.0" and status["sequence"] == 2
    assert client.prompt("welcome.message", name="Ada") == "Hi Ada"
    assert status["heartbeat_error"] == REFUSED
