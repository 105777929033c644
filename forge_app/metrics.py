"""Prometheus metrics of the FORGE: ``GET /metrics`` (issue 14 §2).

    $ curl -H "Authorization: Bearer $FORGE_METRICS_TOKEN" http://127.0.0.1:8000/metrics

Counted in the process that handles the request (``prometheus-client``): heartbeats by outcome,
request latency by route group, store errors. Under gunicorn every worker is its own process,
so the counters use prometheus-client's *multiprocess mode*: set ``PROMETHEUS_MULTIPROC_DIR``
to an empty folder writable by the workers before they start (``forge_app.serving`` does it
for its gunicorn configuration) and the scrape adds up every worker's files. Read from the
database at scrape time, so every process answers the same: publications by kind (publish,
rollback, rollout, remove, reencrypt) and instances by state (applied, drift, silent, error,
pending), cached for ``SCRAPE_CACHE_SECONDS`` per process.

Access: ``FORGE_METRICS_TOKEN`` set → a request needs ``Authorization: Bearer <token>``
(compared in constant time); unset → ``/metrics`` answers 404 unless
``FORGE_METRICS_PUBLIC=1`` (bind-only deployments where the port is not reachable).
"""

from __future__ import annotations

import hmac
import os
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

from flask import Blueprint, Flask, current_app, g, request
from flask.typing import ResponseReturnValue
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from werkzeug.wrappers import Response

from forge_app.authz import public

__all__ = [
    "HEARTBEATS",
    "HINT_STREAMS",
    "REQUEST_LATENCY",
    "STORE_ERRORS",
    "bp",
    "count_store_error",
    "init_app",
]

#: How long one process reuses the database figures of its last scrape.
SCRAPE_CACHE_SECONDS = 10.0

bp = Blueprint("metrics", __name__)

