"""ACCESS_TOKENs in the FORGE: generation, encryption at rest, bearer authentication.

    >>> token, text = create_token(project, "checkout-service prod", user=owner)  # doctest: +SKIP
    >>> authenticate_bearer(f"Bearer {text}") is token                          # doctest: +SKIP
    True

The token text is never stored: its secret is encrypted with AES-256-GCM under a key derived
(HKDF-SHA256) from ``FORGE_DATA_KEY`` — a key separate from ``SECRET_KEY`` — so owners can see
the token again, and a SHA-256 hash of the full text serves bearer checks, compared in
constant time. Nothing here logs a secret.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Literal

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from flask import current_app
from sqlalchemy import select
from sqlalchemy.orm import Session

from anvil_client.errors import AnvilError, ConfigError
from anvil_client.wire import AccessToken as WireToken
from forge_app.audit import record_event
from forge_app.errors import ForgeError
from forge_app.extensions import db
from forge_app.models import Project, User, utcnow
from forge_app.models.api_tokens import ApiToken
from forge_app.models.distribution import AccessToken

if TYPE_CHECKING:
    from forge_app.services.publishing import RecipientsReport

__all__ = [
    "TOUCH_EVERY",
    "TokenStatus",
    "active_tokens",
    "authenticate_bearer",
    "bearer_text",
    "create_token",
    "decrypt_secret",
    "encrypt_secret",
    "generate_token",
    "hash_token",
    "lookup_token_status",
    "record_token_event",
    "reveal_token",
    "show_token",
    "touch_last_used",
    "wire_token",
]

TokenStatus = Literal["ok", "unknown", "revoked"]

_FORMAT = "v1"
_HKDF_SALT = b"anvil.forge.v1"
_HKDF_INFO = b"access-token-secrets"
#: A token's ``last_used_at`` is written at most this often: a heartbeat (or an API call)
#: every few seconds must not turn into a write every few seconds.
TOUCH_EVERY = timedelta(seconds=60)


def hash_token(text: str) -> str:
    """SHA-256 hex of the full token text (what ``AccessToken.secret_hash`` holds)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _data_key(data_key: str | None = None) -> bytes:
    """A 32-byte AES key derived from ``FORGE_DATA_KEY`` (whatever text the operator set)."""
    value = data_key if data_key is not None else current_app.config["FORGE_DATA_KEY"]
    if not value:
        raise ConfigError("FORGE_DATA_KEY is not set; it encrypts ACCESS_TOKEN secrets at rest")
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=_HKDF_SALT, info=_HKDF_INFO).derive(
        str(value).encode("utf-8")
    )


def encrypt_secret(token: WireToken, *, data_key: str | None = None) -> str:
    """``v1.<base64url(nonce ‖ AES-GCM(secret))>``, bound to the token id as associated data."""
    nonce = os.urandom(12)
    sealed = AESGCM(_data_key(data_key)).encrypt(nonce, token.secret, _aad(token.token_id))
    return f"{_FORMAT}." + base64.urlsafe_b64encode(nonce + sealed).decode("ascii")


def decrypt_secret(token_id: str, sealed: str, *, data_key: str | None = None) -> WireToken:
    """The ACCESS_TOKEN whose secret ``sealed`` holds.

    Raises:
        ConfigError: if it cannot be decrypted (another ``FORGE_DATA_KEY``, or tampered).
    """
    version, _, body = sealed.partition(".")
    try:
        if version != _FORMAT:
            raise ValueError(version)
        raw = base64.urlsafe_b64decode(body.encode("ascii"))
        secret = AESGCM(_data_key(data_key)).decrypt(raw[:12], raw[12:], _aad(token_id))
    except (ValueError, binascii.Error, InvalidTag) as e:
        raise ConfigError(
            f"the secret of ACCESS_TOKEN {token_id} cannot be decrypted; was FORGE_DATA_KEY "
            "changed?"
        ) from e
    return WireToken(token_id=token_id, secret=secret)


def _aad(token_id: str) -> bytes:
    return b"anvil access token " + token_id.encode("ascii")


def create_token(project: Project, name: str, *, user: User) -> tuple[AccessToken, str]:
    """A new ACCESS_TOKEN row (added to the session, not committed) and its text.

    The text is the only copy in clear; show it to the user and never log it.
    """
    while True:
        wire = WireToken.generate()
        taken = db.session.scalar(
            select(AccessToken.id).where(AccessToken.token_id == wire.token_id)
        )
        if taken is None:
            break
    row = AccessToken(
        project_id=project.id,
        token_id=wire.token_id,
        name=name.strip()[:120],
        secret_encrypted=encrypt_secret(wire),
        secret_hash=hash_token(wire.text),
        created_by_id=user.id,
        created_at=utcnow(),
    )
    db.session.add(row)
    return row, wire.text


