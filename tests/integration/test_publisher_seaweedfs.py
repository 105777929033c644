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
from tests.publisher.racing import SETS, check_race, race_two_sets

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


def test_two_publisher_processes_of_different_sets_both_land(
    seaweed_bucket: str, signing_key: Ed25519PrivateKey, project_id: str
) -> None:
    rounds = 10
    token = AccessToken.generate()
    outcomes = race_two_sets(seaweed_bucket, project_id, signing_key, rounds, [token.text])
    with Publisher(seaweed_bucket, project_id=project_id, signing_key=signing_key) as pub:
        check_race(outcomes, pub.history("production"), rounds)
        final = pub.current("production")
    assert final is not None and [r.prompt_set_id for r in final.releases] == list(SETS)
    store = open_store(seaweed_bucket)
    try:
        applied = client_apply(store, project_id, "production", signing_key, token)
    finally:
        store.close()
    assert applied.render("alpha.who", x=1) == f"alpha {rounds - 1} 1"
    assert applied.render("beta.who", x=2) == f"beta {rounds - 1} 2"
    retries = sum(a - 1 for outcome in outcomes.values() for _, _, a in outcome)
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


def test_cli_flows_of_a_channel_with_several_sets(
    seaweed_bucket: str,
    tmp_path: Path,
    key_file: Path,
    signing_key: Ed25519PrivateKey,
    project_id: str,
) -> None:
    """Second set kept, clash refused, re-encryption, promote one set, remove, roll back."""
    support_dir = tmp_path / "support"
    checkout_dir = tmp_path / "checkout"
    clash_dir = tmp_path / "clash"
    for directory, prompts in (
        (support_dir, PROMPTS),
        (checkout_dir, {"checkout.total": {"template": "Total {{ amount }}"}}),
        (clash_dir, {"welcome.message": {"template": "mine"}}),
    ):
        directory.mkdir()
        (directory / "p.yaml").write_text(dump_prompt_file(prompts), encoding="utf-8")
    token_a, token_b = AccessToken.generate(), AccessToken.generate()
    common = ["--store", seaweed_bucket, "--project-id", project_id, "--signing-key", str(key_file)]
    trusted = public_key_text(signing_key.public_key())

    def cli(*args: str) -> dict[str, Any]:
        done = run_cli(*args, "--json")
        assert done.returncode == 0, done.stderr
        out: dict[str, Any] = json.loads(done.stdout)
        return out

    def publish(directory: Path, version: str, *extra: str) -> subprocess.CompletedProcess[str]:
        return run_cli(
            "publish",
            str(directory),
            *common,
            "--channel",
            "production",
            "--version",
            version,
            *extra,
        )

    def served(token: AccessToken, channel: str = "production") -> dict[str, str]:
        store = open_store(seaweed_bucket)
        try:
            applied = client_apply(store, project_id, channel, signing_key, token)
        finally:
            store.close()
        return {r.name: r.version for r in applied.releases}

    first = publish(support_dir, "1.0.0", "--name", "Support bot", "--recipient", token_a.text)
    assert first.returncode == 0, first.stderr
    second = publish(
        checkout_dir, "0.1.0", "--name", "Checkout helper", "--recipient", token_a.text, "--json"
    )
    assert second.returncode == 0, second.stderr
    checkout_id = json.loads(second.stdout)["prompt_set_id"]
    assert served(token_a) == {"Support bot": "1.0.0", "Checkout helper": "0.1.0"}
    # a prompt id of another set: one sentence, nothing changes
    clash = publish(clash_dir, "0.1.0", "--recipient", token_a.text)
    assert clash.returncode == 1 and "Traceback" not in clash.stderr
    assert (
        "prompt 'welcome.message' is in both Support bot 1.0.0 (already on 'production')"
        in clash.stderr
    )
    # new recipients: the other entries are re-encrypted, which needs --access-token
    refused = publish(checkout_dir, "0.2.0", "--recipient", token_b.text)
    assert refused.returncode == 1 and "--access-token" in refused.stderr
    moved = publish(
        checkout_dir, "0.2.0", "--recipient", token_b.text, "--access-token", token_a.text
    )
    assert moved.returncode == 0, moved.stderr
    assert served(token_b) == {"Support bot": "1.0.0", "Checkout helper": "0.2.0"}
    # promote just one set to staging
    promoted = cli(
        "promote",
        *common,
        "--from",
        "production",
        "--to",
        "staging",
        "--prompt-set-id",
        checkout_id,
        "--access-token",
        token_b.text,
    )
    assert [r["name"] for r in promoted["releases"]] == ["Checkout helper"]
    # remove, then roll back to the list of sequence 3 (both sets) for token_a only
    removed = cli("remove", *common, "--channel", "production", "--prompt-set-id", checkout_id)
    assert removed["changes"] == ["Checkout helper removed"]
    assert served(token_b) == {"Support bot": "1.0.0"}
    back = cli(
        "rollback",
        *common,
        "--channel",
        "production",
        "--to-sequence",
        "3",
        "--recipient",
        token_a.text,
        "--access-token",
        token_b.text,
    )
    assert back["sequence"] == 5
    assert served(token_a) == {"Support bot": "1.0.0", "Checkout helper": "0.2.0"}
    history = cli(
        "history",
        "--store",
        seaweed_bucket,
        "--project-id",
        project_id,
        "--channel",
        "production",
        "--trusted-key",
        trusted,
    )
    assert [(e["sequence"], len(e["releases"]), e["verified"]) for e in history["entries"]] == [
        (1, 1, True),
        (2, 2, True),
        (3, 2, True),
        (4, 1, True),
        (5, 2, True),
    ]
    seen = cli(
        "inspect",
        "--store",
        seaweed_bucket,
        "--project-id",
        project_id,
        "--channel",
        "production",
        "--trusted-key",
        trusted,
        "--access-token",
        token_a.text,
    )
    assert [(r["name"], r["recipients"]) for r in seen["releases"]] == [
        (r["name"], [token_a.token_id]) for r in seen["releases"]
    ]
    assert sorted(r["name"] for r in seen["releases"]) == ["Checkout helper", "Support bot"]
