"""The hint stream (issue 14 §3): instant propagation without an inbound port.

    $ curl -N -H "Authorization: Bearer $ANVIL_ACCESS_TOKEN" \\
        "http://127.0.0.1:8000/api/v1/live/hints?project_id=$PROJECT&channel=production"
    : anvil hints
    retry: 5000

    event: hint
    data: {"channel": "production", "sequence": 7}

A LIVE client keeps one *outbound* Server-Sent Events stream per channel. When the channel's
pointer changes (publish, rollback, rollout, remove, re-encryption: every one writes a
``publications`` row), the FORGE sends ``event: hint`` with the channel and the new sequence.
A hint carries no data: it only makes the client poll the store now (after a small random
delay); the signed pointer stays the only source of truth. On connect the stream sends the
channel's newest sequence once, so a client that missed a change while reconnecting catches
up. A comment line every ``FORGE_HINT_KEEPALIVE_SECONDS`` (15) keeps proxies and NATs from
closing an idle stream; the token is checked again every ``FORGE_HINT_RECHECK_SECONDS`` (60),
and the stream ends once it is revoked.

Across processes: each FORGE process has one watcher thread that polls the ``publications``
table every ``FORGE_HINT_POLL_SECONDS`` (0.25 s: one indexed query, whatever the number of
streams) and wakes the streams of that process whose channel moved. So every gunicorn
worker, and a publication made by any process (a page, the REST API, ``anvil-forge``), wakes
every stream. Pointers published without the FORGE (``anvil-publish`` in CI) are seen by the
same watcher: every ``FORGE_HINT_STORE_SECONDS`` (2 s; 0 turns it off) it GETs, conditionally
(ETag), the pointer of each channel that has a stream in this process from the FORGE's store.

Holding thousands of idle streams: one stream is one open response. With a gevent worker class
(``forge_app.gevent_worker``, see ``forge_app.serving``) a stream costs a greenlet (a few KiB)
and no thread; the threaded development server holds one thread per stream. gunicorn's
``sync`` and ``gthread`` workers (one request, or a few threads, at a time) answer 503, so a
client falls back to polling instead of taking the worker. Answers: 200 stream, 400 bad
query, 401 unknown or revoked token, 403 token of another project, 503 no room
(``FORGE_HINT_MAX_STREAMS`` per process, default 10,000) or a worker class that cannot hold
streams.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

from flask import Blueprint, Flask, jsonify, request
from flask.typing import ResponseReturnValue
from sqlalchemy import func, select
from werkzeug.wrappers import Response

from forge_app.authz import public
from forge_app.extensions import current_app_object
from forge_app.metrics import HINT_STREAMS, HINTS_SENT
from forge_app.services.heartbeat_limits import number_setting

__all__ = ["HintHub", "bp", "init_app"]

log = logging.getLogger("forge.hints")

bp = Blueprint("hints", __name__, url_prefix="/api/v1")

_CHANNEL_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}\Z")
DEFAULTS = {
    "FORGE_HINT_POLL_SECONDS": 0.25,
    "FORGE_HINT_KEEPALIVE_SECONDS": 15.0,
    "FORGE_HINT_RECHECK_SECONDS": 60.0,
    "FORGE_HINT_MAX_STREAMS": 10_000.0,
    "FORGE_HINT_STORE_SECONDS": 2.0,
}
#: Publications at most this many ids below the newest seen are read again, so one that
#: committed after a later id (two channels publishing at once) is not missed.
_LOOKBACK = 64


def _setting(app: Flask, name: str) -> float:
    default = DEFAULTS[name]
    try:
        return number_setting(app.config, os.environ, name, default)
    except ValueError as e:
        log.warning("%s; using %g", e, default)
        return default


class _Stream:
    """One open stream: the newest sequence not yet sent, and an event to wake it."""

    def __init__(self, key: tuple[str, str]) -> None:
        self.key = key
        self.pending: int | None = None
        self.wake = threading.Event()

    def offer(self, sequence: int) -> None:
        if self.pending is None or sequence > self.pending:
            self.pending = sequence
        self.wake.set()

    def wait(self, timeout: float) -> int | None:
        self.wake.wait(timeout)
        self.wake.clear()
        sequence, self.pending = self.pending, None
        return sequence


class HintHub:
    """The streams of this process by (project id, channel), and the watcher that wakes them."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self._lock = threading.Lock()
        self._streams: dict[tuple[str, str], set[_Stream]] = {}
        self._count = 0
        self._latest: dict[int, int] = {}  # channel id -> newest sequence seen
        self._names: dict[int, tuple[str, str]] = {}  # channel id -> (project id, name)
        self._high = 0  # newest publication id seen
        self._watcher: tuple[int, int] | None = None  # (pid, generation) of the running one
        self._generation = 0
        self._thread: threading.Thread | None = None
        self._by_key: dict[tuple[str, str], int] = {}  # newest sequence hinted, by stream key
        self._etags: dict[tuple[str, str], str | None] = {}
        self._store: Any = None

    @property
    def count(self) -> int:
        return self._count

    def open(self, key: tuple[str, str], limit: int) -> _Stream | None:
        """A new stream for ``key``, or None when this process holds ``limit`` already."""
        with self._lock:
            if self._count >= limit:
                return None
            stream = _Stream(key)
            self._streams.setdefault(key, set()).add(stream)
            self._count += 1
            if self._watcher is None or self._watcher[0] != os.getpid():
                # The first stream (or a forked copy of the hub): start watching.
                self._generation += 1
                self._watcher = (os.getpid(), self._generation)
                self._thread = threading.Thread(
                    target=self._watch, args=(self._watcher,), name="forge-hints", daemon=True
                )
                self._thread.start()
        return stream

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the watcher (streams still open stay open, unwoken) and wait for it."""
        with self._lock:
            self._watcher = None
            thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout)

    def close(self, stream: _Stream) -> None:
        with self._lock:
            streams = self._streams.get(stream.key)
            if streams is not None and stream in streams:
                streams.discard(stream)
                self._count -= 1
                if not streams:
                    del self._streams[stream.key]
                if not self._count:
                    self._watcher = None  # the last stream went: the watcher stops

    def notify(self, key: tuple[str, str], sequence: int) -> int:
        """Wake every stream of ``key`` (once per sequence); returns how many."""
        with self._lock:
            if sequence <= self._by_key.get(key, -1):
                return 0
            self._by_key[key] = sequence
            streams = list(self._streams.get(key, ()))
        for stream in streams:
            stream.offer(sequence)
        return len(streams)

    # --- the watcher -------------------------------------------------------------------------

    def _watch(self, me: tuple[int, int]) -> None:
        poll = _setting(self.app, "FORGE_HINT_POLL_SECONDS")
        raw = self.app.config.get(
            "FORGE_HINT_STORE_SECONDS", os.environ.get("FORGE_HINT_STORE_SECONDS")
        )
        off = str(raw).strip() in ("0", "0.0", "off")
        every = _setting(self.app, "FORGE_HINT_STORE_SECONDS")
        failures = 0
        store_checked = time.monotonic()
        while self._watcher == me:
            try:
                self.check()
                if not off and time.monotonic() - store_checked >= every:
                    store_checked = time.monotonic()
                    self.check_store()
                failures = 0
            except Exception as e:  # the database away for a moment: keep watching
                failures += 1
                if failures in (1, 10) or failures % 100 == 0:
                    log.warning("hint watcher cannot read publications: %s", type(e).__name__)
            time.sleep(poll if failures == 0 else min(5.0, poll * 2**failures))

    def check(self) -> int:
        """Read the publications newer than the last check and wake their streams (the
        first check wakes the streams with their channel's newest sequence, which a client
        ignores when it has it). Returns the streams woken."""
        from forge_app.extensions import db
        from forge_app.models.distribution import Channel, Publication

        woken = 0
        with self.app.app_context():
            rows = db.session.execute(
                select(
                    Publication.channel_id,
                    func.max(Publication.sequence),
                    func.max(Publication.id),
                )
                .where(Publication.id > max(0, self._high - _LOOKBACK))
                .group_by(Publication.channel_id)
            ).all()
            unknown = [row[0] for row in rows if row[0] not in self._names]
            if unknown:
                for channel_id, project_id, name in db.session.execute(
                    select(Channel.id, Channel.project_id, Channel.name).where(
                        Channel.id.in_(unknown)
                    )
                ):
                    self._names[channel_id] = (str(project_id), name)
        for channel_id, sequence, high in rows:
            self._high = max(self._high, int(high))
            if sequence is None or sequence <= self._latest.get(channel_id, -1):
                continue
            self._latest[channel_id] = int(sequence)
            key = self._names.get(channel_id)
            if key is not None:
                woken += self.notify(key, int(sequence))
        return woken

    def check_store(self) -> int:
        """Pointers written without the FORGE (``anvil-publish`` in CI) leave no
        ``publications`` row: for each channel with a stream in this process, a conditional
        GET of its pointer in the FORGE's store (a 304 when unchanged); a newer sequence wakes
        the streams. Returns the streams woken."""
        from anvil_client.errors import AnvilError
        from anvil_client.wire import POINTER_MAX_SIZE, pointer_key

        with self._lock:
            keys = list(self._streams)
        woken = 0
        with self.app.app_context():
            if self._store is None:
                from forge_app.services.publishing import forge_store

                self._store = forge_store()
            for key in keys:
                try:
                    result = self._store.get(
                        pointer_key(*key),
                        if_none_match=self._etags.get(key),
                        max_size=POINTER_MAX_SIZE,
                    )
                except AnvilError:  # no pointer yet, or the store is away: next time
                    continue
                if not result.modified:
                    continue
                self._etags[key] = result.etag
                sequence = _sequence_of(result.data)
                if sequence is not None:
                    woken += self.notify(key, sequence)
        return woken


def _sequence_of(envelope: bytes) -> int | None:
    """The ``sequence`` of a pointer envelope, read without verifying it: a hint carries no
    data, and every client verifies the pointer it then fetches."""
    try:
        payload = json.loads(base64.b64decode(json.loads(envelope)["payload"], validate=True))
        sequence = payload["sequence"]
    except (ValueError, KeyError, TypeError):
        return None
    return sequence if isinstance(sequence, int) and not isinstance(sequence, bool) else None


def _hub(app: Flask) -> HintHub:
    hub: HintHub = app.extensions["forge_hints"]
    return hub


def _can_hold_streams() -> bool:
    """Whether this server holds a stream without taking a worker or a pool thread: gevent
    (any server), or a server outside gunicorn (the threaded development server, the test
    client). gunicorn's ``sync`` and ``gthread`` workers would give each idle stream a whole
    worker or one of a few threads."""
    monkey = sys.modules.get("gevent.monkey")
    if monkey is not None and monkey.is_module_patched("socket"):
        return True
    software = str(request.environ.get("SERVER_SOFTWARE", ""))
    return not software.startswith("gunicorn")


def _problem(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    response = jsonify(error=message)
    response.status_code = status
    response.headers["Cache-Control"] = "no-store"
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def _latest_sequence(project_id: uuid.UUID, channel: str) -> int | None:
    from forge_app.extensions import db
    from forge_app.models.distribution import Channel, Publication

    value = db.session.scalar(
        select(func.max(Publication.sequence))
        .join(Channel, Channel.id == Publication.channel_id)
        .where(Channel.project_id == project_id, Channel.name == channel)
    )
    return None if value is None else int(value)


def _event(channel: str, sequence: int) -> str:
    data = json.dumps({"channel": channel, "sequence": sequence}, separators=(", ", ": "))
    return f"event: hint\ndata: {data}\n\n"


@bp.get("/live/hints")
@public
def hints() -> ResponseReturnValue:
    """Stream hints for one channel (Server-Sent Events)."""
    from forge_app.services.tokens import lookup_token_status

    header = request.headers.get("Authorization")
    status, token = lookup_token_status(header)
    if status != "ok" or token is None:
        HINT_STREAMS.labels(outcome="refused").inc()
        what = "was revoked" if status == "revoked" else "is missing or unknown"
        return _problem(
            401, f"the ACCESS_TOKEN {what}", {"WWW-Authenticate": 'Bearer realm="anvil"'}
        )
    channel = request.args.get("channel", "")
    try:
        project_id = uuid.UUID(request.args.get("project_id", ""))
    except ValueError:
        return _problem(400, "the query parameter 'project_id' must be a project id (a UUID)")
    if not _CHANNEL_RE.match(channel):
        return _problem(400, "the query parameter 'channel' must be a channel name")
    if project_id != token.project_id:
        HINT_STREAMS.labels(outcome="refused").inc()
        return _problem(403, "this ACCESS_TOKEN belongs to another project")
    app = current_app_object()
    if not _can_hold_streams():
        HINT_STREAMS.labels(outcome="full").inc()
        return _problem(
            503,
            "this FORGE runs workers that cannot hold streams (use the gevent worker class); "
            "poll instead",
            {"Retry-After": "300"},
        )
    limit = int(_setting(app, "FORGE_HINT_MAX_STREAMS"))
    stream = _hub(app).open((str(project_id), channel), limit)
    if stream is None:
        HINT_STREAMS.labels(outcome="full").inc()
        return _problem(
            503,
            "this FORGE holds as many hint streams as it may; poll instead",
            {"Retry-After": "30"},
        )
    HINT_STREAMS.labels(outcome="opened").inc()
    latest = _latest_sequence(project_id, channel)
    keepalive = _setting(app, "FORGE_HINT_KEEPALIVE_SECONDS")
    recheck = _setting(app, "FORGE_HINT_RECHECK_SECONDS")
    token_id = token.token_id
    response = Response(
        _events(app, stream, channel, latest, header, token_id, keepalive, recheck),
        mimetype="text/event-stream",
    )
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Accel-Buffering"] = "no"  # nginx: pass each event on at once
    return response


def _events(
    app: Flask,
    stream: _Stream,
    channel: str,
    latest: int | None,
    header: str | None,
    token_id: str,
    keepalive: float,
    recheck: float,
) -> Iterator[str]:
    """The stream's body; runs after the request's database session is closed."""
    hub = _hub(app)
    checked = time.monotonic()
    try:
        yield ": anvil hints\nretry: 5000\n\n"
        if latest is not None:
            HINTS_SENT.inc()
            yield _event(channel, latest)
        while True:
            sequence = stream.wait(keepalive)
            if sequence is not None:
                HINTS_SENT.inc()
                yield _event(channel, sequence)
                continue
            if time.monotonic() - checked >= recheck:
                checked = time.monotonic()
                if not _still_valid(app, header, token_id):
                    return
            yield ": keep-alive\n\n"
    finally:
        hub.close(stream)


def _still_valid(app: Flask, header: str | None, token_id: str) -> bool:
    from forge_app.services.tokens import lookup_token_status

    with app.app_context():
        try:
            status, token = lookup_token_status(header)
        except Exception:  # the database away for a moment: keep the stream
            return True
        return status == "ok" and token is not None and token.token_id == token_id


def init_app(app: Flask) -> None:
    """Register the stream endpoint (CSRF-exempt: bearer token, no cookies)."""
    from forge_app.extensions import csrf

    app.extensions["forge_hints"] = HintHub(app)
    app.register_blueprint(bp)
    csrf.exempt(bp)
