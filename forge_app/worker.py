"""``anvil-forge worker``: runs due scheduled jobs and evaluates the health guards.

    $ anvil-forge worker                # until SIGTERM / Ctrl-C
    $ anvil-forge worker --once         # one round (cron, tests)

Each round: jobs whose worker died are released (:func:`forge_app.scheduling.release_stale`),
due jobs run (each claimed by exactly one worker, see :mod:`forge_app.scheduling`), every
enabled guard is evaluated (:func:`forge_app.guard_actions.evaluate_all`), and old usage buckets are
pruned. Any number of workers may run beside any number of FORGE processes.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from dataclasses import dataclass, field

from flask import Flask

__all__ = ["Round", "run_round", "run_worker", "worker_name"]

log = logging.getLogger(__name__)


def worker_name() -> str:
    return f"{socket.gethostname()[:40]}:{os.getpid()}:{threading.get_ident() % 100000}"


@dataclass
class Round:
    """What one round did."""

    jobs: list[int] = field(default_factory=list)
    guard_actions: list[str] = field(default_factory=list)
    stale: int = 0


def run_round(app: Flask, name: str | None = None) -> Round:
    """One round of the worker, in its own app context."""
    from forge_app import guard_actions, scheduling
    from forge_app.extensions import db
    from forge_app.models import utcnow
    from forge_app.usage import DEFAULT_RETENTION_DAYS, prune_usage

    name = name or worker_name()
    done = Round()
    with app.app_context():  # its teardown closes the round's session
        done.stale = scheduling.release_stale()
        done.jobs = scheduling.run_due_jobs(name)
        done.guard_actions = [
            f"{a.kind} on channel {a.channel_id} (sequence {a.judged_sequence})"
            for a in guard_actions.evaluate_all()
        ]
        prune_usage(
            db.session,
            now=utcnow(),
            retention_days=int(
                app.config.get("FORGE_USAGE_RETENTION_DAYS", DEFAULT_RETENTION_DAYS)
            ),
        )
        db.session.commit()
    return done


def run_worker(
    app: Flask, *, interval: float = 5.0, stop: threading.Event | None = None, once: bool = False
) -> None:
    """Run rounds every ``interval`` seconds until ``stop`` is set (or one round)."""
    stop = stop or threading.Event()
    name = worker_name()
    log.info("worker %s started (every %.1f s)", name, interval)
    while True:
        try:
            done = run_round(app, name)
            if done.jobs or done.guard_actions or done.stale:
                log.info(
                    "worker %s: ran jobs %s, guard moves %s, released %d",
                    name,
                    done.jobs,
                    done.guard_actions,
                    done.stale,
                )
        except Exception:  # the database may be away for a moment; try again next round
            log.exception("worker round failed")
        if once or stop.wait(interval):
            break
    log.info("worker %s stopped", name)
