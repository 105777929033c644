"""anvil-publish against a real S3 server (SeaweedFS): round trips, racing processes, crashes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from anvil_client.stores import open_store
from anvil_client.wire import AccessToken, public_key_text, write_private_key_file
from publisher import Publisher, build_bundle, dump_prompt_file
from tests.publisher.conftest import PROMPTS, client_apply

pytestmark = pytest.mark.integration

ANVIL_PUBLISH = str(Path(sys.executable).with_name("anvil-publish"))
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def project_id() -> str:
    return str(uuid.uuid4())


@pytest.fixture
def key_file(tmp_path: Path, signing_key: Ed25519PrivateKey) -> Path:
    path = tmp_path / "signing.pem"
    write_private_key_file(signing_key, path)
    return path


@pytest.fixture(scope="module")
def signing_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ANVIL_SIGNING_KEY": "", "ANVIL_RECIPIENTS": ""}
    return subprocess.run(
        [ANVIL_PUBLISH, *args], capture_output=True, text=True, env=env, timeout=120, check=False
    )


def test_cli_publish_round_trip_and_headers(
    seaweed_bucket: str,
    seaweedfs: Any,
    tmp_path: Path,
    key_file: Path,
    signing_key: Ed25519PrivateKey,
    project_id: str,
) -> None:
    prompts_dir = tmp_path / "prompts"
    prompts_dir.mkdir()
    (prompts_dir / "all.yaml").write_text(dump_prompt_file(PROMPTS), encoding="utf-8")
    token = AccessToken.generate()
    common = ["--store", seaweed_bucket, "--project-id", project_id]
    done = run_cli(
        "publish",
        str(prompts_dir),
        *common,
        "--channel",
        "production",
        "--version",
        "1.0.0",
        "--signing-key",
        str(key_file),
        "--recipient",
        token.text,
        "--json",
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    store = open_store(seaweed_bucket)
    try:
        applied = client_apply(store, project_id, "production", signing_key, token)
        assert applied.bundle.content_sha256 == out["content_sha256"]
        assert applied.render("greeting.fancy", vip=True, name="zoë", items=["a", "b"]) == (
            "Dear ZOË,\nRésumé: a, b\n"
        )
    finally:
        store.close()
    bucket = seaweed_bucket.split("/")[2]
    client = seaweedfs.client()
    pointer = client.head_object(
        Bucket=bucket, Key=f"anvil/projects/{project_id}/channels/production.json"
    )
    bundle = client.head_object(Bucket=bucket, Key=f"anvil/{out['object_path']}")
    assert pointer["CacheControl"] == "no-cache"
    assert bundle["CacheControl"] == "public, max-age=31536000, immutable"
    assert pointer["ContentType"] == bundle["ContentType"] == "application/json"
    seen = run_cli(
        "inspect",
        *common,
        "--channel",
        "production",
        "--trusted-key",
        public_key_text(signing_key.public_key()),
        "--access-token",
        token.text,
        "--json",
    )
    assert seen.returncode == 0, seen.stderr
    assert json.loads(seen.stdout)["prompt_count"] == len(PROMPTS)
    # unreachable: the same bucket on a port nobody listens on
    dead = seaweed_bucket.replace(str(seaweedfs.s3_port), "1")
    fail = run_cli(
        "publish",
        str(prompts_dir),
        "--store",
        dead,
        "--project-id",
        project_id,
        "--channel",
        "production",
        "--version",
        "1.0.1",
        "--signing-key",
        str(key_file),
        "--plaintext",
    )
    assert (
        fail.returncode == 1
        and fail.stderr.startswith("Error: ")
        and "Traceback" not in fail.stderr
    )


RACER = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    from anvil_client.wire import load_private_key_file
    from publisher import Publisher, build_bundle

    store_url, project_id, key_path, name, rounds, go = sys.argv[1:7]
    key = load_private_key_file(key_path)
    deadline = time.monotonic() + 60
    while not Path(go).exists():  # start together
        if time.monotonic() > deadline:
            sys.exit("never started")
        time.sleep(0.005)
    results = []
    with Publisher(store_url, project_id=project_id, signing_key=key, max_attempts=50) as pub:
        for n in range(int(rounds)):
            prompts = {"who": {"template": f"{name} round {n}: {{{{ x }}}}"}}
            built = build_bundle(prompts, project_id=project_id, version=f"1.{n}.0",
                                 prompt_set_id=name)
            r = pub.publish(built, channel="production", plaintext=True)
            results.append([r.sequence, r.content_sha256, r.attempts])
    print(json.dumps(results))
    """
)


