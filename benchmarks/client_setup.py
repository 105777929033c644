"""Shared set-up of the client benchmarks: publish a bundle with the wire functions only.

Not a benchmark itself (``make bench`` runs ``bench_*.py``); imported by bench_client_*.py.
"""

from __future__ import annotations

import sys
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from anvil_client.stores import ObjectStore  # noqa: E402
from anvil_client.wire import (  # noqa: E402
    AccessToken,
    bundle_key,
    canonical_json,
    encrypt_bundle,
    generate_private_key,
    pointer_key,
    public_key_text,
    sha256_hex,
    sign_envelope,
    spec_variables,
)

PROJECT_ID = "3c9d1f0a-2b4e-4c6d-8e0f-1a2b3c4d5e6f"


def bundle_bytes(prompts: dict[str, str], version: str = "1.0.0") -> bytes:
    snapshot: dict[str, Any] = {}
    for prompt_id, template in prompts.items():
        snapshot[prompt_id] = {
            "template": template,
            "variables": spec_variables(template, None),
            "metadata": {"description": f"The {prompt_id} prompt", "model": "gpt-4o"},
        }
    return canonical_json(
        {
            "type": "anvil.bundle/v1",
            "version": version,
            "project_id": PROJECT_ID,
            "prompt_set_id": str(uuid.uuid5(uuid.NAMESPACE_URL, "bench")),
            "created_at": "2026-01-15T10:30:00Z",
            "snapshot": snapshot,
        }
    )


class BenchPublisher:
    """Publishes one channel of PROJECT_ID into ``store``; ``settings`` builds a client."""

    def __init__(self, store: ObjectStore, channel: str = "production") -> None:
        self.store = store
        self.channel = channel
        self.key = generate_private_key()
        self.token = AccessToken.generate()
        self.sequence = 0

    def publish(self, plaintext: bytes, version: str = "1.0.0") -> bytes:
        data = encrypt_bundle(plaintext, {self.token.token_id: self.token.kek()})
        digest = sha256_hex(data)
        self.store.put(bundle_key(PROJECT_ID, digest, "jwe"), data)
        self.sequence += 1
        body = {
            "type": "anvil.pointer/v2",
            "project_id": PROJECT_ID,
            "channel": self.channel,
            "sequence": self.sequence,
            "published_at": "2026-01-15T10:30:00Z",
            "expires_at": None,
            "releases": [
                {
                    "prompt_set_id": str(uuid.uuid5(uuid.NAMESPACE_URL, "bench")),
                    "name": "Bench",
                    "version": version,
                    "content_sha256": sha256_hex(plaintext),
                    "object": {
                        "path": bundle_key(PROJECT_ID, digest, "jwe"),
                        "sha256": digest,
                        "size": len(data),
                        "encoding": "jwe",
                    },
                }
            ],
            "rollout": None,
        }
        envelope = sign_envelope(canonical_json(body), self.key)
        self.store.put(pointer_key(PROJECT_ID, self.channel), envelope)
        return envelope

    def settings(self, cache_dir: Path, store: Any) -> dict[str, Any]:
        return {
            "store": store,
            "project_id": PROJECT_ID,
            "channel": self.channel,
            "access_token": self.token.text,
            "trusted_keys": [public_key_text(self.key.public_key())],
            "cache_dir": cache_dir,
        }
