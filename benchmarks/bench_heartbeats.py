"""Heartbeat ingestion: gunicorn (4 workers, infra/gunicorn.conf.py) on PostgreSQL (pgserver).

    .venv/bin/python benchmarks/bench_heartbeats.py [--seconds 10] [--instances 4000]
        [--processes 3] [--threads 16] [--workers 4] [--worker-class gevent] [--usage]

Clients: ``--processes`` processes x ``--threads`` threads, each with one keep-alive HTTP
connection, sending DESIGN §7 heartbeats (with ``--usage`` a 5-prompt usage report each) for
``--instances`` distinct instances as fast as the FORGE answers, for ``--seconds``. Prints the
rate, latency percentiles, every status code, and the CPU the FORGE (master + workers) and
PostgreSQL spent per heartbeat. The goal of issue 14: ≥ 1,500 heartbeats/s, 0 errors. The
per-token limit is raised for the run (``FORGE_HEARTBEAT_TOKEN_LIMIT``): one token sends them
all; the per-instance limit stays (12 a minute; each instance sends fewer).
"""

from __future__ import annotations

import argparse
import http.client
import multiprocessing
import statistics
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.fleet_setup import (
    Gunicorn,
    Postgres,
    cpu_delta,
    heartbeat_body,
    seed_forge,
    tree_cpu,
    usage_payload,
)

GOAL = 1500.0


def _client(
    port: int,
    token: str,
    project_id: str,
    instances: list[str],
    seconds: float,
    threads: int,
    usage: bool,
    start_at: float,
    out: Any,
) -> None:
    statuses: Counter[int] = Counter()
    latencies: list[float] = []
    lock = threading.Lock()
    slices = [instances[i::threads] for i in range(threads)]
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def run(mine: list[str]) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        local: Counter[int] = Counter()
        times: list[float] = []
        report = 0
        while time.time() < start_at:
            time.sleep(0.005)
        end = start_at + seconds
        i = 0
        while time.time() < end if seconds > 0 else i < len(mine):
            instance = mine[i % len(mine)]
            i += 1
            report += 1
            body = heartbeat_body(
                project_id, instance, usage=usage_payload(report) if usage else None
            )
            started = time.perf_counter()
            try:
                connection.request("POST", "/api/v1/live/heartbeat", body=body, headers=headers)
                response = connection.getresponse()
                response.read()
                local[response.status] += 1
            except (OSError, http.client.HTTPException):
                local[0] += 1
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            times.append(time.perf_counter() - started)
        connection.close()
        with lock:
            statuses.update(local)
            latencies.extend(times)

    workers = [threading.Thread(target=run, args=(s,)) for s in slices if s]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    out.put((dict(statuses), latencies))


def drive(
    url: str,
    token: str,
    project_id: str,
    *,
    instances: list[str],
    seconds: float,
    processes: int,
    threads: int,
    usage: bool = False,
) -> tuple[Counter[int], list[float], float]:
    """Send heartbeats from ``processes`` x ``threads`` connections; (statuses, latencies,
    wall seconds)."""
    port = int(url.rsplit(":", 1)[1])
    queue: Any = multiprocessing.get_context("fork").Queue()
    start_at = time.time() + 1.0
    procs = [
        multiprocessing.get_context("fork").Process(
            target=_client,
            args=(
                port,
                token,
                project_id,
                instances[i::processes],
                seconds,
                threads,
                usage,
                start_at,
                queue,
            ),
        )
        for i in range(processes)
    ]
    for p in procs:
        p.start()
    statuses: Counter[int] = Counter()
    latencies: list[float] = []
    for _ in procs:
        found, times = queue.get(timeout=seconds + 600)
        statuses.update({int(k): v for k, v in found.items()})
        latencies.extend(times)
    for p in procs:
        p.join(timeout=30)
    return statuses, latencies, seconds


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--instances", type=int, default=4000)
    parser.add_argument("--processes", type=int, default=3)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--worker-class", default="forge_app.gevent_worker.ForgeGeventWorker")
    parser.add_argument("--usage", action="store_true", help="each heartbeat carries usage")
    parser.add_argument("--both", action="store_true", help="run without and with usage")
    args = parser.parse_args()

    pg = Postgres.start()
    forge = None
    try:
        url = pg.create_database("bench_heartbeats")
        seed = seed_forge(url, pg.parent / "instance")
        forge = Gunicorn.start(
            seed,
            workers=args.workers,
            worker_class=args.worker_class,
            extra_env={
                "FORGE_HEARTBEAT_TOKEN_LIMIT": "100000000",
                "FORGE_MAX_INSTANCES_PER_TOKEN": str(max(10_000, args.instances)),
            },
        )
        instances = [str(uuid.uuid4()) for _ in range(args.instances)]
        print(
            f"gunicorn {args.workers} x {args.worker_class} workers on PostgreSQL; "
            f"{args.processes} client processes x {args.threads} connections, "
            f"{args.instances} instances, {args.seconds:g} s per run"
        )
        # Warm up: every instance's first heartbeat (creates its row).
        drive(
            forge.url,
            seed.token,
            seed.project_id,
            instances=instances,
            seconds=2.0,
            processes=args.processes,
            threads=args.threads,
        )
        runs = [False, True] if args.both else [args.usage]
        failed = False
        for usage in runs:
            pg_pid = pg.pid
            pg_before = tree_cpu(pg_pid) if pg_pid else {}
            before = forge.cpu()
            statuses, latencies, seconds = drive(
                forge.url,
                seed.token,
                seed.project_id,
                instances=instances,
                seconds=args.seconds,
                processes=args.processes,
                threads=args.threads,
                usage=usage,
            )
            forge_cpu = cpu_delta(before, forge.cpu())
            pg_cpu = cpu_delta(pg_before, tree_cpu(pg_pid)) if pg_pid else float("nan")
            total = sum(statuses.values())
            ok = statuses.get(204, 0)
            rate = ok / seconds
            errors = total - ok
            label = "with usage (5 prompts)" if usage else "without usage"
            print(f"\n{label}:")
            print(
                f"  heartbeats accepted: {ok} in {seconds:g} s = {rate:,.0f}/s "
                f"(goal ≥ {GOAL:,.0f}/s)"
            )
            print(f"  status codes: {dict(sorted(statuses.items()))}; errors: {errors}")
            print(
                "  latency ms: p50 {:.1f}  p95 {:.1f}  p99 {:.1f}  max {:.1f}  mean {:.1f}".format(
                    *(1000 * percentile(latencies, q) for q in (0.5, 0.95, 0.99)),
                    1000 * max(latencies),
                    1000 * statistics.fmean(latencies),
                )
            )
            if total:
                print(
                    f"  CPU per heartbeat: FORGE {1000 * forge_cpu / total:.2f} ms, "
                    f"PostgreSQL {1000 * pg_cpu / total:.2f} ms "
                    f"(FORGE {forge_cpu / seconds:.2f} cores, "
                    f"PostgreSQL {pg_cpu / seconds:.2f} cores)"
                )
            failed = failed or errors > 0 or rate < GOAL
        print("\nverdict:", "goal met" if not failed else "goal NOT met (see the numbers above)")
        return 0
    finally:
        if forge is not None:
            forge.stop()
        pg.stop()


if __name__ == "__main__":
    sys.exit(main())
