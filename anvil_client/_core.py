"""The state every layer of :class:`~anvil_client.AnvilClient` shares, and its few shared steps.

``AnvilClient`` is built in layers, one module each, every layer a subclass of the one below:
``ClientCore`` (this: the state, errors, announcing a release) < ``DiskSync`` (disk cache and
bootstrap file) < ``Poller`` (poll the store, verify, apply) < ``Reporter`` (heartbeats and
usage) < ``Scheduler`` (the background threads, hints, fork handling) < ``AnvilClient`` (the
public front: construction, serving, status). ``_default`` holds the module-level client.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING

from anvil_client._cache import CacheState, DiskCache, Signature
from anvil_client._config import ClientConfig, Mode
from anvil_client._heartbeat import HeartbeatSender
from anvil_client._snapshot import Snapshot
from anvil_client._timing import FAST_HEARTBEAT_WINDOW, STATE_SHARE_MIN
from anvil_client._usage import Usage
from anvil_client._verify import Verifier
from anvil_client.stores import ObjectStore
from anvil_client.wire import CompiledPrompt, pointer_key

if TYPE_CHECKING:
    from anvil_client._hints import HintStream

log = logging.getLogger("anvil_client")
log.addHandler(logging.NullHandler())  # a library logs only where the app configures it


class ClientCore:
    """The attributes of a client and the steps all layers use.

    The attributes that start empty (``None``, ``0``) have their start value here; the layers'
    ``_init_*`` methods, called by ``AnvilClient.__init__``, set the others.
    """

    config: ClientConfig
    _verifier: Verifier
    _pointer_key: str
    _cache: DiskCache
    _store: ObjectStore | None
    _owns_store: bool
    _abandoned: list[ObjectStore]
    #: What is served: replaced by one reference assignment, never mutated.
    _snapshot: Snapshot | None = None
    _fallbacks: dict[str, CompiledPrompt]
    _clock: Callable[[], float]
    _lock: threading.RLock
    _wake: threading.Event
    _closed: threading.Event
    _thread: threading.Thread | None = None
    _started: bool
    _instance_id: str
    _mode_override: Mode | None = None
    # what the disk cache holds, as last seen
    _floor: int
    _etag: str | None
    _etag_sequence: int | None
    _shared: CacheState | None = None
    _disk_sig: Signature
    # polls and their outcome
    _last_check: datetime | None = None
    _last_sync: datetime | None = None
    _last_error: str | None = None
    _shared_error: str | None = None
    _failures: int = 0
    _next_poll: float
    _next_disk_check: float
    _next_full_compare: float
    _next_share: float
    # heartbeats, usage and hints
    _heartbeat: HeartbeatSender | None
    _heartbeat_wake: threading.Event
    _heartbeat_thread: threading.Thread | None = None
    _heartbeat_due: bool = True
    _next_heartbeat: float
    _fast_heartbeats_until: float
    _reported_error: str | None = None
    _last_heartbeat: datetime | None = None
    _heartbeat_error: str | None = None
    _usage: Usage | None
    _usage_refused_until: float
    _next_hand_over: float
    _hints: HintStream | None
    _hint_poll_at: float | None
    _last_hint_poll: float

    def _init_state(self, config: ClientConfig, *, start: bool) -> None:
        """The configuration, the verifier, the disk cache's handle and what is served."""
        self.config = config
        self._verifier = Verifier(
            project_id=config.project_id,
            channel=config.channel,
            trusted_keys=config.keys,
            token=config.token,
            max_bundle_size=config.max_bundle_size,
            token_env=config.access_token_env,
        )
        self._pointer_key = pointer_key(config.project_id, config.channel)
        self._cache = DiskCache(config.cache_dir, config.project_id, config.channel)
        self._store = None if isinstance(config.store, str) else config.store
        self._owns_store = isinstance(config.store, str)
        self._abandoned = []
        self._fallbacks = {}
        self._clock = time.monotonic
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._closed = threading.Event()
        self._started = start

    @property
    def mode(self) -> Mode:
        """The effective mode: the ``anvil mode`` override if set, else the configured one."""
        return self._mode_override or self.config.mode

    @property
    def _share_period(self) -> float:
        return max(2 * self.config.poll_interval, STATE_SHARE_MIN)

    def _announce(self, snapshot: Snapshot) -> None:
        log.info(
            "anvil: serving %s version %s (sequence %d, %d prompts, from %s)",
            self.config.channel,
            snapshot.version,
            snapshot.sequence,
            len(snapshot.prompts),
            snapshot.source,
        )
        self._fast_heartbeats_until = self._clock() + FAST_HEARTBEAT_WINDOW
        self._want_heartbeat()
        self._wake.set()

    def _want_heartbeat(self) -> None:
        self._heartbeat_due = True
        self._heartbeat_wake.set()

    def _set_error(self, message: str | None) -> None:
        if message != self._last_error:
            if message is not None:
                log.warning("anvil: %s (still serving the last verified prompts)", message)
            self._last_error = message
        if message != self._reported_error:
            self._want_heartbeat()
