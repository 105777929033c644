"""The exception hierarchy shared by the client, the publisher and the FORGE.

    >>> from anvil_client.errors import AnvilError, SignatureError
    >>> issubclass(SignatureError, AnvilError)
    True

Every error Anvil raises is an :class:`AnvilError`; third-party errors (botocore, urllib3,
cryptography, Jinja2) are mapped to one of these where they enter, with the original kept as
``__cause__``. Messages are one sentence a user can act on and never contain secrets.
"""

from __future__ import annotations

__all__ = [
    "AnvilError",
    "ChecksumError",
    "ConfigError",
    "DecryptionError",
    "ExpiredError",
    "FormatError",
    "MissingVariable",
    "NotFound",
    "NotModified",
    "PreconditionFailed",
    "PromptNotFound",
    "RenderError",
    "RollbackError",
    "SignatureError",
    "SizeLimitError",
    "StoreError",
    "StoreUnavailable",
    "TemplateError",
    "ValidationError",
    "VerificationError",
]


class AnvilError(Exception):
    """Root of every error raised by Anvil."""


class ConfigError(AnvilError):
    """The configuration (arguments, env vars, ``anvil.toml``, keys, tokens) is invalid."""


class VerificationError(AnvilError):
    """Something fetched from a store failed a security or integrity check."""


class SignatureError(VerificationError):
    """No signature on a pointer verifies with a trusted key."""


class RollbackError(VerificationError):
    """A pointer would move the channel back to an older sequence or rewrite an applied one."""


class ExpiredError(VerificationError):
    """A pointer's ``expires_at`` has passed."""


class ChecksumError(VerificationError):
    """An object's size or SHA-256 differs from what the signed pointer says."""


class FormatError(VerificationError):
    """A pointer, envelope, bundle or JWE is malformed or of the wrong type."""


class SizeLimitError(VerificationError):
    """Data exceeded a size limit (download, pointer, inflate or render cap)."""


class DecryptionError(VerificationError):
    """A bundle could not be decrypted with this ACCESS_TOKEN."""


class StoreError(AnvilError):
    """A store operation failed."""


class NotFound(StoreError):
    """The object does not exist in the store."""


class PreconditionFailed(StoreError):
    """A conditional write lost: the object changed (If-Match) or exists (If-None-Match: *)."""


class StoreUnavailable(StoreError):
    """The store could not be reached or answered with a server error."""


class NotModified(StoreError):
    """Internal signal for a 304 answer; stores return it as a result, never raise it to users."""


class RenderError(AnvilError):
    """A prompt could not be rendered."""


class MissingVariable(RenderError):
    """A template used a variable that was not given; ``prompt_id`` and ``variable`` say which."""

    def __init__(
        self, message: str, *, prompt_id: str | None = None, variable: str | None = None
    ) -> None:
        super().__init__(message)
        self.prompt_id = prompt_id
        self.variable = variable


class TemplateError(AnvilError):
    """A template does not parse; ``lineno`` says where."""

    def __init__(self, message: str, *, lineno: int | None = None) -> None:
        super().__init__(message)
        self.lineno = lineno


class ValidationError(AnvilError):
    """A bundle or prompt set is invalid; ``problems`` lists every problem found."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        if len(self.problems) == 1:
            message = self.problems[0]
        else:
            message = f"{len(self.problems)} problems: " + "; ".join(self.problems)
        super().__init__(message)


class PromptNotFound(AnvilError):
    """No prompt with this id is being served and no fallback was given."""
