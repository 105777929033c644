"""Fixtures for the publisher: keys, tokens, prompt sets, stores, and a client-side reader."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from anvil_client.stores import FileStore, ObjectStore
from anvil_client.wire import (
    AccessToken,
    Bundle,
    Pointer,
    TrustedKey,
    compile_prompt,
    decrypt_bundle,
    generate_private_key,
    parse_bundle,
    public_key_text,
    select_release,
    sha256_hex,
    verify_envelope,
)

PROMPTS: dict[str, dict[str, Any]] = {
    "welcome.message": {
        "template": "Welcome {{ name }}! As {{ role }}, you have {{ access_level }} access.",
        "metadata": {"description": "greeting", "temperature": 0.2},
    },
    "greeting.fancy": {
        "template": "{% if vip %}Dear {{ name | upper }},{% else %}Hi {{ name }},{% endif %}\n"
        "Résumé: {{ items | join(', ') }}\n",
    },
    "support.chat": {
        "messages": [
            {"role": "system", "template": "You help {{ product }} users."},
            {"role": "user", "template": "{{ question }}"},
        ],
        "metadata": {"model": "any"},
    },
}


@pytest.fixture
def project_id() -> str:
    return str(uuid.uuid4())


@pytest.fixture(scope="session")
def signing_key() -> Ed25519PrivateKey:
    return generate_private_key()


@pytest.fixture(scope="session")
def other_key() -> Ed25519PrivateKey:
    return generate_private_key()


@pytest.fixture(scope="session")
def token_a() -> AccessToken:
    return AccessToken.generate()


@pytest.fixture(scope="session")
def token_b() -> AccessToken:
    return AccessToken.generate()


@pytest.fixture
def prompts() -> dict[str, dict[str, Any]]:
    return {key: dict(value) for key, value in PROMPTS.items()}


@pytest.fixture
def file_store(tmp_path: Path) -> FileStore:
    return FileStore(tmp_path / "store")


@dataclass
class Applied:
    """What a conforming client would serve after one poll."""

    pointer: Pointer
    bundle: Bundle
    data: bytes

    def render(self, prompt_id: str, **variables: Any) -> str:
        return compile_prompt(prompt_id, self.bundle.prompts[prompt_id]).render(variables)


def client_apply(
    store: ObjectStore,
    project_id: str,
    channel: str,
    trusted: Ed25519PrivateKey | str,
    token: AccessToken | None,
    instance_id: str = "00000000-0000-4000-8000-000000000000",
) -> Applied:
    """DESIGN §7, one poll, with the wire functions only (the reader the client must be)."""
    key = TrustedKey.parse(trusted if isinstance(trusted, str) else public_text(trusted))
    envelope = store.get(f"projects/{project_id}/channels/{channel}.json", max_size=65536).data
    pointer = Pointer.parse(verify_envelope(envelope, [key]))
    assert (pointer.project_id, pointer.channel) == (project_id, channel)
    release = select_release(pointer, instance_id)
    release.object.check_location(project_id)
    stored = store.get(release.object.path, max_size=release.object.size).data
    assert len(stored) == release.object.size
    assert sha256_hex(stored) == release.object.sha256
    if release.object.encoding == "jwe":
        assert token is not None
        data = decrypt_bundle(stored, token.token_id, token.kek(), max_plaintext=64 << 20)
    else:
        data = stored
    assert sha256_hex(data) == release.content_sha256
    bundle = parse_bundle(data, content_sha256=release.content_sha256)
    assert (bundle.project_id, bundle.version) == (project_id, release.version)
    return Applied(pointer, bundle, data)


def public_text(key: Ed25519PrivateKey) -> str:
    return public_key_text(key.public_key())
