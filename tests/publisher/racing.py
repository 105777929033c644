"""Two real OS processes publishing different prompt sets to one channel, and the checks.

Used against a FileStore (tests/publisher) and against SeaweedFS (tests/integration). Each
process starts at one barrier, then publishes its own set ``rounds`` times as fast as it can;
every lost compare-and-swap makes it rebuild the list from the winner's pointer.
"""

from __future__ import annotations

import multiprocessing
import queue
import time
from collections.abc import Sequence
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from anvil_client.wire import load_private_key, private_key_pem
from publisher import HistoryEntry, Publisher, build_bundle

SETS = ("alpha", "beta")
Outcome = list[tuple[int, str, int]]  # (sequence, content_sha256, attempts) per publish


def _publish_rounds(
    store_url: str,
    project_id: str,
    key_pem: bytes,
    prompt_set_id: str,
    rounds: int,
    recipients: Sequence[str],
    barrier: Any,
    results: Any,
) -> None:
    try:
        key = load_private_key(key_pem.decode())
        outcome: Outcome = []
        with Publisher(store_url, project_id=project_id, signing_key=key, max_attempts=80) as pub:
            barrier.wait(timeout=120)
            for n in range(rounds):
                prompts = {f"{prompt_set_id}.who": {"template": f"{prompt_set_id} {n} {{{{ x }}}}"}}
                built = build_bundle(
                    prompts, project_id=project_id, version=f"1.{n}.0", prompt_set_id=prompt_set_id
                )
                result = pub.publish(
                    built,
                    "production",
                    name=prompt_set_id.title(),
                    recipients=list(recipients) or None,
                    plaintext=not recipients,
                )
                outcome.append((result.sequence, result.content_sha256, result.attempts))
        results.put((prompt_set_id, outcome, None))
    except BaseException as e:  # reported to the test, which fails with it
        results.put((prompt_set_id, [], f"{type(e).__name__}: {e}"))


def race_two_sets(
    store_url: str,
    project_id: str,
    key: Ed25519PrivateKey,
    rounds: int,
    recipients: Sequence[str] = (),
) -> dict[str, Outcome]:
    """Run two publisher processes (sets ``alpha`` and ``beta``) on one channel at once."""
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(len(SETS))
    results = context.Queue()
    processes = [
        context.Process(
            target=_publish_rounds,
            args=(
                store_url,
                project_id,
                private_key_pem(key),
                name,
                rounds,
                list(recipients),
                barrier,
                results,
            ),
        )
        for name in SETS
    ]
    for process in processes:
        process.start()
    outcomes: dict[str, Outcome] = {}
    deadline = time.monotonic() + 300
    try:
        while len(outcomes) < len(SETS):
            try:
                name, outcome, error = results.get(timeout=1)
            except queue.Empty:
                dead = [p.exitcode for p in processes if p.exitcode not in (None, 0)]
                assert not dead, f"a publisher process died with exit code {dead[0]}"
                assert time.monotonic() < deadline, "a publisher process never reported"
                continue
            assert error is None, f"publisher {name} failed: {error}"
            outcomes[name] = outcome
    finally:
        for process in processes:
            process.join(timeout=60)
            if process.is_alive():
                process.kill()
    assert all(process.exitcode == 0 for process in processes)
    return outcomes


def check_race(outcomes: dict[str, Outcome], history: list[HistoryEntry], rounds: int) -> None:
    """Both land: every sequence once, in history, and no publish ever dropped the other set."""
    claimed: dict[int, tuple[str, str]] = {}
    for name, outcome in outcomes.items():
        sequences = [sequence for sequence, _, _ in outcome]
        assert sequences == sorted(sequences)
        for sequence, content, _ in outcome:
            assert sequence not in claimed, f"sequence {sequence} claimed twice"
            claimed[sequence] = (name, content)
    total = len(SETS) * rounds
    assert sorted(claimed) == list(range(1, total + 1))  # no gaps, no duplicates
    assert [entry.sequence for entry in history] == list(range(1, total + 1))
    assert all(entry.verified for entry in history)
    seen: dict[str, str] = {}
    for entry in history:
        name, content = claimed[entry.sequence]
        seen[name] = content
        # what each publisher was told it published is what history holds (no lost update),
        # and every set published before is still there with its latest content
        served = {r.prompt_set_id: r.content_sha256 for r in entry.releases}
        assert served == seen, f"sequence {entry.sequence} serves {served}, expected {seen}"
    assert set(seen) == set(SETS)
