"""Serving the FORGE with gunicorn: gevent workers and Prometheus multiprocess metrics.

    # gunicorn.conf.py (infra/gunicorn.conf.py does this)
    from forge_app.serving import child_exit, prepare_metrics_dir
    prepare_metrics_dir()
    worker_class = "gevent"

Why gevent: a LIVE client may hold one idle hint stream (``/api/v1/live/hints``) open for
hours. With gevent each open stream is a greenlet of a few KiB parked on a socket, so one
worker holds thousands of them next to ordinary requests; the database driver (psycopg 3)
waits cooperatively under gevent's monkey-patching, and Flask views stay plain synchronous
code (``forge_app.gevent_worker`` keeps psycopg's own wait). Nothing else changes: no
second server, no ASGI port, one process model. gunicorn's
``sync`` workers would take a whole worker per stream (the hint endpoint refuses them with
503 so clients fall back to polling) and ``gthread`` a thread per stream.

:func:`prepare_metrics_dir` sets ``PROMETHEUS_MULTIPROC_DIR`` (an empty private folder) in
the master before any worker imports ``prometheus_client``; :func:`child_exit` drops a dead
worker's live gauges.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["child_exit", "prepare_metrics_dir"]


def prepare_metrics_dir(path: str | None = None) -> str:
    """Make ``path`` (else ``$PROMETHEUS_MULTIPROC_DIR``, else a new private temporary folder)
    an empty folder for prometheus-client's multiprocess files, and export it to the
    workers. Call it in gunicorn's master, before the workers start."""
    chosen = path or os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if chosen:
        folder = Path(chosen)
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        for stale in folder.glob("*.db"):  # counts of a previous run of the server
            stale.unlink()
    else:
        folder = Path(tempfile.mkdtemp(prefix="anvil-forge-metrics-"))
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(folder)
    return str(folder)


def child_exit(server: Any, worker: Any) -> None:
    """gunicorn hook (runs in the master): forget a dead worker's live gauges."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]
