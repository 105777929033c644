"""The FORGE's one error root: :class:`ForgeError`, with a :class:`Kind` and the problems found.

Services raise ``ForgeError`` and know nothing about HTTP; the kind says what went wrong:

    >>> error = ForgeError("Only owners can publish to prod.", kind=Kind.FORBIDDEN)
    >>> error.kind, str(error), error.problems
    (<Kind.FORBIDDEN: 'forbidden'>, 'Only owners can publish to prod.', [])

The web layer maps kinds to answers in one place (:func:`http_status`, the app's handler): a
rule about who may act or a missing object is an error page (or API JSON); anything the user
can fix is one flash sentence and a redirect back (:func:`flash_and_redirect`).
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # this module stays free of Flask: services and sandboxes import it
    from flask.typing import ResponseReturnValue

__all__ = [
    "ForgeError",
    "Kind",
    "NoRolloutInProgress",
    "flash_and_redirect",
    "flash_error",
    "http_status",
]


class Kind(enum.StrEnum):
    """What kind of failure a :class:`ForgeError` is."""

    #: The object does not exist (or is not visible to the user).
    NOT_FOUND = "not_found"
    #: A rule about who may act, or what a channel accepts.
    FORBIDDEN = "forbidden"
    #: A state the user can fix (it changed underneath them, or must change first).
    CONFLICT = "conflict"
    #: The request itself is not valid.
    INVALID = "invalid"
    #: A dependency (the store, the signing key, the preview sandbox) failed.
    UNAVAILABLE = "unavailable"
    #: Another FORGE answered wrongly or not at all.
    REMOTE = "remote"


_HTTP_STATUS = {
    Kind.NOT_FOUND: 404,
    Kind.FORBIDDEN: 403,
    Kind.CONFLICT: 409,
    Kind.INVALID: 400,
    Kind.UNAVAILABLE: 503,
    Kind.REMOTE: 502,
}


def http_status(kind: Kind) -> int:
    """The HTTP status the web layer answers a ``kind`` of error with (the one mapping; the
    app's error handler, the API and the views use it, services never do)."""
    return _HTTP_STATUS[kind]


class ForgeError(Exception):
    """An action that did not happen; ``str()`` is one sentence for the user.

    ``problems`` lists the details found (e.g. one line per invalid prompt). ``refused`` names
    the audit action to record, in a transaction of its own, for a refusal the audit log must
    show (see :func:`forge_app.services.workflow.record_refusal`). Each domain's subclass (e.g.
    :class:`forge_app.services.users.AccountError`) only sets the ``default_kind`` of its errors.
    """

    #: The kind of an error raised without one.
    default_kind = Kind.CONFLICT

    def __init__(
        self,
        message: str,
        *,
        kind: Kind | None = None,
        problems: list[str] | None = None,
        refused: str | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind if kind is not None else self.default_kind
        self.problems = problems or []
        self.refused = refused


class NoRolloutInProgress(ForgeError):
    """A rollout move (set, complete, abort) on a channel with no rollout in progress."""

    def __init__(self, channel: str) -> None:
        super().__init__(f"Channel {channel} has no rollout in progress.", kind=Kind.CONFLICT)
        self.channel = channel


def flash_and_redirect(error: ForgeError, target: str) -> ResponseReturnValue:
    """A view's answer to a service error: :func:`flash_error`, then a redirect to
    ``target``."""
    from flask import redirect

    flash_error(error)
    return redirect(target)


def flash_error(error: ForgeError) -> None:
    """Roll back, then an error page for a rule about who may act or a missing object
    (re-raised to the app's handler), or one flash sentence and its problems."""
    from flask import flash

    from forge_app.extensions import db

    db.session.rollback()
    if error.kind in (Kind.FORBIDDEN, Kind.NOT_FOUND):
        raise error
    flash(str(error), "error")
    for problem in error.problems[:20]:
        flash(problem, "error")
