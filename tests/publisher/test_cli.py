"""``anvil-publish``: the documented forms, their outputs, and one clear sentence on failure."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from anvil_client.stores import FileStore
from anvil_client.wire import (
    AccessToken,
    Pointer,
    TrustedKey,
    load_private_key_file,
    private_key_pem,
    public_key_text,
    verify_envelope,
    write_private_key_file,
)
from publisher import dump_prompt_file
from publisher.cli import cli
from tests.publisher.conftest import client_apply, public_text
from tests.servers import free_port_block


@pytest.fixture
def workdir(tmp_path: Path, prompts: dict[str, Any], signing_key: Ed25519PrivateKey) -> Path:
    (tmp_path / "prompts" / "support").mkdir(parents=True)
    chat = {"support.chat": prompts.pop("support.chat")}
    (tmp_path / "prompts" / "main.yaml").write_text(dump_prompt_file(prompts), encoding="utf-8")
    (tmp_path / "prompts" / "support" / "chat.yml").write_text(
        dump_prompt_file(chat), encoding="utf-8"
    )
    write_private_key_file(signing_key, tmp_path / "key.pem")
    return tmp_path


@pytest.fixture
def store_url(workdir: Path) -> str:
    return (workdir / "store").as_uri()


def run(*args: str, env: dict[str, str] | None = None) -> Result:
    clean = {"ANVIL_SIGNING_KEY": "", "ANVIL_RECIPIENTS": "", "ANVIL_ACCESS_TOKEN": ""}
    clean.update(env or {})
    return CliRunner().invoke(cli, list(args), env=clean, catch_exceptions=True)


def ok(result: Result) -> Result:
    assert result.exit_code == 0, result.output
    return result


def failed(result: Result, fragment: str) -> str:
    """A failure is exit 1 and one 'Error: …' sentence on stderr: never a traceback."""
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    assert result.stdout == ""
    assert result.stderr.startswith("Error: ")
    assert fragment in result.stderr, result.stderr
    return result.stderr


def publish_args(workdir: Path, store_url: str, project_id: str, *extra: str) -> list[str]:
    return [
        "publish",
        str(workdir / "prompts"),
        "--store",
        store_url,
        "--project-id",
        project_id,
        "--channel",
        "production",
        "--signing-key",
        str(workdir / "key.pem"),
        *extra,
    ]


def store_snapshot(workdir: Path) -> dict[str, bytes]:
    root = workdir / "store"
    if not root.exists():
        return {}
    store = FileStore(root)
    return {key: store.get(key).data for key in store.list("")}


# -- keys and tokens ---------------------------------------------------------------------------


def test_keygen_writes_0600_and_prints_the_public_key_last(tmp_path: Path) -> None:
    out = tmp_path / "signing.pem"
    result = ok(run("keygen", "--out", str(out)))
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    last = result.stdout.strip().splitlines()[-1]
    assert last == public_key_text(load_private_key_file(out).public_key())
    before = out.read_bytes()
    failed(run("keygen", "--out", str(out)), "already exists; refusing to overwrite")
    assert out.read_bytes() == before


def test_token_new_prints_a_token_last() -> None:
    first = ok(run("token", "new")).stdout.strip().splitlines()[-1]
    second = ok(run("token", "new")).stdout.strip().splitlines()[-1]
    assert AccessToken.parse(first).token_id != AccessToken.parse(second).token_id


# -- build and publish -------------------------------------------------------------------------


def test_build_writes_the_canonical_bundle_with_a_stable_prompt_set_id(
    workdir: Path, project_id: str
) -> None:
    out = workdir / "bundle.json"
    args = ["build", str(workdir / "prompts"), "--project-id", project_id, "--version", "1.2.0"]
    result = ok(run(*args, "--out", str(out), "--json"))
    summary = json.loads(result.stdout)
    doc = json.loads(out.read_bytes())
    expected_id = str(uuid.uuid5(uuid.UUID(project_id), "prompts"))
    assert doc["prompt_set_id"] == summary["prompt_set_id"] == expected_id
    assert summary["prompt_count"] == 3 and doc["version"] == "1.2.0"
    assert sorted(doc["snapshot"]) == ["greeting.fancy", "support.chat", "welcome.message"]
    to_stdout = ok(run(*args, "--out", "-"))
    assert json.loads(to_stdout.stdout_bytes)["snapshot"] == doc["snapshot"]


def test_publish_a_directory_with_json_output(
    workdir: Path,
    store_url: str,
    project_id: str,
    signing_key: Ed25519PrivateKey,
    token_a: AccessToken,
) -> None:
    args = publish_args(workdir, store_url, project_id, "--version", "1.0.0")
    result = ok(run(*args, "--recipient", token_a.text, "--json"))
    out = json.loads(result.stdout)
    assert out["sequence"] == 1 and out["version"] == "1.0.0"
    for key in ("content_sha256", "object_path", "object_size", "plaintext_size", "etag"):
        assert out[key]
    assert set(out["timings"]) >= {"validate", "serialize", "encrypt", "upload", "pointer_cas"}
    assert out["recipients"] == [token_a.token_id]
    store = FileStore(workdir / "store")
    applied = client_apply(store, project_id, "production", signing_key, token_a)
    assert applied.bundle.content_sha256 == out["content_sha256"]
    assert token_a.text not in result.output  # secrets are never printed


def test_publish_a_bundle_file_with_secrets_from_env_and_files(
    workdir: Path,
    store_url: str,
    project_id: str,
    signing_key: Ed25519PrivateKey,
    token_a: AccessToken,
    token_b: AccessToken,
) -> None:
    bundle = workdir / "bundle.json"
    ok(
        run(
            "build",
            str(workdir / "prompts"),
            "--project-id",
            project_id,
            "--version",
            "2.0.0",
            "--out",
            str(bundle),
        )
    )
    recipients = workdir / "tokens.txt"
    recipients.write_text(f"# CI tokens\n{token_a.text}  # web\n\n   # old ones removed\n")
    pem = private_key_pem(signing_key).decode()
    args = [
        "publish",
        str(bundle),
        "--store",
        store_url,
        "--project-id",
        project_id,
        "--channel",
        "staging",
        "--recipients-file",
        str(recipients),
        "--expires-in",
        "12h",
    ]
    result = ok(run(*args, "--json", env={"ANVIL_SIGNING_KEY": pem}))
    out = json.loads(result.stdout)
    assert out["version"] == "2.0.0" and out["recipients"] == [token_a.token_id]
    assert out["expires_at"] is not None
    # ANVIL_RECIPIENTS (comma-separated) when no recipient option is given
    env = {"ANVIL_SIGNING_KEY": pem, "ANVIL_RECIPIENTS": f"{token_a.text}, {token_b.text}"}
    out = json.loads(ok(run(*args[:-4], "--json", env=env)).stdout)
    assert sorted(out["recipients"]) == sorted([token_a.token_id, token_b.token_id])
    failed(
        run(*args[:-4], "--version", "9.9.9", env=env),
        "--version 9.9.9 differs from the bundle's 2.0.0",
    )


def test_publish_rollout_and_plaintext(
    workdir: Path, store_url: str, project_id: str, token_a: AccessToken
) -> None:
    ok(run(*publish_args(workdir, store_url, project_id, "--version", "1.0.0", "--plaintext")))
    (workdir / "prompts" / "main.yaml").write_text("welcome.message:\n  template: v2\n")
    result = ok(
        run(
            *publish_args(workdir, store_url, project_id, "--version", "2.0.0"),
            "--recipient",
            token_a.text,
            "--rollout-percent",
            "25",
        )
    )
    assert "rollout 25%" in result.stdout
    pointer = Pointer.parse(
        verify_envelope(
            FileStore(workdir / "store")
            .get(f"projects/{project_id}/channels/production.json")
            .data,
            [TrustedKey.parse(public_text(load_private_key_file(workdir / "key.pem")))],
        )
    )
    assert pointer.rollout is not None
    assert [r.version for r in pointer.rollout.previous] == ["1.0.0"]


# -- rollback, promote, history, inspect, export -----------------------------------------------


def test_rollback_promote_history_inspect_export(
    workdir: Path,
    store_url: str,
    project_id: str,
    signing_key: Ed25519PrivateKey,
    token_a: AccessToken,
    token_b: AccessToken,
) -> None:
    key = str(workdir / "key.pem")
    trusted = public_text(signing_key)
    base = ["--store", store_url, "--project-id", project_id]
    ok(
        run(
            *publish_args(workdir, store_url, project_id, "--version", "1.0.0"),
            "--recipient",
            token_a.text,
        )
    )
    (workdir / "prompts" / "main.yaml").write_text("welcome.message:\n  template: v2\n")
    ok(
        run(
            *publish_args(workdir, store_url, project_id, "--version", "2.0.0"),
            "--recipient",
            token_a.text,
        )
    )
    back = ok(
        run(
            "rollback",
            *base,
            "--channel",
            "production",
            "--to-sequence",
            "1",
            "--signing-key",
            key,
            "--access-token",
            token_a.text,
            "--recipient",
            token_b.text,
            "--json",
        )
    )
    assert json.loads(back.stdout)["sequence"] == 3
    assert json.loads(back.stdout)["version"] == "1.0.0"
    ok(run("promote", *base, "--from", "production", "--to", "live-eu", "--signing-key", key))
    store = FileStore(workdir / "store")
    assert (
        client_apply(store, project_id, "live-eu", signing_key, token_b).bundle.version == "1.0.0"
    )

    history = json.loads(
        ok(
            run("history", *base, "--channel", "production", "--trusted-key", trusted, "--json")
        ).stdout
    )
    assert [(e["sequence"], e["version"], e["verified"]) for e in history["entries"]] == [
        (1, "1.0.0", True),
        (2, "2.0.0", True),
        (3, "1.0.0", True),
    ]
    table = ok(run("history", *base, "--channel", "production")).stdout
    assert "unchecked" in table and "2.0.0" in table

    seen = json.loads(
        ok(
            run(
                "inspect",
                *base,
                "--channel",
                "production",
                "--trusted-key",
                trusted,
                "--access-token",
                token_b.text,
                "--json",
            )
        ).stdout
    )
    assert (seen["sequence"], seen["version"], seen["prompt_count"]) == (3, "1.0.0", 3)
    assert seen["keyid"] == TrustedKey.parse(trusted).keyid
    for field in ("published_at", "expires_at", "releases"):
        assert field in seen
    assert [r["version"] for r in seen["releases"]] == ["1.0.0"]
    human = ok(run("inspect", *base, "--channel", "production", "--trusted-key", trusted)).stdout
    assert "signature      verified" in human

    out = workdir / "bootstrap.json"
    ok(
        run(
            "export",
            *base,
            "--channel",
            "production",
            "--trusted-key",
            trusted,
            "--out",
            str(out),
            env={"ANVIL_ACCESS_TOKEN": token_b.text},
        )
    )
    boot = json.loads(out.read_bytes())
    assert [json.loads(text)["version"] for text in boot["bundles"].values()] == ["1.0.0"]


# -- failures: one sentence, exit 1, channel untouched ------------------------------------------


def test_broken_template_names_file_and_line_and_writes_nothing(
    workdir: Path, store_url: str, project_id: str, token_a: AccessToken
) -> None:
    ok(
        run(
            *publish_args(workdir, store_url, project_id, "--version", "1.0.0"),
            "--recipient",
            token_a.text,
        )
    )
    before = store_snapshot(workdir)
    (workdir / "prompts" / "broken.yaml").write_text("oops:\n  template: |\n    ok\n    {% if %}\n")
    stderr = failed(
        run(
            *publish_args(workdir, store_url, project_id, "--version", "1.1.0"),
            "--recipient",
            token_a.text,
        ),
        "broken.yaml:4: prompt 'oops': template line 2",
    )
    assert len(stderr.strip().splitlines()) == 1
    assert store_snapshot(workdir) == before


def test_several_problems_are_listed_one_per_line(
    workdir: Path, store_url: str, project_id: str
) -> None:
    (workdir / "prompts" / "bad.yaml").write_text("Bad:\n  template: x\nnone:\n  metadata: {}\n")
    stderr = failed(
        run(*publish_args(workdir, store_url, project_id, "--version", "1.0", "--plaintext")),
        "3 problems found; nothing was written:",
    )
    assert "version '1.0' is not a semantic version" in stderr
    assert "bad.yaml:1: prompt 'Bad': id is invalid" in stderr
    assert "bad.yaml:3: prompt 'none': has neither" in stderr
    assert store_snapshot(workdir) == {}


def test_unknown_store_scheme(workdir: Path, project_id: str, token_a: AccessToken) -> None:
    failed(
        run(
            *publish_args(workdir, "ftp://host/x", project_id, "--version", "1.0.0"),
            "--recipient",
            token_a.text,
        ),
        "unknown store scheme 'ftp'",
    )


@pytest.mark.parametrize("problem", ["missing", "garbage", "public"])
def test_unreadable_key(
    workdir: Path, store_url: str, project_id: str, token_a: AccessToken, problem: str
) -> None:
    bad = workdir / "bad.pem"
    if problem == "garbage":
        bad.write_text("not a key")
    elif problem == "public":
        bad.write_text(public_key_text(load_private_key_file(workdir / "key.pem").public_key()))
    args = publish_args(
        workdir, store_url, project_id, "--version", "1.0.0", "--recipient", token_a.text
    )
    args[args.index("--signing-key") + 1] = str(bad)
    expected = "cannot read signing key file" if problem == "missing" else "is not an unencrypted"
    failed(run(*args), expected)
    assert store_snapshot(workdir) == {}
    at = args.index("--signing-key")
    failed(run(*args[:at], *args[at + 2 :]), "no signing key")  # none given at all


def test_unreachable_store(workdir: Path, project_id: str, token_a: AccessToken) -> None:
    port = free_port_block(1)[0]
    url = f"s3://bucket/p?endpoint_url=http://127.0.0.1:{port}"
    failed(
        run(
            *publish_args(workdir, url, project_id, "--version", "1.0.0"),
            "--recipient",
            token_a.text,
        ),
        "failed",
    )


def test_wrong_key_for_inspect(
    workdir: Path,
    store_url: str,
    project_id: str,
    other_key: Ed25519PrivateKey,
    token_a: AccessToken,
) -> None:
    ok(
        run(
            *publish_args(workdir, store_url, project_id, "--version", "1.0.0"),
            "--recipient",
            token_a.text,
        )
    )
    args = ["inspect", "--store", store_url, "--project-id", project_id, "--channel", "production"]
    failed(run(*args, "--trusted-key", public_text(other_key)), "not signed by a trusted key")
    failed(run(*args, "--trusted-key", "ed25519:nonsense"), "trusted key")
    failed(run(*args), "needs --trusted-key")
    failed(
        run(
            *args,
            "--trusted-key",
            public_text(load_private_key_file(workdir / "key.pem")),
            "--access-token",
            AccessToken.generate().text,
        ),
        "not a recipient",
    )


def test_argument_mistakes(
    workdir: Path, store_url: str, project_id: str, token_a: AccessToken
) -> None:
    failed(
        run(*publish_args(workdir, store_url, project_id), "--recipient", token_a.text),
        "--version is required",
    )
    failed(
        run(
            *publish_args(workdir, store_url, project_id, "--version", "1.0.0"),
            "--plaintext",
            "--recipient",
            token_a.text,
        ),
        "not both",
    )
    failed(
        run(*publish_args(workdir, store_url, project_id, "--version", "1.0.0")),
        "without recipients",
    )
    failed(
        run(
            *publish_args(
                workdir,
                store_url,
                project_id,
                "--version",
                "1.0.0",
                "--plaintext",
                "--expires-in",
                "soon",
            )
        ),
        "duration 'soon' is invalid",
    )
    failed(
        run(
            *publish_args(
                workdir, store_url, project_id, "--version", "1.0.0", "--recipient", "anvil_nope"
            )
        ),
        "recipient 1 is not an ACCESS_TOKEN",
    )
    missing = publish_args(workdir, store_url, project_id, "--version", "1.0.0", "--plaintext")
    missing[1] = str(workdir / "nowhere")
    failed(run(*missing), "neither a prompt directory nor a bundle file")
    usage = run("publish", "--store", store_url)
    assert usage.exit_code == 2 and "Traceback" not in usage.output
    assert store_snapshot(workdir) == {}


def test_unexpected_errors_are_one_sentence_too(
    workdir: Path, store_url: str, project_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from publisher import _publish

    def explode(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("something odd")

    monkeypatch.setattr(_publish.Publisher, "publish", explode)
    failed(
        run(*publish_args(workdir, store_url, project_id, "--version", "1.0.0", "--plaintext")),
        "unexpected error (RuntimeError): something odd.",
    )


def test_the_installed_entry_point(workdir: Path, store_url: str, project_id: str) -> None:
    exe = Path(sys.executable).with_name("anvil-publish")
    env = {**os.environ, "ANVIL_SIGNING_KEY": "", "ANVIL_RECIPIENTS": ""}
    good = subprocess.run(
        [
            str(exe),
            *publish_args(
                workdir, store_url, project_id, "--version", "1.0.0", "--plaintext", "--json"
            ),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert good.returncode == 0, good.stderr
    assert json.loads(good.stdout)["sequence"] == 1
    bad = subprocess.run(
        [str(exe), *publish_args(workdir, store_url, project_id, "--version", "x", "--plaintext")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert bad.returncode == 1
    assert bad.stderr.startswith("Error: version 'x' is not a semantic version")
    assert "Traceback" not in bad.stderr


# -- a channel serves every prompt set ----------------------------------------------------------


def second_set(workdir: Path, name: str, prompts: dict[str, Any]) -> Path:
    directory = workdir / name
    directory.mkdir()
    (directory / "prompts.yaml").write_text(dump_prompt_file(prompts), encoding="utf-8")
    return directory


def publish_json(result: Result) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(ok(result).stdout)
    return out


def test_two_prompt_directories_share_a_channel_with_names(
    workdir: Path,
    store_url: str,
    project_id: str,
    signing_key: Ed25519PrivateKey,
    token_a: AccessToken,
) -> None:
    checkout_dir = second_set(workdir, "checkout", {"checkout.total": {"template": "{{ n }}"}})
    first = publish_json(
        run(
            *publish_args(workdir, store_url, project_id, "--version", "1.0.0"),
            "--recipient",
            token_a.text,
            "--json",
        )
    )
    assert first["name"] == "prompts"  # the directory's name
    args = publish_args(workdir, store_url, project_id, "--version", "0.1.0")
    args[1] = str(checkout_dir)
    second = publish_json(
        run(*args, "--name", "Checkout helper", "--recipient", token_a.text, "--json")
    )
    assert second["changes"] == ["Checkout helper added"]
    assert sorted((r["name"], r["version"]) for r in second["releases"]) == [
        ("Checkout helper", "0.1.0"),
        ("prompts", "1.0.0"),
    ]
    assert [r["prompt_set_id"] for r in second["releases"]] == sorted(
        r["prompt_set_id"] for r in second["releases"]
    )
    # the name stays what the channel's entry says unless --name changes it
    again = publish_json(
        run(*args[:-2], "--version", "0.2.0", "--recipient", token_a.text, "--json")
    )
    assert again["name"] == "Checkout helper"
    human = ok(run(*args[:-2], "--version", "0.3.0", "--recipient", token_a.text)).stdout
    assert "published Checkout helper 0.3.0 to production" in human
    assert "Checkout helper 0.2.0 → 0.3.0" in human
    assert "serves" in human and "prompts 1.0.0" in human
    applied = client_apply(
        FileStore(workdir / "store"), project_id, "production", signing_key, token_a
    )
    assert applied.render("checkout.total", n=2) == "2"
    assert applied.render("welcome.message", name="a", role="b", access_level="c") == (
        "Welcome a! As b, you have c access."
    )
    # a bundle file's default name is its stem
    bundle = workdir / "helpdesk.json"
    helpdesk = second_set(workdir, "helpdesk", {"helpdesk.hi": {"template": "hi"}})
    ok(
        run(
            "build",
            str(helpdesk),
            "--project-id",
            project_id,
            "--version",
            "1.0.0",
            "--out",
            str(bundle),
        )
    )
    from_file = args.copy()
    from_file[1] = str(bundle)
    out = publish_json(run(*from_file[:-2], "--recipient", token_a.text, "--json"))
    assert out["name"] == "helpdesk" and len(out["releases"]) == 3

    # history and inspect show every entry
    trusted = public_text(signing_key)
    base = ["--store", store_url, "--project-id", project_id, "--channel", "production"]
    history = json.loads(ok(run("history", *base, "--trusted-key", trusted, "--json")).stdout)
    last = history["entries"][-1]
    assert sorted(r["name"] for r in last["releases"]) == ["Checkout helper", "helpdesk", "prompts"]
    assert all(len(r["content_sha256"]) == 64 and r["version"] for r in last["releases"])
    table = ok(run("history", *base)).stdout
    assert "Checkout helper  0.3.0" in table and "helpdesk  1.0.0" in table
    seen = json.loads(
        ok(
            run(
                "inspect", *base, "--trusted-key", trusted, "--access-token", token_a.text, "--json"
            )
        ).stdout
    )
    assert sorted((r["name"], r["version"], r["prompt_count"]) for r in seen["releases"]) == [
        ("Checkout helper", "0.3.0", 1),
        ("helpdesk", "1.0.0", 1),
        ("prompts", "1.0.0", 3),
    ]
    human = ok(run("inspect", *base, "--trusted-key", trusted)).stdout
    assert "3 prompt sets" in human and "Checkout helper 0.3.0" in human


def test_a_shared_prompt_id_is_refused_with_one_sentence(
    workdir: Path, store_url: str, project_id: str, token_a: AccessToken
) -> None:
    ok(
        run(
            *publish_args(
                workdir, store_url, project_id, "--version", "1.0.0", "--name", "Support bot"
            ),
            "--recipient",
            token_a.text,
        )
    )
    before = store_snapshot(workdir)
    clash = second_set(workdir, "checkout", {"welcome.message": {"template": "mine"}})
    args = publish_args(
        workdir, store_url, project_id, "--version", "0.1.0", "--name", "Checkout helper"
    )
    args[1] = str(clash)
    stderr = failed(
        run(*args, "--recipient", token_a.text),
        "prompt 'welcome.message' is in both Support bot 1.0.0 (already on 'production') and "
        "Checkout helper 0.1.0",
    )
    assert len(stderr.strip().splitlines()) == 1
    assert store_snapshot(workdir) == before


def test_new_recipients_need_an_access_token_to_re_encrypt_the_others(
    workdir: Path,
    store_url: str,
    project_id: str,
    signing_key: Ed25519PrivateKey,
    token_a: AccessToken,
    token_b: AccessToken,
) -> None:
    ok(
        run(
            *publish_args(workdir, store_url, project_id, "--version", "1.0.0"),
            "--recipient",
            token_a.text,
        )
    )
    checkout_dir = second_set(workdir, "checkout", {"checkout.total": {"template": "t"}})
    args = publish_args(workdir, store_url, project_id, "--version", "0.1.0")
    args[1] = str(checkout_dir)
    before = store_snapshot(workdir)
    failed(run(*args, "--recipient", token_b.text), "pass --access-token")
    assert store_snapshot(workdir) == before
    ok(run(*args, "--recipient", token_b.text, "--access-token", token_a.text))
    store = FileStore(workdir / "store")
    assert len(client_apply(store, project_id, "production", signing_key, token_b).releases) == 2
    # ANVIL_ACCESS_TOKEN works as well
    ok(run(*args, "--recipient", token_a.text, env={"ANVIL_ACCESS_TOKEN": token_b.text}))
    assert len(client_apply(store, project_id, "production", signing_key, token_a).releases) == 2


def test_remove_and_promote_one_set(
    workdir: Path,
    store_url: str,
    project_id: str,
    signing_key: Ed25519PrivateKey,
    token_a: AccessToken,
) -> None:
    key = str(workdir / "key.pem")
    base = ["--store", store_url, "--project-id", project_id]
    main_set = publish_json(
        run(
            *publish_args(workdir, store_url, project_id, "--version", "1.0.0"),
            "--recipient",
            token_a.text,
            "--json",
        )
    )
    checkout_dir = second_set(workdir, "checkout", {"checkout.total": {"template": "t"}})
    args = publish_args(
        workdir, store_url, project_id, "--version", "0.1.0", "--name", "Checkout helper"
    )
    args[1] = str(checkout_dir)
    both = publish_json(run(*args, "--recipient", token_a.text, "--json"))
    checkout_id = both["prompt_set_id"]
    # promote just the checkout set to staging, which has its own other set
    staging = [
        a if a != "production" else "staging"
        for a in publish_args(
            workdir,
            store_url,
            project_id,
            "--version",
            "2.0.0",
            "--recipient",
            token_a.text,
            "--json",
        )
    ]
    ok(run(*staging))
    promoted = publish_json(
        run(
            "promote",
            *base,
            "--from",
            "production",
            "--to",
            "staging",
            "--prompt-set-id",
            checkout_id,
            "--signing-key",
            key,
            "--access-token",
            token_a.text,
            "--json",
        )
    )
    assert sorted((r["name"], r["version"]) for r in promoted["releases"]) == [
        ("Checkout helper", "0.1.0"),
        ("prompts", "2.0.0"),
    ]
    # remove the checkout set from production
    removed = publish_json(
        run(
            "remove",
            *base,
            "--channel",
            "production",
            "--prompt-set-id",
            checkout_id,
            "--signing-key",
            key,
            "--json",
        )
    )
    assert removed["changes"] == ["Checkout helper removed"]
    assert [r["prompt_set_id"] for r in removed["releases"]] == [main_set["prompt_set_id"]]
    store = FileStore(workdir / "store")
    assert client_apply(store, project_id, "production", signing_key, token_a).versions == {
        main_set["prompt_set_id"]: "1.0.0"
    }
    human = ok(
        run(
            "remove",
            *base,
            "--channel",
            "staging",
            "--prompt-set-id",
            checkout_id,
            "--signing-key",
            key,
        )
    ).stdout
    assert (
        f"removed prompt set {checkout_id} from staging" in human
        and "Checkout helper removed" in human
    )
    before = store_snapshot(workdir)
    failed(
        run(
            "remove",
            *base,
            "--channel",
            "production",
            "--prompt-set-id",
            main_set["prompt_set_id"],
            "--signing-key",
            key,
        ),
        "is the only prompt set on 'production'",
    )
    failed(
        run(
            "remove",
            *base,
            "--channel",
            "production",
            "--prompt-set-id",
            "nope",
            "--signing-key",
            key,
        ),
        "serves no prompt set 'nope'",
    )
    assert store_snapshot(workdir) == before
