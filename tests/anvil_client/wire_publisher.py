"""A minimal publisher built from the wire functions only, for the client's tests.

The real publisher package is written in parallel; these tests must not depend on it, and the
hostile cases need pieces a correct publisher would never produce (bad signatures, old
sequences, foreign projects). Everything here is test code.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from anvil_client.stores import ObjectStore
from anvil_client.wire import (
    AccessToken,
    canonical_json,
    encrypt_bundle,
    format_timestamp,
    generate_private_key,
    public_key_text,
    sha256_hex,
    sign_envelope,
    spec_variables,
)

PROJECT_ID = "0b7f4c2e-1d3a-4e5f-8a9b-0c1d2e3f4a5b"
PROMPT_SET_ID = "5e6f7a8b-9c0d-4e1f-a2b3-c4d5e6f7a8b9"
PROMPT_SET_NAME = "Support bot"
#: A second prompt set, sorted after PROMPT_SET_ID.
OTHER_SET_ID = "9f8e7d6c-5b4a-4392-8170-6a5b4c3d2e1f"
OTHER_SET_NAME = "Checkout helper"


def prompt_entry(value: Any) -> dict[str, Any]:
    """``"text"`` → a text prompt; ``[(role, text), ...]`` → a chat prompt; dicts pass through."""
    if isinstance(value, dict):
        return value
    if isinstance(value, str):
        return {"template": value, "variables": spec_variables(value, None), "metadata": {}}
    messages = [{"role": role, "template": text} for role, text in value]
    return {
        "messages": messages,
        "variables": spec_variables(None, [(r, t) for r, t in value]),
        "metadata": {},
    }


def make_bundle(
    prompts: dict[str, Any],
    *,
    version: str,
    project_id: str = PROJECT_ID,
    prompt_set_id: str = PROMPT_SET_ID,
) -> bytes:
    return canonical_json(
        {
            "type": "anvil.bundle/v1",
            "version": version,
            "project_id": project_id,
            "prompt_set_id": prompt_set_id,
            "created_at": "2026-01-15T10:30:00Z",
            "snapshot": {pid: prompt_entry(v) for pid, v in prompts.items()},
        }
    )


@dataclass
class Published:
    envelope: bytes
    body: dict[str, Any]
    release: dict[str, Any]  # the entry of the set just published
    plaintext: bytes

    @property
    def sequence(self) -> int:
        return int(self.body["sequence"])

    @property
    def releases(self) -> list[dict[str, Any]]:
        return list(self.body["releases"])


def as_list(entries: dict[str, Any] | list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry (a dict) becomes a one-entry list; a list is kept as given (even unsorted)."""
    return [entries] if isinstance(entries, dict) else list(entries)


