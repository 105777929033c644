"""Several processes on one cache dir (forked as gunicorn does), and syncs killed mid-write.

These run real child processes: a pre-fork "server" whose client exists before ``os.fork``,
and sync processes SIGKILLed at each file operation of a cache write.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from anvil_client import AnvilClient
from anvil_client.stores import FileStore
from tests.anvil_client.spy_stores import read_log, wait_for
from tests.anvil_client.wire_publisher import WirePublisher

REPO = Path(__file__).resolve().parents[2]
INTERVAL = 0.25

PREFORK_SERVER = """
import json, os, sys, time
from pathlib import Path
from anvil_client import AnvilClient
from tests.anvil_client.spy_stores import LoggingFileStore

cfg = json.loads(sys.argv[1])
store = LoggingFileStore(cfg["store"], log=cfg["log"])
client = AnvilClient(store=store, **cfg["client"])
deadline = time.monotonic() + 30
while client.status()["version"] is None and time.monotonic() < deadline:
    time.sleep(0.01)
workers = []
for _ in range(cfg["workers"]):  # gunicorn: the app (and its client) exist before the fork
    pid = os.fork()
    if pid == 0:
        workers = None
        break
    workers.append(pid)
out = Path(cfg["out"]) / f"{os.getpid()}.json"
stop = Path(cfg["stop"])
while not stop.exists():
    report = {
        "pid": os.getpid(),
        "text": client.prompt("welcome.message", name="Ada"),
        "version": client.status()["version"],
        "leader": client.status()["leader"],
    }
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(report))
    os.replace(tmp, out)
    time.sleep(0.02)
if workers is None:
    os._exit(0)
for pid in workers:
    os.waitpid(pid, 0)
"""


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def v(n: int) -> dict[str, str]:
    return {"welcome.message": f"v{n} {{{{ name }}}}"}


def reports(out: Path) -> dict[int, dict[str, Any]]:
    found = {}
    for path in out.glob("*.json"):
        try:
            report = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        found[report["pid"]] = report
    return found


@pytest.fixture
def prefork(tmp_path: Path, publisher: WirePublisher) -> Iterator[dict[str, Any]]:
    """A pre-fork server: one master that created the client, then three forked workers."""
    publisher.publish(v(1), version="1.0.0")
    out, stop, log = tmp_path / "out", tmp_path / "stop", tmp_path / "requests.log"
    out.mkdir()
    cfg = {
        "store": str(tmp_path / "store"),
        "log": str(log),
        "out": str(out),
        "stop": str(stop),
        "workers": 3,
        "client": {
            "project_id": publisher.project_id,
            "access_token": publisher.token,
            "trusted_keys": [publisher.trusted_key],
            "cache_dir": str(tmp_path / "cache"),
            "poll_interval": INTERVAL,
        },
    }
    master = subprocess.Popen(
        [sys.executable, "-c", PREFORK_SERVER, json.dumps(cfg)], env=child_env(), cwd=tmp_path
    )
    state: dict[str, Any] = {"master": master, "out": out, "log": log}
    try:
        yield state
    finally:
        stop.touch()
        pids = set(reports(out)) - {master.pid}
        try:
            master.wait(timeout=10)
        except subprocess.TimeoutExpired:
            master.kill()
            master.wait()
        for pid in pids:  # orphaned workers, if the master was killed: by PID only
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.slow
def test_four_forked_processes_cost_one_pointer_request_per_interval(
    prefork: dict[str, Any], publisher: WirePublisher
) -> None:
    out, log, master = prefork["out"], prefork["log"], prefork["master"]
    wait_for(lambda: len(reports(out)) == 4, timeout=30, message="four processes serving")
    assert {r["text"] for r in reports(out).values()} == {"v1 Ada"}
    start = len(read_log(log))
    wait_for(lambda: len(read_log(log)) >= start + 8, timeout=30, message="eight more requests")
    window = [entry for entry in read_log(log)[start:] if "/channels/" in entry[2]]
    assert {pid for pid, _, _ in window} == {master.pid}  # one process polls for all four
    elapsed = window[-1][1] - window[0][1]
    # n requests take at least (n-1) jittered intervals: one request per interval, not four.
    assert elapsed >= (len(window) - 1) * INTERVAL * 0.9 * 0.95

    publisher.publish(v(2), version="2.0.0")
    wait_for(
        lambda: {r["text"] for r in reports(out).values()} == {"v2 Ada"},
        timeout=30,
        message="all four processes to serve v2",
    )
    bundle_gets = [e for e in read_log(log) if "/bundles/" in e[2]]
    assert len(bundle_gets) == 2  # v1 once, v2 once, for all four processes

    # The leader dies: one of the workers takes over polling.
    os.kill(master.pid, signal.SIGKILL)
    master.wait()
    killed_at = len(read_log(log))
    wait_for(
        lambda: any(pid != master.pid for pid, _, _ in read_log(log)[killed_at:]),
        timeout=30,
        message="a worker to take over polling",
    )
    publisher.publish(v(3), version="3.0.0")
    workers = set(reports(out)) - {master.pid}
    wait_for(
        lambda: all(reports(out)[pid]["text"] == "v3 Ada" for pid in workers),
        timeout=30,
        message="the surviving workers to serve v3",
    )
    later = [e for e in read_log(log)[killed_at:] if "/channels/" in e[2]]
    assert len({pid for pid, _, _ in later}) == 1


# --- a sync killed at any point ------------------------------------------------------------------

KILLED_SYNCS = """
import json, os, shutil, signal, sys
from pathlib import Path

