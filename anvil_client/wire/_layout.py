"""Where objects live in a store and how large they may be (DESIGN §2, §4, §7).

    >>> from anvil_client.wire import pointer_key
    >>> pointer_key("p", "production")
    'projects/p/channels/production.json'

The one place for object paths and size caps: the client, the publisher, ``inspect`` and the
FORGE all import them from here.
"""

from __future__ import annotations

import re

#: A pointer envelope is small; anything larger is refused before parsing (DESIGN §7).
POINTER_MAX_SIZE = 64 * 1024
#: The largest bundle (plaintext, and stored object) read or written by default (DESIGN §6-§7).
BUNDLE_MAX_SIZE = 64 * 1024 * 1024
#: At most this many entries (prompt sets) in one pointer's ``releases`` (DESIGN §4).
RELEASES_MAX = 100
#: The largest heartbeat body a client sends and the FORGE reads (DESIGN §7).
HEARTBEAT_MAX_SIZE = 16 * 1024

HISTORY_NAME_RE = re.compile(r"^(\d{12})\.json\Z")
_OBJECT_NAME_RE = re.compile(r"^[0-9a-f]{64}\.(jwe|json)\Z")


def pointer_key(project_id: str, channel: str) -> str:
    """``projects/{project_id}/channels/{channel}.json``."""
    return f"projects/{project_id}/channels/{channel}.json"


def history_prefix(project_id: str, channel: str) -> str:
    """``projects/{project_id}/channels/{channel}/history/``."""
    return f"projects/{project_id}/channels/{channel}/history/"


def history_key(project_id: str, channel: str, sequence: int) -> str:
    """``projects/{project_id}/channels/{channel}/history/{sequence:012d}.json``."""
    return f"{history_prefix(project_id, channel)}{sequence:012d}.json"


def bundles_prefix(project_id: str) -> str:
    """``projects/{project_id}/bundles/``."""
    return f"projects/{project_id}/bundles/"


def bundle_key(project_id: str, object_sha256: str, encoding: str) -> str:
    """``projects/{project_id}/bundles/{object_sha256}.{encoding}``."""
    return f"{bundles_prefix(project_id)}{object_sha256}.{encoding}"


def is_bundle_name(name: str) -> bool:
    """Whether ``name`` is ``<64 hex>.jwe`` or ``<64 hex>.json``."""
    return _OBJECT_NAME_RE.match(name) is not None
