"""The FORGE with 4 gunicorn workers (infra/gunicorn.conf.py, gevent) on a real PostgreSQL.

Shown with real processes on 127.0.0.1: the heartbeat limits hold across workers (exactly 12
accepted per instance and window, not 12 x workers), ``/metrics`` adds up every worker's
counts, the sign-in limits hold across workers, the Instances page shows the same rows from
every worker, and a publication made by another process wakes hint streams held by different
workers.
"""

from __future__ import annotations

import http.client
import json
import re
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from benchmarks.fleet_setup import (
    PASSWORD,
    Gunicorn,
    Seed,
    heartbeat_body,
    release_and_publish,
    seed_forge,
)
from forge_app.extensions import db
from tests.forge_app.conftest import postgres_server  # noqa: F401 - the session's PostgreSQL

pytestmark = [pytest.mark.integration, pytest.mark.slow]

METRICS_TOKEN = "multiworker-metrics-token"
WORKERS = 4


@pytest.fixture(scope="module")
def forge(
    postgres_server: Any,  # noqa: F811
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Gunicorn, Seed]]:
    name = f"mw_{uuid.uuid4().hex[:12]}"
    postgres_server.psql(f"CREATE DATABASE {name} TEMPLATE forge_template;")
    url = postgres_server.get_uri(name).replace("postgresql://", "postgresql+psycopg://", 1)
    root = tmp_path_factory.mktemp("multiworker")
    root.chmod(0o755)
    seed = seed_forge(url, root / "instance")
    server = Gunicorn.start(
        seed,
        workers=WORKERS,
        extra_env={
            "FORGE_HEARTBEAT_LIMIT": "12",
            "FORGE_METRICS_TOKEN": METRICS_TOKEN,
            "FORGE_HINT_KEEPALIVE_SECONDS": "1",
            # A gevent worker stops accepting when it holds this many connections, so the 12
            # hint streams below must spread over at least two workers (without a limit, an
            # idle worker may win every accept).
            "FORGE_WORKER_CONNECTIONS": "6",
        },
    )
    try:
        yield server, seed
    finally:
        server.stop()


def _port(server: Gunicorn) -> int:
    return int(server.url.rsplit(":", 1)[1])


def _parallel(count: int, action: Any) -> list[Any]:
    """``action(i)`` in ``count`` threads released together; the results in order."""
    barrier = threading.Barrier(count)
    results: list[Any] = [None] * count

    def run(i: int) -> None:
        barrier.wait()
        results[i] = action(i)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return results


def _heartbeat(server: Gunicorn, seed: Seed, instance_id: str) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", _port(server), timeout=60)
    try:
        connection.request(
            "POST",
            "/api/v1/live/heartbeat",
            body=heartbeat_body(seed.project_id, instance_id),
            headers={
                "Authorization": f"Bearer {seed.token}",
                "Content-Type": "application/json",
                "Connection": "close",
            },
        )
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def _metrics(server: Gunicorn) -> str:
    response = requests.get(
        f"{server.url}/metrics",
        headers={"Authorization": f"Bearer {METRICS_TOKEN}"},
        timeout=60,
    )
    assert response.status_code == 200
    return response.text


def _sample(text: str, name: str, **labels: str) -> float:
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    pattern = re.escape(f"{name}{{{wanted}}}") + r" ([0-9.e+]+)$" if labels else None
    for line in text.splitlines():
        if pattern is not None and re.match(pattern, line):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _pids_that_counted(seed: Seed) -> set[str]:
    return {
        p.name.split("_")[-1].split(".")[0]
        for p in (seed.instance_path / "metrics").glob("counter_*.db")
    }


def test_heartbeat_limits_and_metrics_hold_across_workers(
    forge: tuple[Gunicorn, Seed],
) -> None:
    server, seed = forge
    before = _metrics(server)
    instance_id = str(uuid.uuid4())
    statuses = Counter(_parallel(40, lambda _: _heartbeat(server, seed, instance_id)))
    assert statuses == {204: 12, 429: 28}  # not 12 per worker
    assert len(_pids_that_counted(seed)) >= 2  # several workers took part
    after = _metrics(server)
    for outcome, expected in (("accepted", 12), ("limited", 28)):
        delta = _sample(after, "anvil_forge_heartbeats_total", outcome=outcome) - _sample(
            before, "anvil_forge_heartbeats_total", outcome=outcome
        )
        assert delta == expected, outcome