HEARTBEATS = Counter(
    "anvil_forge_heartbeats",
    "Heartbeats received, by outcome (accepted, invalid, unauthorized, revoked, forbidden, "
    "limited, too_many_instances).",
    ["outcome"],
)
USAGE_REPORTS = Counter(
    "anvil_forge_usage_reports",
    "Usage reports in accepted heartbeats, by outcome (recorded, duplicate).",
    ["outcome"],
)
STORE_ERRORS = Counter(
    "anvil_forge_store_errors",
    "Errors talking to the object store, by where they happened (serve, publish).",
    ["where"],
)
HINT_STREAMS = Counter(
    "anvil_forge_hint_streams",
    "Hint streams opened, by outcome (opened, refused, full).",
    ["outcome"],
)
HINTS_SENT = Counter("anvil_forge_hints_sent", "Hint events written to streams.")
REQUEST_LATENCY = Histogram(
    "anvil_forge_request_seconds",
    "Request handling time (to the first byte of the answer), by route group and status class.",
    ["group", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)

_GROUPS = {
    "api": "heartbeat",
    "hints": "hints",
    "store": "store",
    "rest": "rest",
    "metrics": "metrics",
}


def count_store_error(where: str) -> None:
    """Count one store failure (``where``: ``serve`` or ``publish``)."""
    STORE_ERRORS.labels(where=where).inc()


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


# --- request latency ---------------------------------------------------------------------------


def _start_timer() -> None:
    g.metrics_started = time.perf_counter()


def _observe(response: Response) -> Response:
    started = g.pop("metrics_started", None)
    if started is not None:
        group = _GROUPS.get(request.blueprint or "", "pages")
        REQUEST_LATENCY.labels(group=group, status=f"{response.status_code // 100}xx").observe(
            time.perf_counter() - started
        )
        if group == "store" and response.status_code >= 500:
            count_store_error("serve")
    return response


# --- figures read from the database at scrape time ------------------------------------------


class DatabaseCollector(Collector):
    """Publications by kind and instances by state, from the database (cached briefly)."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self._lock = threading.Lock()
        self._cached: tuple[float, list[Any]] | None = None

    def describe(self) -> list[Any]:
        return []  # no database query when the collector is registered

    def collect(self) -> Iterator[Any]:
        with self._lock:
            now = time.monotonic()
            if self._cached is None or now - self._cached[0] > SCRAPE_CACHE_SECONDS:
                self._cached = (now, self._families())
            yield from self._cached[1]

    def _families(self) -> list[Any]:
        from forge_app.extensions import db
        from forge_app.models.distribution import Publication

        publications = CounterMetricFamily(
            "anvil_forge_publications",
            "Pointers the FORGE wrote (DB), by kind (publish, rollback, rollout, remove, "
            "reencrypt).",
            labels=["kind"],
        )
        states = GaugeMetricFamily(
            "anvil_forge_instances",
            "LIVE instances not archived, by state: applied (serves what its channel says), "
            "drift (serves something else), pending (has not caught up yet), error (reports "
            "an error), silent (no heartbeat within FORGE_INSTANCE_STALE_SECONDS).",
            labels=["state"],
        )
        with self.app.app_context():  # its session closes with it
            for kind, count in db.session.execute(
                select(Publication.kind, func.count(Publication.id)).group_by(Publication.kind)
            ):
                publications.add_metric([str(kind)], float(count))
            for state, count in sorted(instance_states(db.session).items()):
                states.add_metric([state], float(count))
        return [publications, states]


def instance_states(session: Any, *, stale_after: timedelta | None = None) -> dict[str, int]:
    """Instances (not archived) by state, judged against each channel's newest publication
    as the Instances page judges them (:func:`forge_app.services.instances.describe_instances`)."""
    from forge_app.models.distribution import Channel, Publication
    from forge_app.models.instances import LiveInstance
    from forge_app.services.instances import (
        DEFAULT_STALE_SECONDS,
        ChannelTarget,
        describe_instances,
    )

    if stale_after is None:
        try:
            from forge_app.services.instance_pages import stale_after as configured

            stale_after = configured()
        except RuntimeError:  # pragma: no cover - outside an app context
            stale_after = timedelta(seconds=DEFAULT_STALE_SECONDS)
    newest = (
        select(Publication.channel_id, func.max(Publication.sequence).label("sequence"))
        .group_by(Publication.channel_id)
        .subquery()
    )
    targets: dict[tuple[Any, str], ChannelTarget] = {}
    for project_id, name, publication in session.execute(
        select(Channel.project_id, Channel.name, Publication)
        .join(Publication, Publication.channel_id == Channel.id)
        .join(
            newest,
            (newest.c.channel_id == Publication.channel_id)
            & (newest.c.sequence == Publication.sequence),
        )
    ):
        previous = publication.previous_releases
        targets[(project_id, name)] = ChannelTarget.from_records(
            name,
            publication.sequence,
            publication.releases,
            rollout_percent=publication.rollout_percent,
            previous=previous if publication.rollout_percent is not None else None,
        )
    counts = {"applied": 0, "drift": 0, "pending": 0, "error": 0, "silent": 0}
    rows = session.scalars(select(LiveInstance).where(LiveInstance.archived_at.is_(None)))
    for instance in rows:
        target = targets.get((instance.project_id, instance.channel))
        view = describe_instances(
            [instance],
            targets={instance.channel: target} if target is not None else {},
            revoked_tokens=set(),
            stale_after=stale_after,
        )[0]
        if view.stale:
            counts["silent"] += 1
        elif instance.last_error or view.revoked:
            counts["error"] += 1
        elif view.drift:
            counts["drift"] += 1
        elif target is None or not view.behind:
            counts["applied"] += 1
        else:
            counts["pending"] += 1
    return counts


# --- the endpoint -------------------------------------------------------------------------------


def _registry(app: Flask) -> CollectorRegistry:
    registry: CollectorRegistry = app.extensions["forge_metrics_registry"]
    return registry


def _allowed() -> bool:
    token = str(current_app.config.get("FORGE_METRICS_TOKEN") or "")
    if not token:
        return _flag(current_app.config.get("FORGE_METRICS_PUBLIC"))
    header = request.headers.get("Authorization", "")
    scheme, _, presented = header.partition(" ")
    if scheme.lower() != "bearer":
        presented = ""
    return hmac.compare_digest(presented.strip().encode(), token.encode())


def _flag(value: Any) -> bool:
    return str(value or "").strip().lower() in ("1", "true", "yes", "on")


@bp.get("/metrics")
@public
def metrics() -> ResponseReturnValue:
    if not _allowed():
        if not current_app.config.get("FORGE_METRICS_TOKEN"):
            return Response("not found\n", status=404, mimetype="text/plain")
        return Response(
            "a metrics token is needed (Authorization: Bearer <FORGE_METRICS_TOKEN>)\n",
            status=401,
            mimetype="text/plain",
            headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
        )
    body = generate_latest(_registry(current_app))
    return Response(body, mimetype=CONTENT_TYPE_LATEST, headers={"Cache-Control": "no-store"})


def init_app(app: Flask) -> None:
    """Register ``/metrics`` and the latency hooks; settings ``FORGE_METRICS_TOKEN`` and
    ``FORGE_METRICS_PUBLIC`` from the app config, else the environment."""
    for name in ("FORGE_METRICS_TOKEN", "FORGE_METRICS_PUBLIC"):
        if not app.config.get(name) and os.environ.get(name):
            app.config[name] = os.environ[name]
    registry = CollectorRegistry(auto_describe=True)
    if multiprocess_dir():
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        for collector in (
            HEARTBEATS,
            USAGE_REPORTS,
            STORE_ERRORS,
            HINT_STREAMS,
            HINTS_SENT,
            REQUEST_LATENCY,
        ):
            registry.register(collector)
    registry.register(DatabaseCollector(app))
    app.extensions["forge_metrics_registry"] = registry
    app.before_request(_start_timer)
    app.after_request(_observe)
    app.register_blueprint(bp)
