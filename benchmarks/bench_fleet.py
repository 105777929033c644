"""Fleet benchmark (issue 14 §5): publish to N instances, with and without hints.

    .venv/bin/python benchmarks/bench_fleet.py [--instances 1000] [--processes 2]
        [--threads 24] [--interval 5] [--publishes 3] [--modes hints,poll]
        [--store s3|forge] [--hint-jitter 0.25]

Setup: PostgreSQL (pgserver), the FORGE under gunicorn with 4 workers (infra/gunicorn.conf.py:
gevent), a store, and N simulated LIVE instances in a few processes on 127.0.0.1. The store is,
as in production, S3 (``--store s3``, the default: a SeaweedFS server, written by the FORGE with
boto3 and read by the instances over plain HTTP like a CDN), so the FORGE carries only the hint
streams and the heartbeats; ``--store forge`` serves it from the FORGE's own ``/store/``.

The instances are not ``anvil_client`` objects (a thousand of them, each with its own threads
and cache folder, would measure this 2-core VM's scheduler), but a faithful light simulation
of what each one does on the wire, with the real checks:

- polls the store's pointer every ``--interval`` s (random phase) with ``If-None-Match``;
- on a new pointer: ``verify_pointer`` (Ed25519, project, channel), GETs each entry's bundle
  object, ``check_object`` + ``open_object`` (AES-GCM with the ACCESS_TOKEN, content hash),
  then counts the instance as applied and sends a DESIGN §7 heartbeat (from a separate
  heartbeat thread, never the poller);
- with hints: holds one ``/api/v1/live/hints`` stream per instance (one selector thread per
  process) and, on a hint newer than its sequence, polls after a random delay up to
  ``--hint-jitter`` s (default: the client's ``HINT_JITTER``), at most once a second.

Propagation is measured per instance from the moment the publish call returned in the driver
until that instance verified and decrypted the new entry. Prints p50/p95/p99/max per mode and
where the time went (hint delivered, hint to poll, poll to applied, CPU of one verification and
decryption), heartbeat throughput and latency, store requests per second, and the CPU of each
FORGE worker, PostgreSQL, the store and the simulated fleet (also per publish, above its idle
rate). A benchmark, not a test: it exits 0.
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from queue import Empty
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from anvil_client._timing import HINT_JITTER
from benchmarks.fleet_setup import (
    Gunicorn,
    Postgres,
    S3Store,
    cpu_delta,
    release_and_publish,
    seed_forge,
    tree_cpu,
)
from benchmarks.fleet_sim import HintProbe, fleet_process


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def spread(values: list[float]) -> str:
    """``p50 … p99 … max …`` of some seconds."""
    top = max(values) if values else float("nan")
    return (
        f"p50 {percentile(values, 0.5):.2f}  p95 {percentile(values, 0.95):.2f}  "
        f"p99 {percentile(values, 0.99):.2f}  max {top:.2f}"
    )


# --- the driver -------------------------------------------------------------------------------


@dataclass
class Setup:
    """What every mode runs against."""

    args: argparse.Namespace
    forge: Gunicorn
    seed: Any
    app: Any
    pg: Postgres
    store: S3Store | None

    def cfg(self, hints: bool) -> dict[str, Any]:
        forge_port = int(self.forge.url.rsplit(":", 1)[1])
        return {
            "port": forge_port,
            "store_port": forge_port if self.store is None else self.store.port,
            "store_prefix": "/store" if self.store is None else self.store.http_prefix,
            "project_id": self.seed.project_id,
            "token": self.seed.token,
            "trusted_key": self.seed.trusted_key,
            "interval": self.args.interval,
            "threads": self.args.threads,
            "hints": hints,
            "hint_jitter": self.args.hint_jitter,
        }

    def cpu(self) -> dict[str, dict[int, float]]:
        """CPU seconds so far of the FORGE (by process), PostgreSQL and the store server."""
        store_pid = None if self.store is None else self.store.pid
        return {
            "forge": self.forge.cpu(),
            "pg": tree_cpu(self.pg.pid) if self.pg.pid else {},
            "store": tree_cpu(store_pid) if store_pid else {},
        }


@dataclass
class ModeRun:
    """One mode (hints or polling only): start the fleet, publish, collect the numbers."""

    setup: Setup
    hints: bool
    applied: dict[int, dict[int, tuple[float, Any]]] = field(default_factory=dict)
    hinted: dict[int, dict[int, float]] = field(default_factory=dict)
    beats: dict[int, dict[int, float]] = field(default_factory=dict)
    result: dict[str, Any] = field(default_factory=dict)
    probe: HintProbe | None = None

    def start(self) -> None:
        args = self.setup.args
        context = multiprocessing.get_context("fork")
        self.out = context.Queue()
        self.control = context.Event()
        cfg = self.setup.cfg(self.hints)
        indexes = list(range(args.instances))
        self.procs = [
            context.Process(
                target=fleet_process,
                args=(cfg, indexes[i :: args.processes], self.out, self.control),
            )
            for i in range(args.processes)
        ]
        for p in self.procs:
            p.start()

    def fleet_cpu(self) -> float:
        return sum(tree_cpu(p.pid or 0).get(p.pid or 0, 0.0) for p in self.procs)

    def cpu_totals(self) -> Counter[str]:
        """CPU seconds so far of each part: the simulated fleet, FORGE, PostgreSQL, store."""
        parts = self.setup.cpu()
        totals: Counter[str] = Counter({name: sum(cpu.values()) for name, cpu in parts.items()})
        totals["fleet"] = self.fleet_cpu()
        return totals

    def drain(self, until: float, done: Callable[[], bool] | None = None) -> None:
        """Read messages until ``until`` or until ``done()``."""
        while time.time() < until:
            if done is not None and done():
                return
            try:
                kind, index, sequence, moment, extra = self.out.get(timeout=0.2)
            except Empty:
                continue
            if kind == "applied":
                self.applied.setdefault(sequence, {})[index] = (moment, extra)
            elif kind == "hint":
                self.hinted.setdefault(sequence, {}).setdefault(index, moment)
            elif kind == "beat":
                self.beats.setdefault(sequence, {})[index] = moment

    def all_applied(self, sequence: int) -> Callable[[], bool]:
        return lambda: len(self.applied.get(sequence, {})) >= self.setup.args.instances

    def warm_up(self) -> None:
        """Every instance syncs once (its first poll); then the fleet's idle CPU rate."""
        args, seed = self.setup.args, self.setup.seed
        self.drain(time.time() + args.interval * 4 + 30, self.all_applied(seed.sequence))
        ready = self.applied.get(seed.sequence, {})
        self.result["ready"] = len(ready)
        if self.hints and args.probe_streams:
            self.probe = HintProbe(self.setup.cfg(self.hints), args.probe_streams)
        self.settle(seed.sequence, len(ready))
        idle_before, idle_start = self.cpu_totals(), time.time()
        self.drain(idle_start + args.interval)
        idle = self.cpu_totals()
        idle.subtract(idle_before)
        seconds = time.time() - idle_start
        self.result["idle_rate"] = {name: cpu / seconds for name, cpu in idle.items()}

    def publish(self, n: int) -> None:
        args, seed, r = self.setup.args, self.setup.seed, self.result
        cpu_before = self.cpu_totals()
        sequence = release_and_publish(
            self.setup.app, seed, f"Hello {{{{ name }}}} #{n} {uuid.uuid4().hex[:6]}"
        )
        published = time.time()
        seed.sequence = sequence
        self.drain(published + args.interval * 3 + 10, self.all_applied(sequence))
        window = time.time() - published
        used = self.cpu_totals()
        used.subtract(cpu_before)
        r["windows"].append(window)
        for name, cpu in used.items():  # above the idle rate: what propagation cost
            r["publish_cpu"].setdefault(name, []).append(cpu - r["idle_rate"][name] * window)
        got = self.applied.get(sequence, {})
        for moment, (started, cpu, hinted) in got.values():
            r["delays"].append(moment - published)
            r["fetch"].append(moment - started)
            r["apply_cpu"].append(cpu)
            if hinted is not None:
                r["hint_to_poll"].append(started - hinted)
        self.drain(time.time() + 0.5)  # late hint messages
        r["hint_delays"].extend(m - published for m in self.hinted.get(sequence, {}).values())
        if self.probe is not None:
            r["probe_delays"].extend(m - published for m in self.probe.received.get(sequence, []))
        r["missed"] += args.instances - len(got)
        r["via_hint"] += sum(1 for _, (_, _, hinted) in got.values() if hinted is not None)
        mine = [moment - published for moment, _ in got.values()]
        probed = [] if self.probe is None else self.probe.received.get(sequence, [])
        r["per_publish"].append(
            (percentile(mine, 0.99), max(probed, default=published) - published)
        )
        r["beats_done"].append(self.settle(sequence, len(got)) - published)

    def settle(self, sequence: int, count: int) -> float:
        """Wait until the heartbeats of the ``count`` instances that applied ``sequence`` were
        accepted (a publish within that backlog gets its hints late), then 1 s; when the
        last was accepted."""
        beats = self.beats.setdefault(sequence, {})
        self.drain(time.time() + self.setup.args.interval * 6, lambda: len(beats) >= count)
        self.drain(time.time() + 1.0)
        return max(beats.values(), default=float("nan"))

    def collect(self) -> None:
        self.control.set()
        stats: Counter[str] = Counter()
        latencies: list[float] = []
        for _ in self.procs:
            while True:
                message = self.out.get(timeout=120)
                if message[0] == "stats":
                    stats.update(message[1])
                    latencies.extend(message[2])
                    break
        for p in self.procs:
            p.join(timeout=60)
        self.result.update(stats=stats, heartbeat_latency=latencies)

    def run(self) -> dict[str, Any]:
        r = self.result
        r.update(hints=self.hints, missed=0, via_hint=0)
        for name in ("delays", "hint_delays", "probe_delays", "fetch", "apply_cpu"):
            r[name] = []
        r["hint_to_poll"], r["windows"], r["beats_done"], r["per_publish"] = [], [], [], []
        r["publish_cpu"] = {}
        self.start()
        self.warm_up()
        cpu_before, wall_start = self.setup.cpu(), time.time()
        fleet_before = self.fleet_cpu()
        for n in range(self.setup.args.publishes):
            self.publish(n)
        r["wall"] = time.time() - wall_start
        r["fleet_cpu"] = self.fleet_cpu() - fleet_before
        cpu_after = self.setup.cpu()
        r["forge_workers"] = {
            pid: cpu - cpu_before["forge"].get(pid, 0.0) for pid, cpu in cpu_after["forge"].items()
        }
        r["pg_cpu"] = cpu_delta(cpu_before["pg"], cpu_after["pg"])
        r["store_cpu"] = cpu_delta(cpu_before["store"], cpu_after["store"])
        if self.probe is not None:
            self.probe.close()
        self.collect()
        return r


