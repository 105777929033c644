"""Heartbeats to the FORGE (with usage reports), and usage handed between processes.

Only the poller of a cache dir sends heartbeats, from its own thread (``_scheduler``); the
other processes hand their usage counts over through the disk cache.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

from anvil_client import _timing
from anvil_client._core import log
from anvil_client._heartbeat import HeartbeatSender, heartbeat_body
from anvil_client._poller import Poller
from anvil_client._usage import Report, Usage


class Reporter(Poller):
    """Send heartbeats; hand usage counts over to the process that sends them."""

    def _init_reporting(self, now: float) -> None:
        config = self.config
        self._heartbeat = None
        if config.forge_url and config.access_token:
            self._heartbeat = HeartbeatSender(config.forge_url, config.access_token)
        self._heartbeat_wake = threading.Event()
        self._next_heartbeat = now
        self._fast_heartbeats_until = now
        # Usage is counted only where it can be reported (a FORGE and a token).
        self._usage = None
        if config.usage and self._heartbeat is not None:
            self._usage = Usage(
                first_report_id=time.time_ns() // 1_000_000,
                started=_timing.format_time(_timing.utcnow()),
            )
        self._usage_refused_until = now - 1.0

    def _hand_over_usage(self) -> None:
        usage = self._usage
        if usage is None:
            return
        data = usage.hand_over()
        if data is not None:
            try:
                self._cache.hand_over_usage(data)
            except OSError as e:
                log.warning("anvil: cannot hand usage counts over in %s: %s", self._cache.dir, e)

    def _heartbeat_fields(self) -> dict[str, Any]:
        snapshot = self._snapshot
        return {
            "instance_id": self._instance_id,
            "hostname": os.uname().nodename,
            "project_id": self.config.project_id,
            "channel": self.config.channel,
            "mode": self.mode,
            "sequence": snapshot.sequence if snapshot is not None else None,
            "releases": [
                {
                    "prompt_set_id": r.prompt_set_id,
                    "version": r.version,
                    "content_sha256": r.content_sha256,
                }
                for r in (snapshot.releases if snapshot is not None else ())
            ],
            "last_error": self._last_error,
            "client_version": _timing.client_version(),
        }

    def _send_heartbeat(self) -> None:
        """Send one heartbeat now (with the pending usage report, if any)."""
        sender = self._heartbeat
        if sender is None:
            return
        self._heartbeat_due = False  # before reading: a change meanwhile makes it due again
        fields = self._heartbeat_fields()
        now = self._clock()
        self._reported_error = fields["last_error"]
        interval = self.config.heartbeat_interval
        if now < self._fast_heartbeats_until:
            interval = min(interval, _timing.FAST_HEARTBEAT_INTERVAL)
        self._next_heartbeat = now + interval
        report = self._usage_report() if now >= self._usage_refused_until else None
        if report is not None:
            fields["usage"] = report.body
        user_agent = f"anvil-client/{_timing.client_version()}"
        status, problem = sender.post(heartbeat_body(fields), user_agent)
        if report is not None and status == 400:
            # An old FORGE refuses keys it does not know: once more without usage, and no
            # usage to it for a while (the counts are kept for later).
            del fields["usage"]
            status, problem = sender.post(heartbeat_body(fields), user_agent)
            if problem is None:
                self._usage_refused_until = self._clock() + _timing.USAGE_RETRY_AFTER
                log.info("anvil: the FORGE does not take usage reports; retrying in an hour")
        elif report is not None and problem is None and self._usage is not None:
            self._usage.accepted(report)
        self._last_heartbeat = _timing.utcnow()
        if problem != self._heartbeat_error and problem is not None:
            log.warning("anvil: %s", problem)
        self._heartbeat_error = problem

    def _usage_report(self) -> Report | None:
        usage = self._usage
        if usage is None:
            return None
        if usage.pending is None:
            for data in self._cache.take_usage():
                usage.take_over(data)
        return usage.take_report(_timing.format_time(_timing.utcnow()) or "")
