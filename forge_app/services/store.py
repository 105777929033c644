"""The FORGE's signing key and object store, the publisher that writes to it, and the
sentences its failures become.

One part of the publishing services; :mod:`forge_app.services.publishing` gathers their API.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import unquote, urlsplit

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flask import current_app
from sqlalchemy import select

from anvil_client.errors import (
    AnvilError,
    PreconditionFailed,
    SignatureError,
    StoreError,
    StoreUnavailable,
    ValidationError,
)
from anvil_client.stores import ObjectStore, open_store
from anvil_client.wire import (
    key_id,
    load_private_key,
    load_private_key_file,
    public_key_text,
)
from forge_app.errors import ForgeError, Kind
from forge_app.extensions import db
from forge_app.models import (
    Project,
)
from forge_app.models.distribution import (
    Publication,
)
from publisher import (
    PromptIdClash,
    Publisher,
)

# --------------------------------------------------------------------------- key and store


def forge_signing_key() -> Ed25519PrivateKey:
    """The FORGE's Ed25519 signing key (``FORGE_SIGNING_KEY``: PEM text or a PEM file path).

    Raises:
        ConfigError: if the key cannot be loaded.
    """
    cached = current_app.extensions.get("forge_signing_key")
    if isinstance(cached, Ed25519PrivateKey):
        return cached
    value = str(current_app.config["FORGE_SIGNING_KEY"])
    if value.lstrip().startswith("-----BEGIN"):
        key = load_private_key(value)
    else:
        key = load_private_key_file(value)
    current_app.extensions["forge_signing_key"] = key
    return key


def forge_public_key_text() -> str:
    """The public key clients trust, as ``ed25519:<base64>``."""
    return public_key_text(forge_signing_key().public_key())


def forge_key_id() -> str:
    """The key id (hex SHA-256 of the raw public key) of the FORGE's signing key."""
    return key_id(forge_signing_key().public_key())


def _store_url() -> str:
    return str(current_app.config["FORGE_STORE_URL"])


def forge_store() -> ObjectStore:
    """A new store client for ``FORGE_STORE_URL``; the caller closes it.

    Raises:
        ConfigError: if the URL is not a store URL.
    """
    return open_store(_store_url())


def store_root() -> Path | None:
    """The local directory of a ``file://`` store (served at ``/store/``), else None."""
    parts = urlsplit(_store_url())
    if parts.scheme != "file":
        return None
    return Path(unquote(parts.path)).resolve()


@contextmanager
def _publisher(project: Project, action: str = "changed") -> Iterator[Publisher]:
    """A publisher on the FORGE's store. ``action`` words the error if the store is gone.

    Raises:
        ForgeError: for a misconfigured store or key, or a local store directory that is
            gone (a file store reads a missing directory as an empty store, which would make
            every channel look unpublished).
    """
    problem = _local_store_problem(project)
    if problem is not None:
        raise _explain(StoreUnavailable(problem), action)
    try:
        pub = Publisher(_store_url(), project_id=str(project.id), signing_key=forge_signing_key())
    except AnvilError as e:
        raise ForgeError(
            f"The FORGE's store or signing key is misconfigured: {e}", kind=Kind.UNAVAILABLE
        ) from e
    with pub:
        yield pub


def _local_store_problem(project: Project) -> str | None:
    """Why a ``file://`` store cannot be used now, or None (also for other stores)."""
    root = store_root()
    if root is None or root.is_dir():
        return None
    if root.exists():
        return f"{root} is not a directory"
    published = db.session.scalar(
        select(Publication.id).where(Publication.project_id == project.id).limit(1)
    )
    # A new FORGE has no store directory until its first publication creates it.
    return None if published is None else f"the store directory {root} is missing"


def _explain(error: AnvilError, action: str) -> ForgeError:
    """One sentence for the user; nothing was changed when this is raised."""
    if isinstance(error, PromptIdClash):
        return ForgeError(_clash_sentence(error, error.incoming, error.channel, action))
    if isinstance(error, StoreUnavailable):
        return ForgeError(
            f"The store cannot be reached, so nothing was {action}: {error}. "
            "Try again when it is back.",
            kind=Kind.UNAVAILABLE,
        )
    if isinstance(error, PreconditionFailed):
        return ForgeError(
            f"The channel changed while it was being {action} by someone else; nothing was "
            f"{action}. Reload and try again.",
        )
    if isinstance(error, SignatureError):
        return ForgeError(
            f"The channel's pointer in the store is not signed by this FORGE's key, so nothing "
            f"was {action}: {error}",
        )
    if isinstance(error, ValidationError):
        return ForgeError(
            f"The bundle does not validate, so nothing was {action}.",
            problems=list(error.problems),
        )
    if isinstance(error, StoreError):
        return ForgeError(
            f"The store refused the write, so nothing was {action}: {error}", kind=Kind.UNAVAILABLE
        )
    return ForgeError(f"Nothing was {action}: {error}")


def _clash_sentence(clash: PromptIdClash, incoming: str, channel: str, action: str) -> str:
    return (
        f"Prompt {clash.prompt_id!r} is in both {clash.existing.describe()} (on {channel}) and "
        f"{incoming}; a channel serves all its prompt sets at once, so a prompt id may be in "
        f"only one of them. Rename or remove it in one set; nothing was {action}."
    )
