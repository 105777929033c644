"""Property-based hostility: whatever the bytes or the signed JSON, only AnvilError comes out.

The pure core (DESIGN §7's checks), the JWE reader, the bootstrap reader and the cache-state
parser are fed mutated and arbitrary inputs; any other exception type (KeyError, TypeError,
UnicodeError, RecursionError, OverflowError, ValueError...) is a bug.
"""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from anvil_client._cache import CacheState
from anvil_client._verify import Verifier
from anvil_client.errors import AnvilError
from anvil_client.stores import FileStore
from anvil_client.wire import (
    AccessToken,
    Pointer,
    TrustedKey,
    canonical_json,
    decrypt_bundle,
    parse_bundle,
)
from tests.anvil_client.hostile_kit import V1, signed
from tests.anvil_client.wire_publisher import Published, WirePublisher

FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(st.characters(exclude_categories=()), max_size=20),  # lone surrogates too
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[WirePublisher, Published, Verifier]:
    publisher = WirePublisher(FileStore(tmp_path_factory.mktemp("fuzz-store")))
    published = publisher.publish(V1, version="1.0.0")
    token: AccessToken = publisher.tokens[0]
    verifier = Verifier(
        project_id=publisher.project_id,
        channel=publisher.channel,
        trusted_keys=[TrustedKey.parse(publisher.trusted_key)],
        token=token,
        max_bundle_size=1024 * 1024,
    )
    return publisher, published, verifier


def only_anvil_errors(action: Any) -> None:
    try:
        action()
    except AnvilError as e:
        message = str(e)
        assert message and "\n" not in message, repr(message)


def paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in a JSON document a value could be replaced."""
    found = [prefix]
    if isinstance(doc, dict):
        for key, value in doc.items():
            found += paths(value, (*prefix, key))
    elif isinstance(doc, list):
        for index, value in enumerate(doc):
            found += paths(value, (*prefix, index))
    return found


def replaced(doc: Any, where: tuple[Any, ...], value: Any) -> Any:
    if not where:
        return value
    out = copy.deepcopy(doc)
    target = out
    for step in where[:-1]:
        target = target[step]
    target[where[-1]] = value
    return out


def accept(verifier: Verifier, envelope: bytes) -> None:
    verifier.accept_pointer(
        envelope,
        applied=None,
        floor=0,
        instance_id="00000000-0000-4000-8000-000000000000",
        now=datetime.now(UTC),
    )


@FUZZ
@given(data=st.data())
def test_any_value_anywhere_in_a_signed_pointer_body(
    world: tuple[WirePublisher, Published, Verifier], data: st.DataObject
) -> None:
    publisher, published, verifier = world
    body = published.body
    where = data.draw(st.sampled_from(paths(body)))
    value = data.draw(json_values)
    hostile = replaced(body, where, value)
    try:
        raw = canonical_json(hostile)
    except ValueError:
        return  # not representable as JSON (an infinite float): nothing to sign
    only_anvil_errors(lambda: accept(verifier, signed(publisher, raw)))


@FUZZ
@given(data=st.data())
def test_any_value_anywhere_in_the_envelope(
    world: tuple[WirePublisher, Published, Verifier], data: st.DataObject
) -> None:
    _, published, verifier = world
    envelope = json.loads(published.envelope)
    where = data.draw(st.sampled_from(paths(envelope)))
    hostile = replaced(envelope, where, data.draw(json_values))
    only_anvil_errors(lambda: accept(verifier, json.dumps(hostile).encode()))


@FUZZ
@given(position=st.integers(min_value=0), byte=st.integers(0, 255), cut=st.booleans())
def test_any_byte_of_the_envelope_flipped_or_cut(
    world: tuple[WirePublisher, Published, Verifier], position: int, byte: int, cut: bool
) -> None:
    _, published, verifier = world
    data = bytearray(published.envelope)
    index = position % len(data)
    mutated = (
        bytes(data[:index]) if cut else bytes(data[:index] + bytes([byte]) + data[index + 1 :])
    )
    only_anvil_errors(lambda: accept(verifier, mutated))


@FUZZ
@given(data=st.data())
def test_any_value_anywhere_in_the_jwe(
    world: tuple[WirePublisher, Published, Verifier], data: st.DataObject
) -> None:
    publisher, published, _ = world
    stored = publisher.store.get(published.release["object"]["path"]).data
    jwe = json.loads(stored)
    where = data.draw(st.sampled_from(paths(jwe)))
    hostile = json.dumps(replaced(jwe, where, data.draw(json_values))).encode()
    token = publisher.tokens[0]
    only_anvil_errors(
        lambda: decrypt_bundle(hostile, token.token_id, token.kek(), max_plaintext=1024 * 1024)
    )


@FUZZ
@given(data=st.data())
def test_any_value_anywhere_in_a_plaintext_bundle(
    world: tuple[WirePublisher, Published, Verifier], data: st.DataObject
) -> None:
    _, published, verifier = world
    bundle = json.loads(published.plaintext)
    where = data.draw(st.sampled_from(paths(bundle)))
    try:
        hostile = canonical_json(replaced(bundle, where, data.draw(json_values)))
    except ValueError:
        return
    pointer = Pointer.model_validate(published.body)

    def check() -> None:
        verifier.verify_bundle(hostile, pointer, pointer.releases[0])
        parse_bundle(hostile, content_sha256="0" * 64)

    only_anvil_errors(check)


@FUZZ
@given(data=st.data())
def test_any_value_anywhere_in_a_bootstrap_file(
    world: tuple[WirePublisher, Published, Verifier], data: st.DataObject
) -> None:
    _, published, verifier = world
    doc = {
        "pointer": json.loads(published.envelope),
        "bundles": {published.release["content_sha256"]: published.plaintext.decode()},
    }
    where = data.draw(st.sampled_from(paths(doc)))
    hostile = replaced(doc, where, data.draw(json_values))
    raw = json.dumps(hostile, ensure_ascii=data.draw(st.booleans())).encode(
        "utf-8", "surrogatepass"
    )
    only_anvil_errors(lambda: verifier.verify_bootstrap(raw, "i"))


@FUZZ
@given(raw=st.binary(max_size=300) | json_values.map(lambda v: json.dumps(v).encode()))
def test_any_state_file_parses_or_is_ignored(raw: bytes) -> None:
    state = CacheState.from_bytes(raw)
    assert state is None or isinstance(state.sequence, int)
    if state is not None:
        json.loads(state.to_bytes())