def _signed_in(server: Gunicorn, email: str, password: str) -> tuple[requests.Session, int]:
    http = requests.Session()
    form = http.get(f"{server.url}/login", timeout=60).text
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', form)
    assert token is not None, "the sign-in form has a CSRF token"
    response = http.post(
        f"{server.url}/login",
        data={"email": email, "password": password, "csrf_token": token.group(1)},
        allow_redirects=False,
        timeout=120,
    )
    return http, response.status_code


def test_sign_in_limits_hold_across_workers(forge: tuple[Gunicorn, Seed]) -> None:
    server, _ = forge
    email = "rev@example.com"
    statuses = Counter(_parallel(20, lambda _: _signed_in(server, email, "wrong password!")[1]))
    assert statuses == {401: 5, 429: 15}  # five passwords checked, whichever worker


def test_every_worker_shows_the_same_instances(forge: tuple[Gunicorn, Seed]) -> None:
    server, seed = forge
    ids = [str(uuid.uuid4()) for _ in range(6)]
    assert _parallel(6, lambda i: _heartbeat(server, seed, ids[i])) == [204] * 6
    http, status = _signed_in(server, "owner@example.com", PASSWORD)
    assert status == 302
    pages = []
    for _ in range(12):  # new connections: spread over the workers
        http.close()
        page = http.get(f"{server.url}/projects/{seed.project_id}/instances", timeout=60)
        assert page.status_code == 200
        pages.append(sorted(set(re.findall(r"host-[0-9a-f]{8}", page.text))))
    assert all(found == pages[0] for found in pages)
    assert {f"host-{i[:8]}" for i in ids} <= set(pages[0])


def _open_stream(
    server: Gunicorn, seed: Seed, connections: list[http.client.HTTPConnection]
) -> http.client.HTTPResponse:
    connection = http.client.HTTPConnection("127.0.0.1", _port(server), timeout=60)
    connections.append(connection)
    connection.request(
        "GET",
        f"/api/v1/live/hints?project_id={seed.project_id}&channel=production",
        headers={"Authorization": f"Bearer {seed.token}"},
    )
    response = connection.getresponse()
    assert response.status == 200
    assert response.getheader("Content-Type", "").startswith("text/event-stream")
    return response


def _next_hint(response: http.client.HTTPResponse) -> dict[str, Any]:
    event = None
    for _ in range(1000):
        line = response.readline().decode()
        if not line:
            raise AssertionError("the stream ended")
        if line.startswith("event: "):
            event = line.strip().split(": ", 1)[1]
        elif line.startswith("data: ") and event == "hint":
            found: dict[str, Any] = json.loads(line.split(": ", 1)[1])
            return found
    raise AssertionError("no hint")


def test_a_publication_wakes_streams_on_every_worker(forge: tuple[Gunicorn, Seed]) -> None:
    server, seed = forge
    connections: list[http.client.HTTPConnection] = []
    streams = [_open_stream(server, seed, connections) for _ in range(12)]
    try:
        app = seed.app()  # another process than the workers publishes
        try:
            sequence = release_and_publish(app, seed, "Hello {{ name }}!")
        finally:
            with app.app_context():
                db.engine.dispose()
        for response in streams:
            found = _next_hint(response)
            while found["sequence"] < sequence:  # a first hint of an earlier publication
                found = _next_hint(response)
            assert found == {"channel": "production", "sequence": sequence}
        metrics = _metrics(server)
        assert _sample(metrics, "anvil_forge_hint_streams_total", outcome="opened") >= 12
    finally:
        for response in streams:
            response.close()
        for connection in connections:
            connection.close()
    openers = {
        pid
        for pid in _pids_that_counted(seed)
        if _opened_in(seed.instance_path / "metrics" / f"counter_{pid}.db")
    }
    assert len(openers) >= 2  # the streams were held by several workers


def _opened_in(path: Path) -> bool:
    from prometheus_client.multiprocess import MultiProcessCollector

    for metric in MultiProcessCollector.merge([str(path)], accumulate=True):
        for sample in metric.samples:
            if sample.name == "anvil_forge_hint_streams_total" and sample.value > 0:
                return sample.labels.get("outcome") == "opened"
    return False
