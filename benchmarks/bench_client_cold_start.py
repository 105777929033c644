"""Cold start of an application process with a 10,000-prompt disk cache.

    $ .venv/bin/python benchmarks/bench_client_cold_start.py

In a fresh interpreter each time: ``import anvil_client`` (boto3, botocore, Flask and
SQLAlchemy must not be imported), construct the client (which imports the client, the wire
format and pydantic on first use — PEP 562 — then loads the disk cache and re-verifies it:
signature, SHA-256, parse, ids), and render the first prompt. Goals (issue 14 §4):
``import anvil_client`` at most 60 ms, and import + load + first prompt of 10,000 prompts from
the cache at most 120 ms in process. Then, in another fresh interpreter, the memory the client
holds for the 10,000 prompts before any render (tracemalloc, started after the import): at
most 3x the bundle's JSON size. The machine is shared: the median of the runs is reported.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from client_setup import ROOT, BenchPublisher, bundle_bytes

from anvil_client import AnvilClient
from anvil_client.stores import FileStore

PROMPTS = 10_000
RUNS = 7

TIMED = """
import json, sys, time
t0 = time.perf_counter()
import anvil_client
t1 = time.perf_counter()
heavy = [m for m in ("boto3", "botocore", "flask", "sqlalchemy") if m in sys.modules]
deferred = "pydantic" not in sys.modules
Client = anvil_client.AnvilClient
t_imports = time.perf_counter()
client = Client(**json.loads(sys.argv[1]), start=False)
t2 = time.perf_counter()
text = client.prompt("assistant.p00042", user="Ada", topic="billing", tone="friendly")
t3 = time.perf_counter()
assert client.status()["prompts"] == 10_000 and client.status()["last_error"] is None
assert "Ada" in text
print(json.dumps({"import": t1 - t0, "deferred_imports": t_imports - t1,
                  "load": t2 - t_imports, "render": t3 - t2, "total": t3 - t0,
                  "heavy": heavy, "deferred": deferred}))
"""

MEMORY = """
import gc, json, sys, tracemalloc
import anvil_client
anvil_client.AnvilClient  # the deferred imports: modules are not what the client holds
gc.collect()
tracemalloc.start()
client = anvil_client.AnvilClient(**json.loads(sys.argv[1]), start=False)
gc.collect()
current, peak = tracemalloc.get_traced_memory()
assert client.status()["prompts"] == 10_000
print(json.dumps({"held": current, "peak": peak}))
"""


def prompts() -> dict[str, str]:
    out = {}
    for i in range(PROMPTS):
        out[f"assistant.p{i:05d}"] = (
            f"You are support assistant number {i} for the Anvil product line. "
            "Help {{ user }} with their question about {{ topic }}. Answer in a {{ tone }} "
            "tone, cite the relevant documentation section and keep it under 200 words."
        )
    return out


def run(script: str, settings: dict[str, object]) -> tuple[dict[str, object], float]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    started = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", script, json.dumps(settings)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout), time.perf_counter() - started


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        plaintext = bundle_bytes(prompts())
        publisher = BenchPublisher(FileStore(root / "store"))
        publisher.publish(plaintext)
        settings = publisher.settings(root / "cache", f"file://{root / 'store'}")
        with AnvilClient(**settings, start=False) as client:
            client.sync()
        settings["cache_dir"] = str(settings["cache_dir"])
        results, walls = [], []
        for _ in range(RUNS):
            result, wall = run(TIMED, settings)
            assert result["heavy"] == [], result["heavy"]
            assert result["deferred"], "import anvil_client loaded pydantic"
            results.append(result)
            walls.append(wall)
        memory, _ = run(MEMORY, settings)

    def median(key: str) -> float:
        return statistics.median(float(r[key]) for r in results) * 1000  # type: ignore[arg-type]

    size = len(plaintext)
    held = int(memory["held"])  # type: ignore[call-overload]
    print(f"cold start with {PROMPTS:,} prompts ({size / 1e6:.2f} MB bundle), median of {RUNS}")
    imported = median("import")
    print(f"  import anvil_client           {imported:7.1f} ms  (goal <= 60 ms)")
    print(f"  first use: client + wire      {median('deferred_imports'):7.1f} ms")
    print(f"  load + verify the disk cache  {median('load'):7.1f} ms")
    print(f"  first render                  {median('render'):7.1f} ms")
    total = median("total")
    print(f"  total in process              {total:7.1f} ms  (goal <= 120 ms)")
    wall = statistics.median(walls) * 1000
    print(f"  process wall time             {wall:7.1f} ms  (incl. interpreter start and exit)")
    print("  boto3/botocore/flask/sqlalchemy imported: none")
    ratio = held / size
    print(f"  memory held before any render {held / 1e6:7.2f} MB  = {ratio:.2f}x the bundle JSON")
    print(f"  peak while loading            {int(memory['peak']) / 1e6:7.2f} MB")  # type: ignore[call-overload]
    ok = imported <= 60 and total <= 120 and ratio <= 3
    print(
        f"RESULT cold_start {'OK' if ok else 'MISSED'} import={imported:.0f}ms "
        f"total={total:.0f}ms memory={ratio:.2f}x"
    )


if __name__ == "__main__":
    main()