def test_two_publisher_processes_racing_on_one_channel(
    seaweed_bucket: str,
    tmp_path: Path,
    key_file: Path,
    signing_key: Ed25519PrivateKey,
    project_id: str,
) -> None:
    rounds = 15
    go = tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    racers = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                RACER,
                seaweed_bucket,
                project_id,
                str(key_file),
                name,
                str(rounds),
                str(go),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for name in ("alpha", "beta")
    ]
    go.touch()
    outputs = []
    for proc in racers:
        stdout, stderr = proc.communicate(timeout=240)
        assert proc.returncode == 0, stderr
        outputs.append(json.loads(stdout))
    claimed: dict[int, str] = {}
    for results in outputs:
        assert [seq for seq, _, _ in results] == sorted(seq for seq, _, _ in results)
        for sequence, content, _ in results:
            assert sequence not in claimed, f"sequence {sequence} claimed twice"
            claimed[sequence] = content
    assert sorted(claimed) == list(range(1, 2 * rounds + 1))  # no gaps, no duplicates
    with Publisher(seaweed_bucket, project_id=project_id, signing_key=signing_key) as pub:
        history = pub.history("production")
        current = pub.current("production")
    assert [entry.sequence for entry in history] == list(range(1, 2 * rounds + 1))
    assert all(entry.verified for entry in history)
    # what each publisher was told it published is exactly what history holds: no lost update
    assert {e.sequence: e.release.content_sha256 for e in history if e.release} == claimed
    assert current is not None and current.sequence == 2 * rounds
    retries = sum(attempts - 1 for results in outputs for _, _, attempts in results)
    print(f"racing publishers: {2 * rounds} publishes, {retries} compare-and-swap retries")


CRASHER = textwrap.dedent(
    """
    import os, sys
    from anvil_client.stores import open_store
    from anvil_client.wire import load_private_key_file
    from publisher import Publisher, build_bundle

    store_url, project_id, key_path = sys.argv[1:4]
    store = open_store(store_url)
    real_put = store.put

    def put(key, data, **kwargs):
        if key.endswith("channels/production.json"):
            os._exit(17)  # the process dies after the object, before the pointer
        return real_put(key, data, **kwargs)

    store.put = put
    built = build_bundle({"who": {"template": "new"}}, project_id=project_id,
                         version="2.0.0", prompt_set_id="s")
    Publisher(store, project_id=project_id, signing_key=load_private_key_file(key_path)).publish(
        built, channel="production", plaintext=True)
    """
)


def test_a_crash_between_object_and_pointer_leaves_the_old_release(
    seaweed_bucket: str, key_file: Path, signing_key: Ed25519PrivateKey, project_id: str
) -> None:
    with Publisher(seaweed_bucket, project_id=project_id, signing_key=signing_key) as pub:
        old = pub.publish(
            build_bundle(PROMPTS, project_id=project_id, version="1.0.0", prompt_set_id="s"),
            channel="production",
            plaintext=True,
        )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    crashed = subprocess.run(
        [sys.executable, "-c", CRASHER, seaweed_bucket, project_id, str(key_file)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert crashed.returncode == 17, crashed.stderr
    store = open_store(seaweed_bucket)
    try:
        bundles = store.list(f"projects/{project_id}/bundles/")
        assert len(bundles) == 2  # the new object was written ...
        applied = client_apply(store, project_id, "production", signing_key, None)
        assert (applied.pointer.sequence, applied.bundle.content_sha256) == (1, old.content_sha256)
    finally:
        store.close()


def test_the_live_client_applies_what_the_publisher_wrote(
    seaweed_bucket: str, tmp_path: Path, signing_key: Ed25519PrivateKey, project_id: str
) -> None:
    anvil_client = pytest.importorskip("anvil_client")
    token = AccessToken.generate()
    built = build_bundle(PROMPTS, project_id=project_id, version="1.0.0", prompt_set_id="s")
    with Publisher(seaweed_bucket, project_id=project_id, signing_key=signing_key) as pub:
        pub.publish(built, channel="production", recipients=[token.text])
    client = anvil_client.AnvilClient(
        store=seaweed_bucket,
        project_id=project_id,
        channel="production",
        access_token=token.text,
        trusted_keys=[public_key_text(signing_key.public_key())],
        cache_dir=tmp_path / "cache",
        start=False,
    )
    try:
        client.sync()
        assert client.prompt("welcome.message", name="Al", role="admin", access_level="full") == (
            "Welcome Al! As admin, you have full access."
        )
        assert client.status()["version"] == "1.0.0"
    finally:
        client.close()
