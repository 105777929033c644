"""The scheduler: the background threads, when they act, hints, and life after ``fork()``.

One thread runs :meth:`Scheduler._tick` (disk checks, leadership, polls with jitter and
backoff, see ``_timing``); the leader sends heartbeats from a second thread (a slow FORGE never
delays a poll) and, with ``hints``, holds the FORGE's hint stream in a third.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import weakref

from anvil_client import _timing
from anvil_client._core import log
from anvil_client._reporting import Reporter
from anvil_client._usage import Usage
from anvil_client.errors import AnvilError


class Scheduler(Reporter):
    """Run the poller, the heartbeats and the hint stream in the background."""

    def _init_schedule(self, now: float) -> None:
        """Everything is due at once; the hint stream is built (not started) when configured."""
        config = self.config
        self._next_poll = now
        self._next_disk_check = now
        self._next_full_compare = now
        self._next_share = now
        self._next_hand_over = now + _timing.USAGE_HAND_OVER_INTERVAL
        self._hint_poll_at = None
        self._last_hint_poll = now - _timing.HINT_MIN_SPACING
        self._hints = None
        if config.hints and config.forge_url and config.access_token:
            from anvil_client._hints import HintStream  # only clients that hold the stream

            self._hints = HintStream(
                config.forge_url,
                config.access_token,
                project_id=config.project_id,
                channel=config.channel,
                on_hint=self._on_hint,
                active=self._holds_hint_stream,
                user_agent=f"anvil-client/{_timing.client_version()}",
            )

    def _begin(self, *, start: bool) -> None:
        """The client is built: follow it across ``fork()`` and, with ``start``, run it."""
        _CLIENTS.add(self)
        if start:
            self._start_thread()

    def _start_thread(self) -> None:
        thread = threading.Thread(
            target=self._run, name=f"anvil-{self.config.channel}", daemon=True
        )
        self._thread = thread
        thread.start()
        if self._heartbeat is not None:
            beats = threading.Thread(
                target=self._run_heartbeats,
                name=f"anvil-heartbeat-{self.config.channel}",
                daemon=True,
            )
            self._heartbeat_thread = beats
            beats.start()
        if self._hints is not None:
            self._hints.start()

    def _run(self) -> None:
        while not self._closed.is_set():
            try:
                delay = self._tick()
            except Exception:  # the poller must survive anything; serving never depends on it
                log.exception("anvil: unexpected error in the background poller")
                delay = min(self.config.poll_interval, 30.0)
            self._wake.wait(max(delay, 0.001))
            self._wake.clear()

    def _tick(self) -> float:
        """One step of the background loop; returns how long to sleep.

        An idle poll of the leader is one conditional GET; three ``stat`` calls at most once
        a second look for what other processes wrote; nothing is written (README "Idle
        polls, and what sibling processes see").
        """
        now = self._clock()
        if now >= self._next_disk_check:
            self._look_at_disk(now)
        if not self._cache.leading and self._cache.try_lead():
            log.debug("anvil: this process (pid %d) polls for %s", os.getpid(), self._cache.dir)
            self._next_poll = now
            self._want_heartbeat()
            if self._hints is not None:
                self._hints.nudge()
        wake_at = [self._next_disk_check]
        if self._cache.leading:
            if self.mode == "accepting":
                wake_at.extend(self._poll_if_due(now))
        elif self._usage is not None and now >= self._next_hand_over:
            self._next_hand_over = now + _timing.USAGE_HAND_OVER_INTERVAL
            self._hand_over_usage()
        if self._usage is not None and not self._cache.leading:
            wake_at.append(self._next_hand_over)
        return min(wake_at) - self._clock()

    def _look_at_disk(self, now: float) -> None:
        """The disk check of :meth:`_tick` (a full compare now and then), and usage sampling."""
        full = now >= self._next_full_compare
        self._check_disk(full=full)
        # The poller learns of new pointers from its own polls: a second is quick enough
        # for `anvil mode`/`anvil sync`. The others follow a short interval's pace.
        pace = _timing.DISK_CHECK_INTERVAL
        if not self._cache.leading:
            pace = min(pace, self.config.poll_interval)
        self._next_disk_check = now + pace
        if full:
            self._next_full_compare = now + max(
                10 * self.config.poll_interval, _timing.FULL_COMPARE_MIN
            )
        if self._usage is not None:
            self._usage.arm_sampling()  # each counter notes the names of its next render

    def _poll_if_due(self, now: float) -> list[float]:
        """The leader's poll (when due, or a hint made it due); returns when to wake for it."""
        hint_at = self._hint_poll_at
        if hint_at is not None and now >= hint_at:
            self._hint_poll_at = None
            self._last_hint_poll = now
            self._next_poll = min(self._next_poll, now)
        if self._clock() >= self._next_poll:
            with contextlib.suppress(AnvilError):  # recorded for status(), backs off
                # The disk was looked at within the last second (above).
                self._poll(conditional=True, disk_checked=True)
        wake_at = [self._next_poll]
        if self._hint_poll_at is not None:
            wake_at.append(self._hint_poll_at)
        return wake_at

    # --- hints ---------------------------------------------------------------------------

    def _holds_hint_stream(self) -> bool:
        return not self._closed.is_set() and self._cache.leading and self.mode == "accepting"

    def _on_hint(self, sequence: int) -> None:
        """The hint stream announced ``sequence``: poll soon (jittered, at most once a second)."""
        snapshot = self._snapshot
        if snapshot is not None and sequence <= snapshot.sequence:
            return  # already applied (or a replayed hint)
        if self._hint_poll_at is not None:
            return  # one hint poll is already due
        self._hint_poll_at = _timing.hint_poll_time(self._clock(), self._last_hint_poll)
        self._wake.set()

    # --- heartbeats and usage ------------------------------------------------------------

    def _run_heartbeats(self) -> None:
        """The heartbeat thread: a slow FORGE never delays a poll."""
        while not self._closed.is_set():
            delay = 60.0
            try:
                if self._cache.leading:
                    if self._heartbeat_due or self._clock() >= self._next_heartbeat:
                        self._send_heartbeat()
                    delay = self._next_heartbeat - self._clock()
            except Exception:  # like the poller: report, never stop
                log.exception("anvil: unexpected error in the heartbeat thread")
                delay = 30.0
            self._heartbeat_wake.wait(max(delay, 0.01))
            self._heartbeat_wake.clear()

    # --- lifecycle -----------------------------------------------------------------------

    def close(self) -> None:
        """Stop the background thread, give up polling for the cache dir, close the store.

        Prompts already loaded can still be rendered afterwards.
        """
        if self._closed.is_set():
            return
        self._closed.set()
        self._wake.set()
        self._heartbeat_wake.set()
        if self._hints is not None:
            self._hints.close()
        for thread in (self._thread, self._heartbeat_thread):
            if thread is not None and thread is not threading.current_thread():
                thread.join(timeout=30)
        if self._heartbeat is not None:
            self._heartbeat.close()
        # What was counted and is in no report yet waits in the disk cache for the next leader
        # (a report sent but not yet accepted is not: the FORGE may have recorded it).
        self._hand_over_usage()
        with self._lock:
            self._cache.resign()
            if self._owns_store and self._store is not None:
                self._store.close()
                self._store = None
        _CLIENTS.discard(self)

    def _after_fork_in_child(self) -> None:
        """Threads do not survive ``fork()``: new locks, no inherited leadership, a new poller."""
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._heartbeat_wake = threading.Event()
        self._heartbeat_thread = None
        if self._heartbeat is not None:
            # The parent's kept-alive connection: closing our copy of the descriptor sends
            # nothing (no shutdown), the parent keeps using it.
            self._heartbeat.close()
            self._heartbeat = self._heartbeat.fresh()
        if self._usage is not None:
            # Counts made before the fork are the parent's to report.
            self._usage = Usage(
                first_report_id=time.time_ns() // 1_000_000,
                started=_timing.format_time(_timing.utcnow()),
            )
            if self._snapshot is not None:
                self._snapshot.served.clear()  # their counters: the next render attaches new ones
        if self._hints is not None:
            self._hints.forget_after_fork()
            self._hints = self._hints.fresh()
        closed, self._closed = self._closed.is_set(), threading.Event()
        if closed:
            self._closed.set()
        self._cache.forget_lock_after_fork()
        if self._owns_store and self._store is not None:
            # Its connections belong to the parent; keep the object alive, never use it again.
            self._abandoned.append(self._store)
            self._store = None
        self._thread = None
        self._disk_sig = None
        now = self._clock()
        self._next_disk_check = self._next_full_compare = now
        if self._started and not self._closed.is_set():
            self._start_thread()


_CLIENTS: weakref.WeakSet[Scheduler] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for client in list(_CLIENTS):
        client._after_fork_in_child()


os.register_at_fork(after_in_child=_after_fork_in_child)