# --- the report ---------------------------------------------------------------------------------


def report(result: dict[str, Any], args: argparse.Namespace) -> None:
    delays = result["delays"]
    name = "with hints" if result["hints"] else "polling only"
    print(f"\n== {name}: {args.instances} instances, poll interval {args.interval:g} s ==")
    print(f"  synced before the first publish: {result['ready']}/{args.instances}")
    print(
        f"  propagation s: {spread(delays)}  "
        f"(applied {len(delays)} of {args.instances * args.publishes}, missed {result['missed']})"
    )
    goal = 1.0 if result["hints"] else args.interval + 1.0
    p99 = percentile(delays, 0.99)
    print(
        f"  goal p99 ≤ {goal:g} s: {'met' if p99 <= goal else 'NOT met'} "
        f"(p99/goal = {p99 / goal:.2f}); p99 of each publish: "
        f"{', '.join(f'{p:.2f}' for p, _ in result['per_publish'])} s"
    )
    if result["hints"]:
        report_hints(result, args)
    print(
        f"  poll to applied s (GET pointer + GET bundle + verify + decrypt): "
        f"{spread(result['fetch'])}"
    )
    cpu = result["apply_cpu"]
    print(
        f"  CPU of one verification + decryption in the fleet: "
        f"p50 {1000 * percentile(cpu, 0.5):.1f} ms, p99 {1000 * percentile(cpu, 0.99):.1f} ms"
    )
    report_load(result, args)


