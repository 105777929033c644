"""Usage counting (issue 11 §1): renders, errors, record(), variable names, heartbeat deltas."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import anvil_client
from anvil_client import AnvilClient
from anvil_client._usage import (
    USAGE_MAX_SIZE,
    VARIABLE_NAMES_MAX,
    VARIABLE_SETS_MAX,
    Counter,
    Usage,
)
from anvil_client.errors import MissingVariable, PromptNotFound
from anvil_client.wire import HEARTBEAT_MAX_SIZE
from tests.anvil_client.fake_forge import FakeForge
from tests.anvil_client.wire_publisher import WirePublisher

MakeClient = Callable[..., AnvilClient]
PROMPTS = {"welcome.message": "Hello {{ name }}.", "bye": "Bye {{ name }} from {{ place }}."}


@pytest.fixture
def forge() -> Iterator[FakeForge]:
    forge = FakeForge()
    yield forge
    forge.close()


@pytest.fixture
def counted(publisher: WirePublisher, make_client: MakeClient, forge: FakeForge) -> AnvilClient:
    publisher.publish(PROMPTS, version="1.0.0")
    client = make_client(forge_url=forge.url)
    client.sync()
    assert client._cache.try_lead()
    return client


def usage_of(body: dict[str, Any]) -> dict[tuple[str, str | None], dict[str, Any]]:
    return {(p["prompt_id"], p["content_sha256"]): p for p in body["usage"]["prompts"]}


# --- counting -------------------------------------------------------------------------------


def test_renders_and_errors_are_counted_per_prompt_and_served_entry(
    counted: AnvilClient, forge: FakeForge
) -> None:
    content = counted.status()["content_sha256"]
    for _ in range(3):
        counted.prompt("welcome.message", name="Ada")
    with pytest.raises(MissingVariable):
        counted.prompt("bye", name="Ada")
    counted.messages("bye", name="Ada", place="Paris")
    with pytest.raises(PromptNotFound):
        counted.prompt("no.such.prompt")
    assert counted.prompt("gone", fallback="Hi {{ name }}", name="Ada") == "Hi Ada"
    counted._send_heartbeat()
    prompts = usage_of(forge.bodies()[-1])
    assert prompts[("welcome.message", content)]["renders"] == 3
    assert prompts[("welcome.message", content)]["errors"] == {}
    assert prompts[("bye", content)]["renders"] == 2
    assert prompts[("bye", content)]["errors"] == {"MissingVariable": 1}
    assert prompts[("no.such.prompt", None)]["errors"] == {"PromptNotFound": 1}
    assert prompts[("gone", None)]["renders"] == 1


def test_variable_names_are_recorded_never_values(counted: AnvilClient, forge: FakeForge) -> None:
    counted.prompt("bye", name="Ada Secret", place="Paris Secret")
    with pytest.raises(MissingVariable):
        counted.prompt("bye", name="Ada Secret")
    counted._send_heartbeat()
    raw = forge.heartbeats[-1]["body"]
    assert b"Secret" not in raw
    entry = usage_of(json.loads(raw))[("bye", counted.status()["content_sha256"])]
    assert entry["variables"] == [["name"], ["name", "place"]]


def test_variable_names_are_capped() -> None:
    counter = Counter("p", None)
    for i in range(VARIABLE_SETS_MAX + 5):
        counter.note_names([f"a{i:02d}"] + [f"n{j:03d}" for j in range(VARIABLE_NAMES_MAX + 10)])
    assert len(counter.names) == VARIABLE_SETS_MAX
    assert all(len(names) == VARIABLE_NAMES_MAX for names in counter.names)


def test_record_counts_calls_tokens_latency_and_errors(
    counted: AnvilClient, forge: FakeForge
) -> None:
    content = counted.status()["content_sha256"]
    counted.record("welcome.message", input_tokens=100, output_tokens=20, latency_ms=12.5)
    counted.record("welcome.message", input_tokens=50, error="RateLimited")
    counted.record("welcome.message", error=TimeoutError("slow"))
    counted.record("unknown.prompt", output_tokens=7)
    counted._send_heartbeat()
    prompts = usage_of(forge.bodies()[-1])
    entry = prompts[("welcome.message", content)]
    assert (entry["calls"], entry["call_errors"]) == (3, 2)
    assert (entry["input_tokens"], entry["output_tokens"]) == (150, 20)
    assert entry["latency_ms"] == 12.5
    assert prompts[("unknown.prompt", None)]["output_tokens"] == 7


@pytest.mark.parametrize(
    ("args", "kwargs", "error"),
    [
        ((42,), {}, TypeError),
        (("",), {}, ValueError),
        (("p",), {"input_tokens": -1}, ValueError),
        (("p",), {"input_tokens": 1.5}, TypeError),
        (("p",), {"output_tokens": True}, TypeError),
        (("p",), {"latency_ms": float("nan")}, ValueError),
        (("p",), {"latency_ms": "3"}, TypeError),
        (("p",), {"error": 3}, TypeError),
    ],
)
def test_record_refuses_bad_arguments_with_one_sentence(
    counted: AnvilClient, args: tuple[Any, ...], kwargs: dict[str, Any], error: type[Exception]
) -> None:
    with pytest.raises(error) as caught:
        counted.record(*args, **kwargs)
    assert "\n" not in str(caught.value)


def test_the_module_level_record_uses_the_default_client(
    publisher: WirePublisher, tmp_path: Any, forge: FakeForge
) -> None:
    publisher.publish(PROMPTS, version="1.0.0")
    settings = publisher.client_settings(tmp_path / "cache", store=publisher.store)
    client = anvil_client.configure(**settings, forge_url=forge.url, start=False)
    try:
        client.sync()
        client._cache.try_lead()
        anvil_client.record("welcome.message", input_tokens=3)
        client._send_heartbeat()
        (entry,) = forge.bodies()[-1]["usage"]["prompts"]
        assert entry["input_tokens"] == 3
    finally:
        client.close()


def test_usage_off_counts_nothing_and_sends_no_usage(
    publisher: WirePublisher, make_client: MakeClient, forge: FakeForge
) -> None:
    publisher.publish(PROMPTS, version="1.0.0")
    client = make_client(forge_url=forge.url, usage=False)
    client.sync()
    client.prompt("welcome.message", name="Ada")
    client.record("welcome.message", input_tokens=3)
    assert client._snapshot is not None
    assert client._snapshot.served["welcome.message"][1] is None
    client._send_heartbeat()
    assert "usage" not in forge.bodies()[-1]


def test_no_usage_key_when_nothing_was_counted(counted: AnvilClient, forge: FakeForge) -> None:
    counted._send_heartbeat()
    assert "usage" not in forge.bodies()[-1]


# --- deltas, resends, caps --------------------------------------------------------------------


def test_a_failed_heartbeat_resends_the_same_report_and_nothing_is_counted_twice(
    counted: AnvilClient, forge: FakeForge
) -> None:
    content = counted.status()["content_sha256"]
    counted.prompt("welcome.message", name="Ada")
    forge.answer = 503
    counted._send_heartbeat()
    first = forge.bodies()[-1]["usage"]
    counted.prompt("welcome.message", name="Ada")  # goes into the next report
    counted._send_heartbeat()
    again = forge.bodies()[-1]["usage"]
    assert again == first
    forge.answer = 204
    counted._send_heartbeat()
    assert forge.bodies()[-1]["usage"] == first  # delivered now
    counted._send_heartbeat()
    following = forge.bodies()[-1]["usage"]
    assert following["report_id"] > first["report_id"]
    assert usage_of({"usage": following})[("welcome.message", content)]["renders"] == 1
    counted._send_heartbeat()
    assert "usage" not in forge.bodies()[-1]  # everything was delivered exactly once


def test_reports_stay_within_the_cap_with_the_tail_in_other() -> None:
    usage = Usage()
    for i in range(600):
        counter = usage.counter(f"prompt.{i:04d}.with.a.rather.long.identifier", "a" * 64)
        counter.renders += i + 1
        counter.note_names(["customer_name", "product"])
    report = usage.take_report("2026-11-30T20:00:00.000Z")
    assert report is not None
    body = report.body
    size = len(json.dumps(body, separators=(",", ":")))
    assert size <= USAGE_MAX_SIZE
    assert body["prompts"][0]["renders"] == 600  # the heaviest first
    kept = sum(p["renders"] for p in body["prompts"])
    assert kept + body["other"]["renders"] == sum(range(1, 601))
    assert body["other"]["renders"] > 0


def test_a_whole_heartbeat_with_usage_stays_within_16_kib(
    counted: AnvilClient, forge: FakeForge
) -> None:
    assert counted._usage is not None
    for i in range(3000):
        counted._usage.counter(f"p.{i}", None).renders += 1
    counted._last_error = "x" * 50_000
    counted._send_heartbeat()
    assert len(forge.heartbeats[-1]["body"]) <= HEARTBEAT_MAX_SIZE
    assert forge.bodies()[-1]["usage"]["other"]["renders"] > 0


def test_an_old_forge_that_refuses_usage_still_gets_heartbeats(
    counted: AnvilClient, forge: FakeForge
) -> None:
    forge.respond = lambda record: 400 if b'"usage"' in record["body"] else 204
    counted.prompt("welcome.message", name="Ada")
    counted._send_heartbeat()
    bodies = forge.bodies()
    assert "usage" in bodies[-2] and "usage" not in bodies[-1]
    assert counted.status()["heartbeat_error"] is None
    counted.prompt("welcome.message", name="Ada")
    counted._send_heartbeat()
    assert "usage" not in forge.bodies()[-1]  # not offered again for a while
    # The counts are kept: once the FORGE takes usage, they are delivered.
    forge.respond = None
    counted._usage_refused_until = counted._clock()
    key = ("welcome.message", counted.status()["content_sha256"])
    counted._send_heartbeat()  # the report that was refused, unchanged
    counted._send_heartbeat()  # then what was counted since
    renders = [usage_of(body)[key]["renders"] for body in forge.bodies()[-2:]]
    assert renders == [1, 1]


def test_processes_that_do_not_send_heartbeats_hand_their_counts_over(
    publisher: WirePublisher, make_client: MakeClient, forge: FakeForge
) -> None:
    publisher.publish(PROMPTS, version="1.0.0")
    leader = make_client(forge_url=forge.url)
    leader.sync()
    assert leader._cache.try_lead()
    worker = make_client(forge_url=forge.url)
    assert not worker._cache.try_lead()
    worker.prompt("welcome.message", name="Ada")
    worker.prompt("welcome.message", name="Bob")
    leader.prompt("welcome.message", name="Eve")
    worker._hand_over_usage()
    leader._send_heartbeat()
    entry = usage_of(forge.bodies()[-1])[("welcome.message", leader.status()["content_sha256"])]
    assert entry["renders"] == 3
    assert list(leader._cache.usage_dir.iterdir()) == []
    worker.close()  # hands over what it counted since
    leader._send_heartbeat()
    assert "usage" not in forge.bodies()[-1]


def test_frozen_instances_report_usage(
    publisher: WirePublisher, make_client: MakeClient, forge: FakeForge
) -> None:
    publisher.publish(PROMPTS, version="1.0.0")
    make_client().sync()
    client = make_client(forge_url=forge.url, mode="frozen")
    client._cache.try_lead()
    client.prompt("welcome.message", name="Ada")
    client._send_heartbeat()
    body = forge.bodies()[-1]
    assert body["mode"] == "frozen"
    assert body["usage"]["prompts"][0]["renders"] == 1


# --- heartbeat pace --------------------------------------------------------------------------


def test_heartbeats_go_every_30_s_for_15_minutes_after_an_apply(
    publisher: WirePublisher, make_client: MakeClient, forge: FakeForge
) -> None:
    publisher.publish(PROMPTS, version="1.0.0")
    client = make_client(forge_url=forge.url, heartbeat_interval=300)
    now = [1000.0]
    client._clock = lambda: now[0]
    client._fast_heartbeats_until = 0.0
    client._send_heartbeat()
    assert client._next_heartbeat == 1300.0  # nothing applied yet
    client.sync()  # applies 1.0.0
    client._send_heartbeat()
    assert client._next_heartbeat == 1030.0
    now[0] += 15 * 60 + 1
    client._send_heartbeat()
    assert client._next_heartbeat == now[0] + 300
    # A restart that loads what was applied before is no new release.
    restarted = make_client(forge_url=forge.url, heartbeat_interval=300)
    restarted._send_heartbeat()
    assert restarted._next_heartbeat - restarted._clock() > 250


def test_a_slow_forge_never_delays_polling(
    publisher: WirePublisher, make_client: MakeClient, forge: FakeForge, store: Any
) -> None:
    from tests.anvil_client.spy_stores import wait_for

    publisher.publish(PROMPTS, version="1.0.0")
    forge.hold.clear()  # every heartbeat hangs until released
    client = make_client(forge_url=forge.url, poll_interval=0.05, start=True)
    wait_for(lambda: client._heartbeat_due is False, message="a heartbeat in flight")
    polls = len(store.pointer_gets())
    wait_for(lambda: len(store.pointer_gets()) >= polls + 3, message="polls during the heartbeat")
    assert forge.heartbeats == []  # the heartbeat is still held
    forge.hold.set()
    wait_for(lambda: forge.heartbeats, message="the heartbeat")


def test_heartbeats_reuse_one_connection(counted: AnvilClient, forge: FakeForge) -> None:
    for _ in range(3):
        counted._send_heartbeat()
    assert len(forge.heartbeats) == 3
    assert len(forge.ports) == 1


def test_names_are_sampled_once_per_arming_and_on_every_failure(
    counted: AnvilClient, forge: FakeForge
) -> None:
    assert counted._usage is not None
    counted.prompt("welcome.message", name="Ada")  # the first render: sampled
    for _ in range(5):  # not armed again: not sampled
        counted.prompt("welcome.message", name="Ada", extra=1)
    counted._usage.arm_sampling()  # what the background thread does every second
    counted.prompt("welcome.message", name="Ada", other=2)  # sampled
    counted.prompt("welcome.message", name="Ada", third=3)  # not sampled
    with pytest.raises(MissingVariable):
        counted.prompt("bye", place="Paris")  # a failure: always noted
    counted._send_heartbeat()
    prompts = usage_of(forge.bodies()[-1])
    content = counted.status()["content_sha256"]
    assert prompts[("welcome.message", content)]["renders"] == 8
    assert prompts[("welcome.message", content)]["variables"] == [["name"], ["name", "other"]]
    assert prompts[("bye", content)]["variables"] == [["place"]]


def test_the_poller_arms_name_sampling(
    publisher: WirePublisher, make_client: MakeClient, forge: FakeForge
) -> None:
    publisher.publish(PROMPTS, version="1.0.0")
    client = make_client(forge_url=forge.url, poll_interval=0.05)
    client.sync()
    client.prompt("welcome.message", name="Ada")
    assert client._snapshot is not None
    counter = client._snapshot.served["welcome.message"][1]
    assert counter is not None and counter.sample is False
    client._next_disk_check = client._clock()
    client._tick()
    assert counter.sample is True


FORKED = """
import json, os, sys
from anvil_client import AnvilClient

