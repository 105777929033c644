"""The hint stream (issue 14 §3): one outbound Server-Sent Events stream from the FORGE that
only says "poll now".

    >>> from anvil_client._hints import parse_hint
    >>> parse_hint("hint", '{"channel": "production", "sequence": 42}', "production")
    42

``GET {forge_url}/api/v1/live/hints?project_id=…&channel=…`` with ``Authorization: Bearer
<ACCESS_TOKEN>`` and ``Accept: text/event-stream``; the FORGE answers ``200`` with
``Content-Type: text/event-stream`` and sends ``event: hint`` / ``data: {"channel": "production",
"sequence": 42}`` when the channel's pointer changes (comment lines such as ``: keep-alive``
at least every 30 s keep an idle stream open). A hint carries no data: the client polls the
store and verifies the signed pointer as always, so a forged or replayed hint costs at most one
extra verified poll per second. When the stream drops, polling goes on as usual and the
stream is reopened after a jittered, capped backoff. Redirects are not followed (they could
carry the token elsewhere) and plain ``http://`` is allowed only to loopback, as heartbeats.
The stream goes through the client's one transport (``_transport.Transport``); it has no
overall deadline (it is meant to stay open): each read is bounded by ``READ_TIMEOUT``.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import threading
from collections.abc import Callable, Iterator
from typing import Any, Literal
from urllib.parse import urlencode, urlsplit

from anvil_client._heartbeat import check_token_transport
from anvil_client._transport import Deadline, Transport, TransportError, finish, read1

HINTS_PATH = "/api/v1/live/hints"
#: No byte for this long (the FORGE sends keep-alive comments more often): reconnect.
READ_TIMEOUT = 90.0
CONNECT_TIMEOUT = 10.0
#: Reconnect backoff: first pause, the cap, and the cap after a refusal (4xx: an old FORGE
#: without the endpoint, or a revoked token).
BACKOFF_FIRST = 1.0
BACKOFF_CAP = 60.0
BACKOFF_CAP_REFUSED = 600.0
#: A line longer than this is not a hint: the stream is dropped.
MAX_LINE = 4096

HintState = Literal["off", "connecting", "connected"]


def parse_hint(event: str, data: str, channel: str) -> int | None:
    """The sequence a ``hint`` event announces for ``channel``; ``None`` for anything else."""
    if event != "hint":
        return None
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):
        return None
    if not isinstance(doc, dict) or doc.get("channel") != channel:
        return None
    sequence = doc.get("sequence")
    if isinstance(sequence, bool) or not isinstance(sequence, int) or sequence < 1:
        return None
    return sequence


class HintStream:
    """A daemon thread that holds the stream while ``active()`` and calls ``on_hint(sequence)``.

    ``active`` is checked before each connection (the client: leader and ACCEPTING);
    :meth:`nudge` re-checks at once, :meth:`drop` closes the stream in use.
    """

    def __init__(
        self,
        forge_url: str,
        token_text: str,
        *,
        project_id: str,
        channel: str,
        on_hint: Callable[[int], None],
        active: Callable[[], bool],
        user_agent: str,
    ) -> None:
        """Raises:
        ConfigError: if ``forge_url`` is plain http:// to a host that is not loopback.
        """
        check_token_transport(forge_url)
        self._settings: dict[str, Any] = {
            "forge_url": forge_url,
            "token_text": token_text,
            "project_id": project_id,
            "channel": channel,
            "on_hint": on_hint,
            "active": active,
            "user_agent": user_agent,
        }
        parts = urlsplit(forge_url)
        self._transport = Transport(
            parts.scheme,
            parts.hostname or "",
            parts.port,
            connect_timeout=CONNECT_TIMEOUT,
            read_timeout=READ_TIMEOUT,
        )
        query = urlencode({"project_id": project_id, "channel": channel})
        self._path = f"{parts.path.rstrip('/')}{HINTS_PATH}?{query}"
        self.url = f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}{HINTS_PATH}"
        self._headers = {
            "Authorization": f"Bearer {token_text}",
            "Accept": "text/event-stream",
            "Cache-Control": "no-cache",
            "User-Agent": user_agent,
        }
        self._channel = channel
        self._on_hint = on_hint
        self._active = active
        self._wake = threading.Event()
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._request: Deadline | None = None  # the stream in use (never started: no end)
        self._thread: threading.Thread | None = None
        self.state: HintState = "off"
        self.error: str | None = None
        self.failures = 0
        self.hints = 0
        self._retry: float | None = None  # the FORGE's `retry:` field, seconds
        self._retry_after: float | None = None  # a 503's Retry-After, seconds

    def fresh(self) -> HintStream:
        """The same stream, not started (a forked child: the parent's thread did not survive)."""
        return HintStream(**self._settings)

    def forget_after_fork(self) -> None:
        """In a forked child: close our copy of the parent's stream (no shutdown: the
        parent's stream stays open)."""
        request, self._request = self._request, None
        connection = request.connection if request is not None else None
        if connection is not None:
            with contextlib.suppress(OSError):
                connection.close()

    def start(self) -> None:
        thread = threading.Thread(target=self._run, name="anvil-hints", daemon=True)
        self._thread = thread
        thread.start()

    def nudge(self) -> None:
        """Look at ``active()`` again now (leadership or the mode changed)."""
        self._wake.set()

    def drop(self) -> None:
        """Close the stream in use (the thread reconnects if still active)."""
        with self._lock:
            request = self._request
        if request is not None:
            request.expire()

    def close(self, timeout: float = 5.0) -> None:
        self._closed.set()
        self._wake.set()
        self.drop()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    # --- the thread ----------------------------------------------------------------------

    def _run(self) -> None:
        while not self._closed.is_set():
            if not self._active():
                self.state = "off"
                self._wake.wait(30.0)
                self._wake.clear()
                continue
            self.state = "connecting"
            refused = False
            try:
                refused = self._stream()
            except Exception as e:  # the stream is an optimisation: nothing here may escape
                self.error = f"hint stream {self.url}: {type(e).__name__}: {e}"[:300]
            if self._closed.is_set():
                break
            self.state = "connecting" if self._active() else "off"
            self.failures += 1
            cap = BACKOFF_CAP_REFUSED if refused else BACKOFF_CAP
            first = max(BACKOFF_FIRST, min(self._retry or 0.0, BACKOFF_CAP))
            delay = min(cap, first * 2 ** min(self.failures - 1, 16))
            if self._retry_after is not None:  # "busy, poll instead": as long as it asks
                delay, self._retry_after = max(delay, self._retry_after), None
            self._closed.wait(delay * random.uniform(0.5, 1.0))
        self.state = "off"

    def _stream(self) -> bool:
        """One connection, read until it drops; ``True`` when the FORGE refused it (4xx)."""
        request = Deadline(math.inf)
        with self._lock:
            self._request = request
        try:
            response = self._transport.open(
                "GET", self._path, headers=self._headers, deadline=request
            )
        except (TransportError, ValueError) as e:
            return self._dropped(e)
        try:
            content_type = response.headers.get("Content-Type", "") or ""
            if response.status != 200 or not content_type.startswith("text/event-stream"):
                self.error = f"hint stream {self.url} answered HTTP {response.status}" + (
                    "" if response.status != 200 else f" with {content_type[:60]!r}"
                )
                if response.status == 503:
                    self._retry_after = _seconds(response.headers.get("Retry-After"))
                return 400 <= response.status < 500
            self.state = "connected"
            self.failures = 0
            self.error = None
            self._read_events(_lines(response))
            self.error = f"hint stream {self.url} closed by the FORGE"
            return False
        except (TransportError, ValueError) as e:
            return self._dropped(e)
        finally:
            with self._lock:
                self._request = None
            with contextlib.suppress(OSError):
                response.close()  # a stream is never reused
            finish(response)

    def _dropped(self, e: TransportError | ValueError) -> Literal[False]:
        if isinstance(e, TransportError):
            detail = e.detail
        else:
            detail = f"{type(e).__name__}: {' '.join(str(e).split())[:200]}"
        self.error = f"hint stream {self.url} dropped: {detail}"
        return False

    def _read_events(self, lines: Iterator[bytes]) -> None:
        event, data = "message", list[str]()
        while not self._closed.is_set() and self._active():
            raw = next(lines, None)
            if raw is None:
                return  # end of stream
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            if not line:
                if data:
                    self._dispatch(event, data)
                event, data = "message", list[str]()
            elif not line.startswith(":"):  # ``:`` starts a comment: keep-alive
                event = self._read_field(line, event, data)

    def _dispatch(self, event: str, data: list[str]) -> None:
        sequence = parse_hint(event, "\n".join(data), self._channel)
        if sequence is not None:
            self.hints += 1
            self._on_hint(sequence)

    def _read_field(self, line: str, event: str, data: list[str]) -> str:
        """Take one ``name: value`` line of an event; returns the event's (new) name."""
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            return value
        if name == "retry":
            self._retry = _seconds(value, scale=0.001)
        elif name == "data" and len(data) < 16:
            data.append(value)
        return event


def _seconds(text: str | None, *, scale: float = 1.0) -> float | None:
    """A whole number (of seconds, or of ms with ``scale=0.001``) within 1 s..10 min."""
    if text is None or not text.strip().isdigit() or len(text.strip()) > 9:
        return None
    return min(max(int(text.strip()) * scale, BACKOFF_FIRST), BACKOFF_CAP_REFUSED)


def _lines(response: Any) -> Iterator[bytes]:
    """The stream's lines as they arrive (with their ending), until it ends.

    Raises:
        ValueError: for a line longer than ``MAX_LINE`` bytes.
        TransportError: when no byte came within ``READ_TIMEOUT`` or the stream broke.
    """
    pending = b""
    while chunk := read1(response, MAX_LINE + 1):
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            if len(line) >= MAX_LINE:
                raise ValueError(f"a line longer than {MAX_LINE} bytes")
            yield line + b"\n"
        if len(pending) > MAX_LINE:
            raise ValueError(f"a line longer than {MAX_LINE} bytes")