@dataclass
class WirePublisher:
    """Publishes bundles and signed pointers into an ObjectStore, like DESIGN §6 (no CAS)."""

    store: ObjectStore
    project_id: str = PROJECT_ID
    channel: str = "production"
    key: Ed25519PrivateKey = field(default_factory=generate_private_key)
    tokens: list[AccessToken] = field(default_factory=lambda: [AccessToken.generate()])
    sequence: int = 0
    prompt_set_id: str = PROMPT_SET_ID
    name: str = PROMPT_SET_NAME
    #: The entries carried from publish to publish, by prompt set id (DESIGN §4).
    entries: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def trusted_key(self) -> str:
        return public_key_text(self.key.public_key())

    @property
    def token(self) -> str:
        return self.tokens[0].text

    @property
    def pointer_key(self) -> str:
        return f"projects/{self.project_id}/channels/{self.channel}.json"

    def put_object(
        self,
        plaintext: bytes,
        *,
        encoding: str = "jwe",
        tokens: list[AccessToken] | None = None,
        version: str,
        content_sha256: str | None = None,
        stored: bytes | None = None,
        prompt_set_id: str | None = None,
        name: str | None = None,
    ) -> dict[str, Any]:
        """Store a bundle object and return its entry (``stored`` overrides the bytes)."""
        if encoding == "jwe":
            recipients = {t.token_id: t.kek() for t in (tokens or self.tokens)}
            data = encrypt_bundle(plaintext, recipients)
        else:
            data = plaintext
        digest = sha256_hex(data)
        suffix = "jwe" if encoding == "jwe" else "json"
        path = f"projects/{self.project_id}/bundles/{digest}.{suffix}"
        self.store.put(path, stored if stored is not None else data)
        return {
            "version": version,
            "prompt_set_id": prompt_set_id or self.prompt_set_id,
            "name": self.name if name is None else name,
            "content_sha256": content_sha256 or sha256_hex(plaintext),
            "object": {"path": path, "sha256": digest, "size": len(data), "encoding": encoding},
        }

    def pointer_body(
        self,
        releases: dict[str, Any] | list[dict[str, Any]],
        *,
        sequence: int,
        expires_at: datetime | None = None,
        rollout: dict[str, Any] | None = None,
        project_id: str | None = None,
        channel: str | None = None,
    ) -> dict[str, Any]:
        """A v2 body; one entry may be given as a dict, ``rollout["previous"]`` too; an entry
        without a ``name`` gets the publisher's."""
        if rollout is not None and isinstance(rollout.get("previous"), dict):
            rollout = {**rollout, "previous": [rollout["previous"]]}
        return {
            "type": "anvil.pointer/v2",
            "project_id": project_id or self.project_id,
            "channel": channel or self.channel,
            "sequence": sequence,
            "published_at": format_timestamp(datetime.now(UTC)),
            "expires_at": format_timestamp(expires_at) if expires_at else None,
            "releases": [{"name": self.name, **entry} for entry in as_list(releases)],
            "rollout": rollout,
        }

    def sign(self, body: dict[str, Any], key: Ed25519PrivateKey | None = None) -> bytes:
        return sign_envelope(canonical_json(body), key or self.key)

    def put_pointer(self, envelope: bytes) -> None:
        """Replace the channel's pointer (no history copy: the client never reads it)."""
        self.store.put(self.pointer_key, envelope)

    def publish(
        self,
        prompts: dict[str, Any],
        *,
        version: str,
        encoding: str = "jwe",
        tokens: list[AccessToken] | None = None,
        sequence: int | None = None,
        expires_in: timedelta | None = None,
        rollout: dict[str, Any] | None = None,
        prompt_set_id: str | None = None,
        name: str | None = None,
    ) -> Published:
        """Build, encrypt, upload, sign and point: the happy path of DESIGN §6.

        The set's entry is replaced (or added); every other set's entry is carried over.
        """
        set_id = prompt_set_id or self.prompt_set_id
        plaintext = make_bundle(
            prompts, version=version, project_id=self.project_id, prompt_set_id=set_id
        )
        release = self.put_object(
            plaintext,
            encoding=encoding,
            tokens=tokens,
            version=version,
            prompt_set_id=set_id,
            name=name,
        )
        self.entries[set_id] = release
        self.sequence = sequence if sequence is not None else self.sequence + 1
        expires_at = datetime.now(UTC) + expires_in if expires_in is not None else None
        body = self.pointer_body(
            self.releases(), sequence=self.sequence, expires_at=expires_at, rollout=rollout
        )
        envelope = self.sign(body)
        self.put_pointer(envelope)
        return Published(envelope=envelope, body=body, release=release, plaintext=plaintext)

    def releases(self) -> list[dict[str, Any]]:
        """The carried entries, sorted by prompt set id (as a pointer lists them)."""
        return [self.entries[k] for k in sorted(self.entries)]

    def remove(self, prompt_set_id: str) -> Published:
        """Drop a set's entry and publish the rest under the next sequence."""
        del self.entries[prompt_set_id]
        self.sequence += 1
        body = self.pointer_body(self.releases(), sequence=self.sequence)
        envelope = self.sign(body)
        self.put_pointer(envelope)
        return Published(envelope=envelope, body=body, release={}, plaintext=b"")

    def client_settings(self, cache_dir: Any, **extra: Any) -> dict[str, Any]:
        settings: dict[str, Any] = {
            "store": self.store,
            "project_id": self.project_id,
            "channel": self.channel,
            "access_token": self.token,
            "trusted_keys": [self.trusted_key],
            "cache_dir": cache_dir,
        }
        settings.update(extra)
        return settings


def new_project_id() -> str:
    return str(uuid.uuid4())