def report_hints(result: dict[str, Any], args: argparse.Namespace) -> None:
    stats = result["stats"]
    print(
        f"  hint streams: {stats.get('streams', 0)} held, {stats.get('hints', 0)} hints, "
        f"{stats.get('streams_closed', 0)} closed by the FORGE; "
        f"{result['via_hint']} of {len(result['delays'])} applied after a hint"
    )
    print(f"  publish to hint received by the fleet s: {spread(result['hint_delays'])}")
    print(
        f"  publish to hint received by {args.probe_streams} probe streams in an idle process s: "
        f"{spread(result['probe_delays'])}; the last, per publish: "
        f"{', '.join(f'{m:.2f}' for _, m in result['per_publish'])}"
    )
    print(
        f"  hint to poll started s (jitter ≤ {args.hint_jitter:g} s + queueing): "
        f"{spread(result['hint_to_poll'])}"
    )


def report_load(result: dict[str, Any], args: argparse.Namespace) -> None:
    stats, wall = result["stats"], result["wall"]
    beats = stats.get("heartbeat_204", 0)
    hb = result["heartbeat_latency"]
    other = {
        k.removeprefix("heartbeat_"): v
        for k, v in stats.items()
        if k.startswith("heartbeat_") and k != "heartbeat_204"
    }
    print(
        f"  heartbeats: {beats} accepted, other {other or 'none'}; "
        f"{beats / wall:.0f}/s over the run; "
        f"latency ms p50 {1000 * percentile(hb, 0.5):.1f} p99 {1000 * percentile(hb, 0.99):.1f} "
        f"max {1000 * max(hb or [0]):.1f}; the last of a publish's accepted after "
        f"{', '.join(f'{t:.1f}' for t in result['beats_done'])} s"
    )
    print(
        f"  store ({args.store}): {stats.get('store_requests', 0) / wall:.0f} requests/s "
        f"(pointer 304: {stats.get('poll_304', 0)}, 200: {stats.get('poll_200', 0)}, "
        f"errors: {stats.get('poll_errors', 0) + stats.get('object_errors', 0)})"
    )
    workers = result["forge_workers"]
    total = sum(workers.values())
    split = ", ".join(f"{cpu / wall:.2f}" for _, cpu in sorted(workers.items()))
    print(
        f"  CPU (cores over {wall:.0f} s): FORGE {total / wall:.2f} (per process: {split}), "
        f"PostgreSQL {result['pg_cpu'] / wall:.2f}, store server {result['store_cpu'] / wall:.2f}, "
        f"simulated fleet {result['fleet_cpu'] / wall:.2f}"
    )
    report_publish_cpu(result)


