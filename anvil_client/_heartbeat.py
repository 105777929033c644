"""Outbound-only heartbeats to the FORGE (DESIGN §7): reports, never updates.

    >>> from anvil_client._heartbeat import heartbeat_body
    >>> len(heartbeat_body({"instance_id": "i", "last_error": "x" * 99_000})) <= 16 * 1024
    True

``POST {forge_url}/api/v1/live/heartbeat`` with ``Authorization: Bearer <ACCESS_TOKEN>``.
A failed heartbeat is reported in ``status()`` and never affects serving; the token is never
logged, redirects are not followed (they could carry it elsewhere), and it is never sent over
plain ``http://`` to anything but a loopback address.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

from anvil_client.errors import ConfigError
from anvil_client.wire._layout import HEARTBEAT_MAX_SIZE

HEARTBEAT_PATH = "/api/v1/live/heartbeat"
MAX_BODY = HEARTBEAT_MAX_SIZE
_FIELDS = (
    "instance_id",
    "hostname",
    "project_id",
    "channel",
    "mode",
    "sequence",
    "releases",
    "last_error",
    "client_version",
)
#: Optional keys sent only when set (issue 11's ``usage``; an old FORGE may refuse them).
_OPTIONAL_FIELDS = ("usage",)
_ANSWERS = {
    401: "the FORGE refused this ACCESS_TOKEN (401: revoked or unknown)",
    400: "the FORGE rejected the heartbeat as invalid (400)",
    429: "the FORGE asked for fewer heartbeats (429)",
}


def heartbeat_body(fields: dict[str, Any]) -> bytes:
    """The JSON body with exactly DESIGN §7's fields (and ``usage`` when given), at most 16 KiB.

    Long texts are shortened first (``last_error``, then ``hostname``); a body still too
    large (100 entries with very long versions) keeps as many ``releases`` as fit, in order —
    a report, never an update, so a shorter list misleads no one into serving anything.
    """
    body = {name: fields.get(name) for name in _FIELDS}
    for name in _OPTIONAL_FIELDS:
        if fields.get(name) is not None:
            body[name] = fields[name]
    if body["releases"] is None:
        body["releases"] = []
    for name, limit in (("hostname", 255), ("last_error", 1000)):
        value = body[name]
        if isinstance(value, str) and len(value) > limit:
            body[name] = value[: limit - 1] + "…"
    data = _encode(body)
    while len(data) > MAX_BODY and isinstance(body["last_error"], str) and body["last_error"]:
        body["last_error"] = body["last_error"][: len(body["last_error"]) // 2]
        data = _encode(body)
    if len(data) > MAX_BODY and isinstance(body["hostname"], str):
        body["hostname"] = body["hostname"][:64]
        data = _encode(body)
    releases = list(body["releases"] or [])
    while len(data) > MAX_BODY and releases:
        releases.pop()
        body["releases"] = releases
        data = _encode(body)
    return data


def _encode(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode("utf-8")


def is_loopback_host(host: str) -> bool:
    """``localhost``, 127.0.0.0/8 or ::1: traffic that never leaves the machine."""
    import ipaddress  # only where a forge_url is configured

    name = host.strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def check_token_transport(forge_url: str) -> None:
    """The ACCESS_TOKEN travels as a bearer token: only over https, or http to loopback.

    Raises:
        ConfigError: for an ``http://`` URL whose host is not loopback.
    """
    parts = urlsplit(forge_url)
    if parts.scheme == "http" and not is_loopback_host(parts.hostname or ""):
        raise ConfigError(
            f"forge_url {forge_url[:200]!r} is plain http:// to a host that is not loopback: "
            "heartbeats carry the ACCESS_TOKEN, so use https:// (http:// is only allowed for "
            "localhost, 127.0.0.0/8 and ::1)"
        )


class HeartbeatSender:
    """Sends heartbeats over one kept-alive connection (reopened when the FORGE closed it).

    Used by one thread at a time (the client's heartbeat thread).
    """

    def __init__(self, forge_url: str, token_text: str, *, timeout: float = 5.0) -> None:
        """Raises:
        ConfigError: if ``forge_url`` is plain http:// to a host that is not loopback.
        """
        check_token_transport(forge_url)
        parts = urlsplit(forge_url)
        self._scheme, self._host, self._port = parts.scheme, parts.hostname or "", parts.port
        self._path = parts.path.rstrip("/") + HEARTBEAT_PATH
        self._timeout = timeout
        self._authorization = f"Bearer {token_text}"
        self._transport: Any = None  # anvil_client._transport.Transport, imported on first use
        self._settings = (forge_url, token_text, timeout)
        self.url = f"{parts.scheme}://{parts.netloc}{self._path}"

    def fresh(self) -> HeartbeatSender:
        """The same sender without a connection (a forked child must not use the parent's)."""
        forge_url, token_text, timeout = self._settings
        return HeartbeatSender(forge_url, token_text, timeout=timeout)

    def __repr__(self) -> str:
        return f"HeartbeatSender({self.url!r})"

    def send(self, body: bytes, user_agent: str) -> str | None:
        """POST one heartbeat; returns ``None`` when recorded, else one sentence saying why not."""
        return self.post(body, user_agent)[1]

    def close(self) -> None:
        transport, self._transport = self._transport, None
        if transport is not None:
            transport.close()

    def post(self, body: bytes, user_agent: str) -> tuple[int | None, str | None]:
        """POST one heartbeat: the HTTP status (``None`` if there was no answer) and ``None``
        when recorded, else one sentence saying why not.

        It takes at most about ``timeout`` seconds: socket timeouts bound each read, and the
        transport's :class:`~anvil_client._transport.Deadline` cuts off a FORGE that answers a
        byte at a time. A kept-alive connection the FORGE closed meanwhile is retried once.
        """
        from anvil_client._transport import Deadline, Transport, TransportError, finish, read1

        if self._transport is None:
            self._transport = Transport(
                self._scheme,
                self._host,
                self._port,
                connect_timeout=self._timeout,
                read_timeout=self._timeout,
            )
        headers = {
            "Authorization": self._authorization,
            "Content-Type": "application/json",
            "User-Agent": user_agent,
        }
        deadline = Deadline(self._timeout).start()
        try:
            response = self._transport.open(
                "POST", self._path, headers=headers, deadline=deadline, body=body
            )
            try:
                left = 64 * 1024  # the answer is not used; reading it keeps the connection
                while left > 0 and (chunk := read1(response, left)):
                    left -= len(chunk)
            finally:
                finish(response)
        except TransportError as e:
            if deadline.expired or e.kind in ("timeout", "connect-timeout"):
                return None, self._timed_out()
            return None, f"heartbeat to {self.url} failed: {e.detail}"
        except ValueError as e:  # a header http.client refuses to send
            return None, f"heartbeat to {self.url} failed: {type(e).__name__}: {e}"[:300]
        finally:
            deadline.stop()
        if deadline.expired:  # what was read before the cut-off may parse, but is cut short
            return None, self._timed_out()
        status = response.status
        if 200 <= status < 300:
            return status, None
        return status, _ANSWERS.get(status, f"heartbeat to {self.url} failed with HTTP {status}")

    def _timed_out(self) -> str:
        return f"heartbeat to {self.url} timed out after {self._timeout:g} s"
