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
    Release,
    TrustedKey,
    check_bundle_matches,
    check_disjoint,
    compile_prompt,
    fetch_object,
    generate_private_key,
    open_object,
    parse_bundle,
    public_key_text,
    select_releases,
    verify_pointer,
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
    """What a conforming client would serve after one poll: the union of the entries."""

    pointer: Pointer
    releases: list[Release]
    bundles: dict[str, Bundle]
    plaintexts: dict[str, bytes]

    @property
    def bundle(self) -> Bundle:
        """The one entry's bundle (for channels that serve one prompt set)."""
        assert len(self.bundles) == 1, list(self.bundles)
        return next(iter(self.bundles.values()))

    @property
    def data(self) -> bytes:
        assert len(self.plaintexts) == 1, list(self.plaintexts)
        return next(iter(self.plaintexts.values()))

    @property
    def versions(self) -> dict[str, str]:
        """``prompt_set_id -> version`` of every entry served."""
        return {r.prompt_set_id: r.version for r in self.releases}

    def render(self, prompt_id: str, **variables: Any) -> str:
        for bundle in self.bundles.values():
            if prompt_id in bundle.prompts:
                return compile_prompt(prompt_id, bundle.prompts[prompt_id]).render(variables)
        raise KeyError(prompt_id)


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
    pointer = verify_pointer(envelope, [key], project_id=project_id, channel=channel)
    releases = select_releases(pointer, instance_id)
    bundles: dict[str, Bundle] = {}
    plaintexts: dict[str, bytes] = {}
    for release in releases:
        stored = fetch_object(store, release)
        data = open_object(release, stored, token)
        bundle = parse_bundle(data, content_sha256=release.content_sha256)
        check_bundle_matches(bundle, project_id, release)
        bundles[release.prompt_set_id] = bundle
        plaintexts[release.prompt_set_id] = data
    check_disjoint([(r, bundles[r.prompt_set_id]) for r in releases])
    return Applied(pointer, releases, bundles, plaintexts)


def public_text(key: Ed25519PrivateKey) -> str:
    return public_key_text(key.public_key())
