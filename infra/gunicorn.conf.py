"""gunicorn settings for the FORGE in production (``infra/anvil-forge.service`` uses this file).

    $ gunicorn --config infra/gunicorn.conf.py          # serves forge_app:create_app()

Every value can be changed without editing the file, through the environment (the systemd
unit's ``/etc/anvil/forge.env``):

- ``FORGE_BIND``: address to listen on; default ``127.0.0.1:8000`` (behind a TLS reverse proxy:
  then set ``FORGE_TRUSTED_PROXIES=1``). Several addresses: separate them with commas.
- ``FORGE_WORKERS``: worker processes; default ``2 * cores + 1``, at most 8. The FORGE keeps
  no per-process state that matters across requests (limits live in the database), so any
  number of workers is correct; PostgreSQL is required for more than one host.
- ``FORGE_TIMEOUT``: seconds a worker may spend on one request before it is restarted
  (default 60: publishing re-encrypts every entry of a channel).
- ``FORGE_WORKER_CLASS``: ``gevent`` (default: a LIVE client's idle hint stream then costs a
  greenlet, not a worker; see ``forge_app/serving.py``) or ``sync``/``gthread`` (the hint
  endpoint then answers 503 and clients poll). ``FORGE_WORKER_CONNECTIONS`` (4000) bounds the
  open connections of one gevent worker.
- ``FORGE_MAX_REQUESTS``: requests after which a worker is recycled (20000, jitter 10 %).
- ``FORGE_ACCESS_LOG``: ``-`` (stdout, the journal; default) or a file path; ``off`` disables it.
- ``PROMETHEUS_MULTIPROC_DIR``: where the workers write their ``/metrics`` counts (emptied at
  start; it must exist; default a new private temporary folder; the unit uses ``/run/anvil-forge``).

Logs go to stdout/stderr, so journald (or your container runtime) collects them. Request lines
are logged without headers: ACCESS_TOKENs (``Authorization: Bearer``) and cookies never reach
the log.
"""

from __future__ import annotations

import multiprocessing
import os

wsgi_app = "forge_app:create_app()"

bind = [part.strip() for part in os.environ.get("FORGE_BIND", "127.0.0.1:8000").split(",")]
workers = int(os.environ.get("FORGE_WORKERS", min(2 * multiprocessing.cpu_count() + 1, 8)))
# gevent: an idle hint stream (/api/v1/live/hints) costs a greenlet, not a worker (see
# forge_app/serving.py and forge_app/gevent_worker.py: gevent with psycopg's C wait kept).
# FORGE_WORKER_CONNECTIONS bounds the open connections per worker.
worker_class = os.environ.get("FORGE_WORKER_CLASS", "forge_app.gevent_worker.ForgeGeventWorker")
worker_connections = int(os.environ.get("FORGE_WORKER_CONNECTIONS", "4000"))
timeout = int(os.environ.get("FORGE_TIMEOUT", "60"))
graceful_timeout = 30  # the unit's TimeoutStopSec is a little longer
keepalive = 5  # seconds; the reverse proxy keeps connections to us open between requests

# Recycle workers now and then (a leak stays bounded); the jitter keeps them from restarting
# all at once.
# (Each recycling closes that worker's hint streams; clients reconnect with backoff.)
max_requests = int(os.environ.get("FORGE_MAX_REQUESTS", "20000"))
max_requests_jitter = max_requests // 10

# Not preloaded: each worker builds its own app, database pool and boto3 client after the
# fork, so no connection or lock is ever shared between processes.
preload_app = False

# Request size limits (gunicorn's defaults, stated): a request line or header larger than
# this is refused before Flask sees it.
limit_request_line = 8190
limit_request_fields = 100
limit_request_field_size = 8190

# A worker heartbeat file in memory rather than on a disk that may stall.
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None  # noqa: S108 - gunicorn's documented choice

# gunicorn >= 24 opens a control socket in $HOME by default; nothing here uses gunicornc
# (signals do the same: HUP reloads, TTIN/TTOU add or remove a worker), and the unit's
# ProtectHome forbids it. Older gunicorn versions ignore the setting.
control_socket_disable = True

# Files the FORGE creates (instance folder, generated development secrets) are private.
umask = 0o077

_access = os.environ.get("FORGE_ACCESS_LOG", "-")
accesslog = None if _access == "off" else _access
errorlog = "-"
loglevel = os.environ.get("FORGE_LOG_LEVEL", "info")
# Remote address, request line, status, bytes, duration in microseconds, user agent.
access_log_format = '%(h)s "%(r)s" %(s)s %(B)s %(D)sus "%(a)s"'

proc_name = "anvil-forge"

# Prometheus (/metrics): every worker writes its counts into PROMETHEUS_MULTIPROC_DIR (emptied
# here, at the master's start); a dead worker's live gauges are dropped.
from forge_app.serving import child_exit, prepare_metrics_dir  # noqa: E402

prepare_metrics_dir()
__all__ = ["child_exit"]