def report_publish_cpu(result: dict[str, Any]) -> None:
    """CPU seconds each part spent per publish (publish to last instance applied), above its
    idle rate; on 2 cores their sum / 2 is the shortest the propagation could take here."""
    per_publish = {name: sum(v) / len(v) for name, v in result["publish_cpu"].items() if v}
    total = sum(per_publish.values())
    windows = result["windows"]
    parts = ", ".join(f"{name} {cpu:.2f}" for name, cpu in sorted(per_publish.items()))
    print(
        f"  CPU s per publish above idle (publish to last applied, "
        f"{sum(windows) / max(len(windows), 1):.2f} s): {parts}; "
        f"all {total:.2f} = {total / 2:.2f} s of 2 cores"
    )
    idle = ", ".join(f"{name} {rate:.2f}" for name, rate in sorted(result["idle_rate"].items()))
    print(f"  idle CPU (cores, between publishes, heartbeats settled): {idle}")


# --- main ---------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--instances", type=int, default=1000)
    # One fleet process per core: 4 processes cost the fleet 20-40 % more CPU per publish here.
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=24, help="poller threads per process")
    parser.add_argument("--interval", type=float, default=5.0)
    parser.add_argument("--publishes", type=int, default=3)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--modes", default="hints,poll")
    parser.add_argument(
        "--probe-streams",
        type=int,
        default=20,
        help="extra hint streams read in the driver: the FORGE's fan-out alone",
    )
    parser.add_argument(
        "--store",
        choices=("s3", "forge"),
        default="s3",
        help="s3: SeaweedFS, as production's S3/CDN (default); forge: the FORGE's /store/",
    )
    parser.add_argument(
        "--hint-jitter",
        type=float,
        default=HINT_JITTER,
        help=f"random delay before a hint poll, s (the client's: {HINT_JITTER:g})",
    )
    return parser.parse_args()


def forge_log_problems(forge: Gunicorn) -> None:
    problems = [
        line
        for line in forge.log.read_text(errors="replace").splitlines()
        if "ERROR" in line or "Traceback" in line or "Error" in line
    ]
    if problems:
        print(f"\nFORGE log: {len(problems)} error lines, the first:", *problems[:5], sep="\n  ")


def run(args: argparse.Namespace, pg: Postgres, store: S3Store | None) -> None:
    url = pg.create_database("bench_fleet")
    seed = seed_forge(url, pg.parent / "instance", None if store is None else store.url)
    app = seed.app()
    seed.sequence = release_and_publish(app, seed, "Hello {{ name }}!")
    forge = Gunicorn.start(
        seed,
        workers=args.workers,
        extra_env={
            "FORGE_HEARTBEAT_TOKEN_LIMIT": "100000000",
            "FORGE_HINT_MAX_STREAMS": str(args.instances * 2 + args.probe_streams),
        },
    )
    try:
        where = "the FORGE's /store/" if store is None else "S3 (SeaweedFS, read over HTTP)"
        print(
            f"FORGE: gunicorn, {args.workers} workers (gevent), PostgreSQL; store: {where}; "
            f"{args.instances} simulated instances in {args.processes} processes"
        )
        setup = Setup(args=args, forge=forge, seed=seed, app=app, pg=pg, store=store)
        results = []
        for mode in args.modes.split(","):
            result = ModeRun(setup, hints=mode.strip() == "hints").run()
            report(result, args)
            results.append(result)
        if len(results) == 2:
            with_hints, without = results
            ratio = percentile(without["delays"], 0.99) / percentile(with_hints["delays"], 0.99)
            print(f"\np99 propagation without hints / with hints: {ratio:.1f}x")
    finally:
        forge.stop()
        forge_log_problems(forge)


def main() -> int:
    args = parse_args()
    pg = Postgres.start()
    store = None
    try:
        if args.store == "s3":
            store = S3Store.start(pg.parent / "seaweedfs")
        run(args, pg, store)
        return 0
    finally:
        if store is not None:
            store.stop()
        pg.stop()


if __name__ == "__main__":
    sys.exit(main())