def generate_token(
    project: Project, name: str, *, user: User
) -> tuple[AccessToken, str, RecipientsReport]:
    """Generate an ACCESS_TOKEN, audit it, re-encrypt the project's channels for the new set of
    recipients, and commit. Returns the row, its text (show it once, never log it) and the
    re-encryption report (a store failure is reported in it: the token exists either way)."""
    # publishing reads the tokens (its recipients), so it is imported here, not at the top.
    from forge_app.services.publishing import RecipientsReport, sync_recipients

    token, text = create_token(project, name, user=user)
    db.session.flush()
    record_token_event("token.create", token, user=user, project=project)
    try:
        report = sync_recipients(project, user=user, reason=f"new token {token.token_id}")
    except ForgeError as e:
        report = RecipientsReport(failed=[("all channels", str(e))])
    db.session.commit()
    return token, text, report


def record_token_event(
    action: str,
    token: AccessToken | ApiToken,
    *,
    user: User,
    project: Project | None = None,
    session: Session | None = None,
) -> None:
    """Audit ``action`` by ``user`` on an ACCESS_TOKEN or a personal API token, naming it by
    its id and name."""
    details = {"token_id": token.token_id, "name": token.name}
    record_event(action, token, project=project, actor=user, details=details, session=session)


def show_token(token: AccessToken) -> str:
    """The full token text for its owner, with an audit event (committed).

    Raises:
        ConfigError: as for :func:`wire_token` (nothing is recorded then).
    """
    text = reveal_token(token)
    record_event("token.reveal", token, project=token.project, details={"token_id": token.token_id})
    db.session.commit()
    return text


def wire_token(token: AccessToken) -> WireToken:
    """The parsed ACCESS_TOKEN of a row, decrypted (for encryption keys or showing it).

    Raises:
        ConfigError: if the secret cannot be decrypted or does not match the stored hash.
    """
    wire = decrypt_secret(token.token_id, token.secret_encrypted)
    if not hmac.compare_digest(hash_token(wire.text), token.secret_hash):
        raise ConfigError(f"the stored secret of ACCESS_TOKEN {token.token_id} is inconsistent")
    return wire


def reveal_token(token: AccessToken) -> str:
    """The full token text, for its owner's eyes only.

    Raises:
        ConfigError: as for :func:`wire_token`.
    """
    return wire_token(token).text


def active_tokens(project_id: object) -> list[AccessToken]:
    """The project's tokens that are not revoked, oldest first."""
    return list(
        db.session.scalars(
            select(AccessToken)
            .where(AccessToken.project_id == project_id, AccessToken.revoked_at.is_(None))
            .order_by(AccessToken.id)
        )
    )


def bearer_text(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer …`` header (None when there is none)."""
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def lookup_token_status(header: str | None) -> tuple[TokenStatus, AccessToken | None]:
    """Check an ``Authorization: Bearer <ACCESS_TOKEN>`` header.

    Returns ``("ok", token)``, ``("revoked", token)`` for a correct but revoked token, or
    ``("unknown", None)`` for anything else (missing, malformed, unknown id, wrong secret).
    """
    text = bearer_text(header)
    if text is None:
        return "unknown", None
    try:
        parsed = WireToken.parse(text)
    except AnvilError:
        return "unknown", None
    token = db.session.scalar(select(AccessToken).where(AccessToken.token_id == parsed.token_id))
    # Hash even when the id is unknown, so timing does not reveal which ids exist.
    presented = hash_token(parsed.text)
    expected = token.secret_hash if token is not None else "0" * 64
    if not hmac.compare_digest(presented, expected) or token is None:
        return "unknown", None
    if token.revoked_at is not None:
        return "revoked", token
    return "ok", token


def authenticate_bearer(authorization_header: str | None) -> AccessToken | None:
    """The active token of a bearer header, or None for unknown, wrong or revoked tokens."""
    status, token = lookup_token_status(authorization_header)
    return token if status == "ok" else None


def touch_last_used(token: AccessToken, when: datetime | None = None) -> None:
    """Record a use of ``token`` (at most once a minute; the caller commits)."""
    moment = when or utcnow()
    if token.last_used_at is not None and moment - token.last_used_at < TOUCH_EVERY:
        return
    token.last_used_at = moment
