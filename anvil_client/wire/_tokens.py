"""ACCESS_TOKENs and the key-encryption keys derived from them (DESIGN §5).

>>> from anvil_client.wire import AccessToken
>>> AccessToken.parse(AccessToken.generate().text).kek().__len__()
32
"""

from __future__ import annotations

import base64
import hmac
import re
import secrets
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from anvil_client.errors import ConfigError

TOKEN_RE = re.compile(r"^anvil_([a-z0-9]{12})_([A-Za-z0-9_-]{43})\Z")
_ID_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"


def derive_kek(token_id: str, secret: bytes) -> bytes:
    """``HKDF-SHA256(ikm=secret, salt=b"anvil.v1", info=b"kek:" + token_id, length=32)``."""
    return HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=b"anvil.v1",
        info=b"kek:" + token_id.encode("ascii"),
    ).derive(secret)


@dataclass(frozen=True)
class AccessToken:
    """A parsed ACCESS_TOKEN. Its ``repr`` never shows the secret."""

    token_id: str
    secret: bytes = field(repr=False)

    @classmethod
    def parse(cls, text: str) -> AccessToken:
        """Parse ``anvil_{token_id}_{secret}`` with the regular expression, never ``split``.

        Raises:
            ConfigError: if the text is not an ACCESS_TOKEN (the text is not echoed).
        """
        match = TOKEN_RE.match(text.strip()) if isinstance(text, str) else None
        if match is None:
            raise ConfigError(
                "ACCESS_TOKEN is malformed: expected anvil_<12 chars>_<43 chars of base64url>"
            )
        encoded = match.group(2)
        secret = base64.urlsafe_b64decode(encoded + "=")
        if _encode_secret(secret) != encoded:
            # The last character carries 4 unused bits; only one spelling is the token.
            raise ConfigError("ACCESS_TOKEN is malformed: its secret is not canonical base64url")
        return cls(token_id=match.group(1), secret=secret)

    @classmethod
    def generate(cls) -> AccessToken:
        """A new token: 12 random ``[a-z0-9]`` and 32 random bytes."""
        token_id = "".join(secrets.choice(_ID_ALPHABET) for _ in range(12))
        return cls(token_id=token_id, secret=secrets.token_bytes(32))

    @property
    def text(self) -> str:
        """The full ``anvil_…`` token. It is a secret: never log it."""
        return f"anvil_{self.token_id}_{_encode_secret(self.secret)}"

    def kek(self) -> bytes:
        """This token's key-encryption key (DESIGN §5)."""
        return derive_kek(self.token_id, self.secret)

    def matches(self, other_text: str) -> bool:
        """Constant-time comparison with another token's text."""
        if not isinstance(other_text, str):
            return False
        return hmac.compare_digest(self.text.encode("ascii"), other_text.strip().encode("utf-8"))


def _encode_secret(secret: bytes) -> str:
    return base64.urlsafe_b64encode(secret).rstrip(b"=").decode("ascii")