from anvil_client import AnvilClient
from anvil_client.stores import FileStore

cfg = json.loads(sys.argv[1])
WRITERS = ("anvil_client/_cache.py", "anvil_client/stores/_file.py")


def sync_and_die_at(kill_at):
    count = [0]

    def tick():
        count[0] += 1
        if count[0] == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    def lethal(real):
        def wrapper(*args, **kwargs):
            tick()
            return real(*args, **kwargs)
        return wrapper

    def trace_calls(frame, event, arg):
        code = frame.f_code
        if code.co_filename.endswith(WRITERS) or code.co_name == "_commit":
            return trace_lines
        return None

    def trace_lines(frame, event, arg):
        if event == "line":
            tick()
        return trace_lines

    client = AnvilClient(store=FileStore(cfg["store"]), start=False, **cfg["client"])
    # Kill points: every file-system call, and every line of the code that writes the cache.
    for name in ("open", "fsync", "replace", "unlink", "rename", "write", "close", "fchmod"):
        setattr(os, name, lethal(getattr(os, name)))
    sys.settrace(trace_calls)
    client.sync()
    sys.settrace(None)


# A zygote: imported once, then one fork per kill point (single-threaded, so fork is safe).
kill_at = 1
while True:
    cache = Path(cfg["work"]) / f"cache-{kill_at}"
    shutil.copytree(cfg["template"], cache)
    pid = os.fork()
    if pid == 0:
        cfg["client"]["cache_dir"] = str(cache)
        try:
            sync_and_die_at(kill_at)
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    killed = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    print(json.dumps({"kill_at": kill_at, "cache": str(cache), "killed": killed}), flush=True)
    if not killed or kill_at >= 2000:
        break
    kill_at += 1
