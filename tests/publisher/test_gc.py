"""``anvil-publish gc``: only objects no pointer and no kept history entry names go, never on
unverified data, dry run by default (FileStore, and moto's S3 with versioning)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from anvil_client.errors import ConfigError, StoreError, VerificationError
from anvil_client.stores import FileStore, GetResult
from anvil_client.wire import AccessToken, bundles_prefix, history_key, pointer_key
from publisher import GcReport, Publisher, build_bundle, collect_garbage
from publisher.cli import cli
from tests.publisher.conftest import client_apply, public_text

LATER = datetime.now(UTC) + timedelta(days=2)  # every object is old enough then


def _publish(pub: Publisher, prompts: dict[str, Any], version: str, channel: str, **kw: Any) -> str:
    built = build_bundle(
        {**prompts, "welcome.message": {"template": f"Welcome v{version}"}},
        project_id=pub.project_id,
        version=version,
        prompt_set_id="set-a",
    )
    result = pub.publish(built, channel, **kw)
    assert result.object_path is not None
    return result.object_path


def _objects(store: FileStore, project_id: str) -> set[str]:
    return set(store.list(bundles_prefix(project_id)))


@pytest.fixture
def three_versions(
    file_store: FileStore,
    project_id: str,
    signing_key: Ed25519PrivateKey,
    token_a: AccessToken,
    prompts: dict[str, Any],
) -> list[str]:
    """production: 1.0.0, 1.1.0, 1.2.0 (sequences 1-3); staging: 1.0.0 (sequence 1)."""
    pub = Publisher(file_store, project_id=project_id, signing_key=signing_key)
    paths = [
        _publish(pub, prompts, version, "production", recipients=[token_a.text])
        for version in ("1.0.0", "1.1.0", "1.2.0")
    ]
    pub.promote("production", "staging")  # staging now names 1.2.0's object too
    return paths


def test_dry_run_reports_and_deletes_nothing(
    file_store: FileStore,
    project_id: str,
    signing_key: Ed25519PrivateKey,
    three_versions: list[str],
) -> None:
    before = _objects(file_store, project_id)
    report = collect_garbage(
        file_store, project_id, [public_text(signing_key)], keep_history=1, now=LATER
    )
    assert report.dry_run
    assert [o.path for o in report.unreferenced] == sorted(three_versions[:2])
    sizes = {p: (file_store.root / p).stat().st_size for p in three_versions[:2]}
    assert report.reclaimable_bytes == sum(sizes.values()) > 0
    assert report.kept == (three_versions[2],)
    assert report.channels == ("production", "staging")
    assert report.deleted == ()
    assert _objects(file_store, project_id) == before == set(three_versions)


def test_delete_removes_only_unnamed_objects_and_clients_still_apply(
    file_store: FileStore,
    project_id: str,
    signing_key: Ed25519PrivateKey,
    token_a: AccessToken,
    three_versions: list[str],
) -> None:
    key = public_text(signing_key)
    report = collect_garbage(file_store, project_id, [key], keep_history=1, delete=True, now=LATER)
    assert set(report.deleted) == set(three_versions[:2])
    assert _objects(file_store, project_id) == {three_versions[2]}
    for channel in ("production", "staging"):
        applied = client_apply(file_store, project_id, channel, key, token_a)
        assert applied.versions == {"set-a": "1.2.0"}
    again = collect_garbage(file_store, project_id, [key], keep_history=1, delete=True, now=LATER)
    assert again.deleted == () and again.unreferenced == ()


def test_kept_history_entries_protect_their_bundles(
    file_store: FileStore,
    project_id: str,
    signing_key: Ed25519PrivateKey,
    token_a: AccessToken,
    three_versions: list[str],
) -> None:
    key = public_text(signing_key)
    report = collect_garbage(file_store, project_id, [key], keep_history=2, delete=True, now=LATER)
    assert report.deleted == (three_versions[0],)
    # The last two history entries of production can still be rolled back to.
    pub = Publisher(file_store, project_id=project_id, signing_key=signing_key)
    result = pub.rollback("production", to_sequence=2, recipients=[token_a.text])
    assert client_apply(file_store, project_id, "production", key, token_a).versions == {
        "set-a": "1.1.0"
    }
    assert result.sequence == 4
    everything = collect_garbage(file_store, project_id, [key], keep_history=10, now=LATER)
    assert everything.unreferenced == ()


def test_keep_history_zero_keeps_only_what_pointers_name(
    file_store: FileStore,
    project_id: str,
    signing_key: Ed25519PrivateKey,
    three_versions: list[str],
) -> None:
    report = collect_garbage(
        file_store, project_id, [public_text(signing_key)], keep_history=0, now=LATER
    )
    assert report.kept == (three_versions[2],)


def test_both_lists_of_a_rollout_are_kept(
    file_store: FileStore,
    project_id: str,
    signing_key: Ed25519PrivateKey,
    token_a: AccessToken,
    prompts: dict[str, Any],
) -> None:
    pub = Publisher(file_store, project_id=project_id, signing_key=signing_key)
    old = _publish(pub, prompts, "1.0.0", "production", recipients=[token_a.text])
    new = _publish(
        pub, prompts, "2.0.0", "production", recipients=[token_a.text], rollout_percent=10
    )
    report = collect_garbage(
        file_store, project_id, [public_text(signing_key)], keep_history=0, now=LATER
    )
    assert set(report.kept) == {old, new}
    assert report.unreferenced == ()


def test_young_objects_are_kept_for_min_age(
    file_store: FileStore,
    project_id: str,
    signing_key: Ed25519PrivateKey,
    three_versions: list[str],
) -> None:
    key = public_text(signing_key)
    report = collect_garbage(file_store, project_id, [key], keep_history=0, delete=True)
    assert report.unreferenced == () and report.deleted == ()
    assert {o.path for o in report.too_recent} == set(three_versions[:2])
    assert _objects(file_store, project_id) == set(three_versions)
    none_kept = collect_garbage(file_store, project_id, [key], keep_history=0, min_age=timedelta(0))
    assert {o.path for o in none_kept.unreferenced} == set(three_versions[:2])


def test_a_pointer_that_does_not_verify_stops_gc(
    file_store: FileStore,
    project_id: str,
    signing_key: Ed25519PrivateKey,
    other_key: Ed25519PrivateKey,
    token_a: AccessToken,
    prompts: dict[str, Any],
    three_versions: list[str],
) -> None:
    # A channel signed by a key gc does not trust: its entries cannot be known for sure.
    rogue = Publisher(file_store, project_id=project_id, signing_key=other_key)
    _publish(rogue, prompts, "9.0.0", "canary", recipients=[token_a.text])
    before = _objects(file_store, project_id)
    with pytest.raises(VerificationError, match="nothing is deleted on unverified data") as e:
        collect_garbage(file_store, project_id, [public_text(signing_key)], delete=True, now=LATER)
    assert "the pointer of channel 'canary'" in str(e.value)
    assert _objects(file_store, project_id) == before


def test_a_kept_history_entry_that_does_not_verify_stops_gc(
    file_store: FileStore,
    project_id: str,
    signing_key: Ed25519PrivateKey,
    three_versions: list[str],
) -> None:
    path = file_store.root / history_key(project_id, "production", 2)
    path.write_bytes(path.read_bytes().replace(b'"sig":"', b'"sig":"AAAA', 1))
    key = public_text(signing_key)
    with pytest.raises(VerificationError, match=r"history entry .*000000000002\.json"):
        collect_garbage(file_store, project_id, [key], keep_history=2, delete=True, now=LATER)
    assert _objects(file_store, project_id) == set(three_versions)
    # Outside the kept window the entry is not read at all, so it cannot stop gc.
    report = collect_garbage(file_store, project_id, [key], keep_history=1, now=LATER)
    assert len(report.unreferenced) == 2


def test_wrong_project_or_missing_channel_is_refused(
    file_store: FileStore,
    project_id: str,
    signing_key: Ed25519PrivateKey,
    three_versions: list[str],
) -> None:
    key = public_text(signing_key)
    with pytest.raises(ConfigError, match="channel 'prod' has no pointer"):
        collect_garbage(file_store, project_id, [key], channels=["prod"], delete=True, now=LATER)
    for channel in ("production", "staging"):
        (file_store.root / pointer_key(project_id, channel)).unlink()
    with pytest.raises(ConfigError, match="refusing to delete them all"):
        collect_garbage(file_store, project_id, [key], delete=True, now=LATER)
    assert _objects(file_store, project_id) == set(three_versions)
    with pytest.raises(ConfigError, match="trusted public keys"):
        collect_garbage(file_store, project_id, [], now=LATER)


def test_keys_that_are_not_bundle_objects_are_never_deleted(
    file_store: FileStore,
    project_id: str,
    signing_key: Ed25519PrivateKey,
    three_versions: list[str],
) -> None:
    stray = bundles_prefix(project_id) + "README.txt"
    file_store.put(stray, b"not a bundle")
    report = collect_garbage(
        file_store, project_id, [public_text(signing_key)], keep_history=0, delete=True, now=LATER
    )
    assert report.ignored == (stray,)
    assert stray in _objects(file_store, project_id)


class _PublishesDuringGc(FileStore):
    """Another publisher lands while gc reads the history (before it deletes)."""

    def __init__(self, root: Path, publish: Any) -> None:
        super().__init__(root)
        self._publish = publish

    def get(self, key: str, **kw: Any) -> GetResult:
        if "/history/" in key and self._publish is not None:
            publish, self._publish = self._publish, None
            publish()
        return super().get(key, **kw)


def test_a_publish_while_gc_runs_stops_the_delete(
    file_store: FileStore,
    project_id: str,
    signing_key: Ed25519PrivateKey,
    token_a: AccessToken,
    prompts: dict[str, Any],
    three_versions: list[str],
) -> None:
    other = Publisher(FileStore(file_store.root), project_id=project_id, signing_key=signing_key)
    racing = _PublishesDuringGc(
        file_store.root,
        lambda: other.rollback("staging", to_sequence=1, recipients=[token_a.text]),
    )
    with pytest.raises(StoreError, match="changed while gc ran; nothing was deleted"):
        collect_garbage(
            racing, project_id, [public_text(signing_key)], keep_history=1, delete=True, now=LATER
        )
    assert set(three_versions) <= _objects(file_store, project_id)


# ---------------------------------------------------------------------------- the CLI


def _run(args: list[str]) -> Any:
    return CliRunner().invoke(cli, args, catch_exceptions=False)


def test_cli_dry_run_then_delete(
    file_store: FileStore,
    project_id: str,
    signing_key: Ed25519PrivateKey,
    three_versions: list[str],
) -> None:
    base = [
        "gc",
        "--store",
        file_store.url,
        "--project-id",
        project_id,
        "--trusted-key",
        public_text(signing_key),
        "--keep-history",
        "1",
        "--min-age",
        "0",
    ]
    dry = _run(base)
    assert dry.exit_code == 0, dry.output
    size = sum((file_store.root / p).stat().st_size for p in three_versions[:2])
    assert f"dry run: would delete 2 bundle objects ({size} bytes)" in dry.output
    assert all(p in dry.output for p in three_versions[:2])
    assert "run again with --delete" in dry.output
    assert _objects(file_store, project_id) == set(three_versions)

    done = _run([*base, "--delete", "--json", "--channel", "production"])
    assert done.exit_code == 0, done.output
    data = json.loads(done.output)
    assert (data["dry_run"], sorted(data["deleted"])) == (False, sorted(three_versions[:2]))
    assert data["reclaimable_bytes"] == size
    assert _objects(file_store, project_id) == {three_versions[2]}


def test_cli_refuses_without_keys_and_on_unverified_data(
    file_store: FileStore,
    project_id: str,
    other_key: Ed25519PrivateKey,
    three_versions: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("ANVIL_TRUSTED_KEYS", raising=False)
    base = ["gc", "--store", file_store.url, "--project-id", project_id, "--min-age", "0"]
    missing = CliRunner().invoke(cli, [*base, "--delete"])
    assert missing.exit_code == 1
    assert "gc needs --trusted-key" in missing.output
    wrong = CliRunner().invoke(cli, [*base, "--delete", "--trusted-key", public_text(other_key)])
    assert wrong.exit_code == 1
    assert "nothing is deleted on unverified data" in wrong.output
    assert "Traceback" not in wrong.output
    assert _objects(file_store, project_id) == set(three_versions)


# ------------------------------------------------------------------- S3 (moto) + versioning


def test_gc_on_versioned_s3_deletes_and_the_version_stays_restorable(
    moto_s3: Any,
    project_id: str,
    signing_key: Ed25519PrivateKey,
    token_a: AccessToken,
    prompts: dict[str, Any],
) -> None:
    from anvil_client.stores import S3Store

    moto_s3.put_bucket_versioning(
        Bucket="anvil-test", VersioningConfiguration={"Status": "Enabled"}
    )
    store = S3Store("anvil-test", "team/anvil", client=moto_s3)
    pub = Publisher(store, project_id=project_id, signing_key=signing_key)
    old = _publish(pub, prompts, "1.0.0", "production", recipients=[token_a.text])
    new = _publish(pub, prompts, "1.1.0", "production", recipients=[token_a.text])
    key = public_text(signing_key)
    dry: GcReport = collect_garbage(store, project_id, [key], keep_history=1, now=LATER)
    head = moto_s3.head_object(Bucket="anvil-test", Key=f"team/anvil/{old}")
    assert [(o.path, o.size) for o in dry.unreferenced] == [(old, head["ContentLength"])]
    done = collect_garbage(store, project_id, [key], keep_history=1, delete=True, now=LATER)
    assert done.deleted == (old,)
    assert set(store.list(bundles_prefix(project_id))) == {new}
    # Versioning keeps the deleted object as a noncurrent version: restore it by copying.
    versions = moto_s3.list_object_versions(Bucket="anvil-test", Prefix=f"team/anvil/{old}")
    kept = [v for v in versions.get("Versions", []) if not v["IsLatest"]]
    assert len(kept) == 1
    moto_s3.copy_object(
        Bucket="anvil-test",
        Key=f"team/anvil/{old}",
        CopySource={
            "Bucket": "anvil-test",
            "Key": f"team/anvil/{old}",
            "VersionId": kept[0]["VersionId"],
        },
    )
    pub.rollback("production", to_sequence=1, recipients=[token_a.text])
    assert client_apply(store, project_id, "production", key, token_a).versions == {
        "set-a": "1.0.0"
    }