cfg = json.loads(sys.argv[1])
client = AnvilClient(**cfg, start=False)
client.sync()
for _ in range(5):
    client.prompt("welcome.message", name="Ada")
pid = os.fork()
if pid == 0:  # a worker: its own counts only, handed over when it closes
    for _ in range(3):
        client.prompt("welcome.message", name="Bob")
    client.close()
    os._exit(0)
os.waitpid(pid, 0)
assert client._cache.try_lead()
client._send_heartbeat()
client.close()
"""


def test_a_forked_worker_reports_its_own_counts_once(
    publisher: WirePublisher, forge: FakeForge, tmp_path: Any
) -> None:
    import subprocess
    import sys
    from pathlib import Path

    publisher.publish(PROMPTS, version="1.0.0")
    cfg = {
        "store": publisher.store.url,
        "project_id": publisher.project_id,
        "access_token": publisher.token,
        "trusted_keys": [publisher.trusted_key],
        "cache_dir": str(tmp_path / "cache"),
        "forge_url": forge.url,
    }
    env = {"PYTHONPATH": str(Path(__file__).resolve().parents[2]), "PATH": "/usr/bin:/bin"}
    subprocess.run([sys.executable, "-c", FORKED, json.dumps(cfg)], env=env, check=True, timeout=60)
    (body,) = forge.bodies()
    (entry,) = body["usage"]["prompts"]
    assert entry["renders"] == 8  # 5 before the fork, 3 in the worker: none twice


def test_report_ids_keep_increasing_across_processes_of_an_instance() -> None:
    import time

    before = time.time_ns() // 1_000_000
    earlier = Usage(first_report_id=1)  # e.g. a process that started long ago takes over
    earlier.counter("p", None).renders += 1
    first = earlier.take_report("2026-11-30T20:00:00.000Z")
    assert first is not None and first.report_id >= before
    earlier.accepted(first)
    earlier.counter("p", None).renders += 1
    second = earlier.take_report("2026-11-30T20:00:30.000Z")
    assert second is not None and second.report_id > first.report_id