"""


@pytest.mark.slow
def test_a_sync_killed_at_any_point_leaves_old_or_new(
    tmp_path: Path, publisher: WirePublisher
) -> None:
    publisher.publish(v(1), version="1.0.0")
    settings = publisher.client_settings(tmp_path / "cache-v1", store=FileStore(tmp_path / "store"))
    with AnvilClient(**settings, start=False) as first:
        first.sync()
    publisher.publish(v(2), version="2.0.0")
    cfg = {
        "store": str(tmp_path / "store"),
        "template": str(tmp_path / "cache-v1"),
        "work": str(tmp_path),
        "client": {
            "project_id": publisher.project_id,
            "access_token": publisher.token,
            "trusted_keys": [publisher.trusted_key],
        },
    }
    run = subprocess.run(
        [sys.executable, "-c", KILLED_SYNCS, json.dumps(cfg)],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    runs = [json.loads(line) for line in run.stdout.splitlines()]
    assert [r["killed"] for r in runs[:-1]] == [True] * (len(runs) - 1)
    assert runs[-1]["killed"] is False  # the last run got through every point
    assert len(runs) > 100  # many points, each one tried
    seen = set()
    for r in runs:
        with AnvilClient(**{**settings, "cache_dir": r["cache"]}, start=False) as reloaded:
            status = reloaded.status()
            assert status["last_error"] is None, (r, status["last_error"])
            assert status["version"] in ("1.0.0", "2.0.0"), r
            expected = "v1 Ada" if status["version"] == "1.0.0" else "v2 Ada"
            assert reloaded.prompt("welcome.message", name="Ada") == expected
            seen.add(status["version"])
            if r["kill_at"] % 10 == 0:
                reloaded.sync()  # and it recovers to the new version
                assert reloaded.status()["version"] == "2.0.0"
    assert seen == {"1.0.0", "2.0.0"}
    assert runs[-1]["killed"] is False and status["version"] == "2.0.0"


def test_a_second_client_in_another_process_sees_the_same_instance(tmp_path: Path) -> None:
    """state.json is created once, under the write lock, even when processes race."""
    settings = {
        "store": str(tmp_path / "store"),
        "cache_dir": str(tmp_path / "cache"),
    }
    script = """
import json, sys
from anvil_client import AnvilClient
from anvil_client.wire import generate_private_key, public_key_text
cfg = json.loads(sys.argv[1])
key = public_key_text(generate_private_key().public_key())
c = AnvilClient(store="file://" + cfg["store"], project_id="p1", trusted_keys=[key],
                cache_dir=cfg["cache_dir"], start=False)
print(c.instance_id)
"""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, json.dumps(settings)],
            env=child_env(),
            stdout=subprocess.PIPE,
        )
        for _ in range(4)
    ]
    ids = set()
    for proc in procs:
        stdout, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0
        ids.add(stdout.decode().strip())
    assert len(ids) == 1


FORK_DURING_WRITE = """
import fcntl, json, os, sys, threading
from pathlib import Path
from anvil_client import AnvilClient
from anvil_client.wire import generate_private_key, public_key_text

cfg = json.loads(sys.argv[1])
key = public_key_text(generate_private_key().public_key())
client = AnvilClient(store="file://" + cfg["store"], project_id="p1", trusted_keys=[key],
                     cache_dir=cfg["cache_dir"], start=False)
inside, release = threading.Event(), threading.Event()

def writer():
    with client._cache.write_lock():  # a poll writing the cache while the server forks
        inside.set()
        release.wait()

thread = threading.Thread(target=writer)
thread.start()
inside.wait()
ready_r, ready_w = os.pipe()
pid = os.fork()
if pid == 0:
    os.write(ready_w, b"x")  # os.fork() has returned here: the at-fork hooks have run
    release.wait(30)  # the child lives on, as a worker does
    os._exit(0)
os.read(ready_r, 1)
release.set()
thread.join()
probe = os.open(Path(client._cache.dir) / ".write.lock", os.O_RDWR)
try:
    fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
    print("free")
except BlockingIOError:
    print("still locked by the child")
finally:
    os.close(probe)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
"""


def test_a_fork_during_a_cache_write_does_not_leave_the_cache_locked(tmp_path: Path) -> None:
    cfg = {"store": str(tmp_path / "store"), "cache_dir": str(tmp_path / "cache")}
    run = subprocess.run(
        [sys.executable, "-c", FORK_DURING_WRITE, json.dumps(cfg)],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert run.stdout.strip() == "free"
