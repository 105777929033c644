"""The ``anvil`` command: CliRunner for behaviour, a real subprocess for exit codes and output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from anvil_client.cli import cli
from anvil_client.wire import AccessToken
from tests.anvil_client.wire_publisher import OTHER_SET_ID, WirePublisher

PROMPTS = {
    "welcome.message": "Welcome {{ name }}!",
    "items.list": "{{ items | join(', ') }}",
    "support.chat": [("system", "You help {{ product }} users."), ("user", "{{ question }}")],
}


@pytest.fixture
def app(tmp_path: Path, publisher: WirePublisher, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An application directory (the cwd) and a published 1.0.0; the token is in the env."""
    publisher.publish(PROMPTS, version="1.0.0")
    directory = tmp_path / "app"
    directory.mkdir()
    monkeypatch.chdir(directory)
    for var in [v for v in os.environ if v.startswith("ANVIL_")]:
        monkeypatch.delenv(var)
    monkeypatch.setenv("ANVIL_ACCESS_TOKEN", publisher.token)
    return directory


def run(*args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), input=input, catch_exceptions=False)


def init(publisher: WirePublisher, *extra: str) -> Result:
    return run(
        "init",
        "--store",
        publisher.store.url,
        "--project-id",
        publisher.project_id,
        "--trusted-key",
        publisher.trusted_key,
        *extra,
    )


def one_sentence_error(result: Result) -> str:
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert lines[0].startswith("Error: ")
    assert "Traceback" not in result.output
    return lines[0]


# --- init -------------------------------------------------------------------------------------


def test_init_writes_the_config_the_cache_dir_and_gitignore(
    app: Path, publisher: WirePublisher
) -> None:
    (app / ".gitignore").write_text("*.pyc")
    result = init(publisher, "--token-env", "MY_APP_TOKEN")
    assert result.exit_code == 0, result.output
    config = tomllib.loads((app / "anvil.toml").read_text())
    assert config == {
        "store": publisher.store.url,
        "project_id": publisher.project_id,
        "channel": "production",
        "access_token_env": "MY_APP_TOKEN",
        "trusted_keys": [publisher.trusted_key],
        "cache_dir": ".anvil_cache",
        "mode": "accepting",
    }
    assert publisher.token not in (app / "anvil.toml").read_text()
    assert (app / ".anvil_cache").is_dir()
    assert (
        app / ".gitignore"
    ).read_text() == "*.pyc\n# Anvil's local prompt cache\n/.anvil_cache/\n"
    assert "import anvil_client" in result.output
    assert 'anvil_client.prompt("welcome.message"' in result.output
    assert "MY_APP_TOKEN" in result.output


def test_init_refuses_to_overwrite_and_keeps_gitignore_tidy(
    app: Path, publisher: WirePublisher
) -> None:
    assert init(publisher).exit_code == 0
    assert "already exists" in one_sentence_error(init(publisher))
    assert init(publisher, "--force", "--channel", "staging").exit_code == 0
    assert tomllib.loads((app / "anvil.toml").read_text())["channel"] == "staging"
    assert (app / ".gitignore").read_text().count(".anvil_cache") == 1


def test_init_without_values_writes_placeholders(app: Path) -> None:
    result = run("init")
    assert result.exit_code == 0
    assert "Fill in store, project_id, trusted_keys" in result.output
    assert tomllib.loads((app / "anvil.toml").read_text())["channel"] == "production"


def test_init_checks_what_it_is_given(app: Path) -> None:
    assert "trusted key" in one_sentence_error(run("init", "--trusted-key", "ed25519:nope"))
    assert not (app / "anvil.toml").exists()


# --- connect ------------------------------------------------------------------------------------


def test_connect_by_flags_syncs_and_never_writes_the_token(
    app: Path, publisher: WirePublisher, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ANVIL_ACCESS_TOKEN")
    result = run(
        "connect",
        "--store", publisher.store.url,
        "--project-id", publisher.project_id,
        "--access-token", publisher.token,
        "--trusted-key", publisher.trusted_key,
        "--mode", "frozen",
        "--no-input",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "serves version 1.0.0 (sequence 1, 3 prompts)" in result.output
    text = (app / "anvil.toml").read_text()
    assert publisher.token not in text
    assert publisher.token.split("_", 2)[2] not in result.output
    config = tomllib.loads(text)
    assert config["mode"] == "frozen"
    assert config["access_token_env"] == "ANVIL_ACCESS_TOKEN"
    assert "set it in its environment" in result.output
    assert list((app / ".anvil_cache").rglob("bundles/*.json"))
    # The suggested call uses a prompt the channel really serves, with its variables.
    assert 'text = anvil_client.prompt("items.list", items="…")' in result.output


def test_connect_wizard_asks_for_everything(app: Path, publisher: WirePublisher) -> None:
    answers = "\n".join(
        [
            publisher.store.url,
            publisher.project_id,
            "",  # channel: production
            publisher.trusted_key,
            "accepting",
        ]
    )
    result = run("connect", input=answers + "\n")  # the token comes from ANVIL_ACCESS_TOKEN
    assert result.exit_code == 0, result.output
    assert "Store URL" in result.output and "Trusted public key" in result.output
    assert tomllib.loads((app / "anvil.toml").read_text())["store"] == publisher.store.url


def test_connect_wizard_reads_the_token_hidden(
    app: Path, publisher: WirePublisher, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ANVIL_ACCESS_TOKEN")
    answers = [
        publisher.store.url,
        publisher.project_id,
        "",
        publisher.token,
        publisher.trusted_key,
        "",
    ]
    result = run("connect", input="\n".join(answers) + "\n")
    assert result.exit_code == 0, result.output
    assert "ACCESS_TOKEN (input hidden" in result.output
    assert publisher.token not in result.output  # not echoed
    assert publisher.token not in (app / "anvil.toml").read_text()


def test_connect_suggests_a_chat_prompt_when_no_text_prompt_is_served(
    tmp_path: Path, publisher: WirePublisher, monkeypatch: pytest.MonkeyPatch
) -> None:
    publisher.publish({"support.chat": PROMPTS["support.chat"]}, version="1.0.0")
    monkeypatch.chdir(tmp_path)
    for var in [v for v in os.environ if v.startswith("ANVIL_")]:
        monkeypatch.delenv(var)
    monkeypatch.setenv("ANVIL_ACCESS_TOKEN", publisher.token)
    result = run(
        "connect",
        "--store", publisher.store.url,
        "--project-id", publisher.project_id,
        "--trusted-key", publisher.trusted_key,
        "--no-input",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    suggestion = 'chat = anvil_client.messages("support.chat", product="…", question="…")'
    assert suggestion in result.output
    assert "welcome.message" not in result.output


def test_connect_fails_cleanly_when_the_first_sync_fails(
    app: Path, publisher: WirePublisher, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANVIL_ACCESS_TOKEN", AccessToken.generate().text)  # not a recipient
    result = run(
        "connect",
        "--store", publisher.store.url,
        "--project-id", publisher.project_id,
        "--trusted-key", publisher.trusted_key,
        "--no-input",
    )  # fmt: skip
    assert "not a recipient" in one_sentence_error(result)
    assert not (app / "anvil.toml").exists()


def test_connect_with_no_input_names_what_is_missing(app: Path) -> None:
    assert "--store is required" in one_sentence_error(run("connect", "--no-input"))


# --- sync, mode, status, render -------------------------------------------------------------------


def test_sync_then_up_to_date(app: Path, publisher: WirePublisher) -> None:
    init(publisher)
    result = run("sync")
    assert result.exit_code == 0, result.output
    assert "now serves version 1.0.0 (sequence 1, 3 prompts)" in result.output
    assert "is up to date: version 1.0.0" in run("sync").output
    publisher.publish({"welcome.message": "Hi"}, version="1.1.0")
    assert "now serves version 1.1.0" in run("sync").output


def test_sync_errors_are_one_sentence(app: Path, publisher: WirePublisher) -> None:
    init(publisher)
    publisher.store.delete(publisher.pointer_key)
    assert "does not exist" in one_sentence_error(run("sync"))
    os.remove(app / "anvil.toml")
    assert "no store configured" in one_sentence_error(run("sync"))
    assert "does not exist" in one_sentence_error(run("--config", "nope.toml", "sync"))


def test_mode_persists_an_override_and_reset_removes_it(
    app: Path, publisher: WirePublisher
) -> None:
    init(publisher)
    result = run("mode", "frozen")
    assert result.exit_code == 0
    assert "FROZEN" in result.output
    mode_files = list(app.rglob("mode.json"))
    assert len(mode_files) == 1
    assert json.loads(mode_files[0].read_text())["mode"] == "frozen"
    status = json.loads(run("status", "--json").output)
    assert (status["mode"], status["mode_source"]) == ("frozen", "override")
    assert "FROZEN (override)" in run("mode").output
    assert "removed" in run("mode", "--reset").output
    assert not mode_files[0].exists()
    status = json.loads(run("status", "--json").output)
    assert (status["mode"], status["mode_source"]) == ("accepting", "config")
    assert run("mode", "frozen", "--reset").exit_code == 2
    assert run("mode", "sometimes").exit_code == 2


def test_status_text_and_json(app: Path, publisher: WirePublisher) -> None:
    init(publisher)
    before = json.loads(run("status", "--json").output)
    assert before["version"] is None and before["stale"] is True
    run("sync")
    result = run("status")
    assert result.exit_code == 0
    assert "1.0.0 (sequence 1, 3 prompts, from disk)" in result.output
    assert "accepting (config)" in result.output
    after = json.loads(run("status", "--json").output)
    assert after["version"] == "1.0.0"
    assert after["last_sync"] is not None
    assert after["instance_id"] == before["instance_id"]


def test_status_sync_connect_and_render_with_two_sets(
    app: Path, publisher: WirePublisher, monkeypatch: pytest.MonkeyPatch
) -> None:
    publisher.publish(
        {"checkout.thanks": "Thanks {{ name }}!"},
        version="0.4.0",
        prompt_set_id=OTHER_SET_ID,
        name="Checkout helper",
    )
    result = run(
        "connect",
        "--store", publisher.store.url,
        "--project-id", publisher.project_id,
        "--trusted-key", publisher.trusted_key,
        "--no-input",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "serves version Support bot@1.0.0, Checkout helper@0.4.0 (sequence 2, 4 prompts)" in (
        result.output
    )
    assert 'text = anvil_client.prompt("checkout.thanks", name="…")' in result.output
    text = run("status").output
    assert "Support bot@1.0.0, Checkout helper@0.4.0 (sequence 2, 4 prompts" in text
    set_lines = [line for line in text.splitlines() if line.startswith("set ")]
    assert len(set_lines) == 2
    assert "Support bot 1.0.0 (3 prompts, id " + publisher.prompt_set_id in set_lines[0]
    assert "Checkout helper 0.4.0 (1 prompts, id " + OTHER_SET_ID in set_lines[1]
    report = json.loads(run("status", "--json").output)
    assert [(r["name"], r["version"], r["prompts"]) for r in report["releases"]] == [
        ("Support bot", "1.0.0", 3),
        ("Checkout helper", "0.4.0", 1),
    ]
    assert report["content_sha256"] is None
    assert run("render", "checkout.thanks", "-v", "name=Ada").output == "Thanks Ada!\n"
    assert "is up to date: version Support bot@1.0.0, Checkout helper@0.4.0" in run("sync").output
    publisher.publish({"checkout.thanks": "Merci {{ name }}!"}, version="0.5.0",
                      prompt_set_id=OTHER_SET_ID, name="Checkout helper")  # fmt: skip
    assert "now serves version Support bot@1.0.0, Checkout helper@0.5.0" in run("sync").output
    assert run("render", "checkout.thanks", "-v", "name=Ada").output == "Merci Ada!\n"


def test_render(app: Path, publisher: WirePublisher) -> None:
    init(publisher)
    run("sync")
    assert run("render", "welcome.message", "-v", "name=Ada").output == "Welcome Ada!\n"
    assert run("render", "items.list", "-j", 'items=["a", "b"]').output == "a, b\n"
    result = run("render", "support.chat", "--messages", "-v", "product=A", "-v", "question=Q")
    assert json.loads(result.output)[0] == {"role": "system", "content": "You help A users."}
    assert "needs variable 'name'" in one_sentence_error(run("render", "welcome.message"))
    assert "'nope' is not in version 1.0.0" in one_sentence_error(run("render", "nope"))
    assert run("render", "welcome.message", "-v", "name").exit_code == 2
    assert run("render", "items.list", "-j", "items=[").exit_code == 2


# --- the real command ----------------------------------------------------------------------------


def anvil(cwd: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    command = Path(sys.executable).with_name("anvil")
    return subprocess.run(
        [str(command), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )


def test_the_installed_command_exit_codes_and_messages(app: Path, publisher: WirePublisher) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANVIL_")}
    env["ANVIL_ACCESS_TOKEN"] = publisher.token
    assert init(publisher).exit_code == 0
    synced = anvil(app, "sync", env=env)
    assert synced.returncode == 0, synced.stderr
    assert "now serves version 1.0.0" in synced.stdout
    status = anvil(app, "status", "--json", env=env)
    assert status.returncode == 0
    assert json.loads(status.stdout)["version"] == "1.0.0"
    rendered = anvil(app, "render", "welcome.message", "-v", "name=Ada", env=env)
    assert (rendered.returncode, rendered.stdout) == (0, "Welcome Ada!\n")
    publisher.store.delete(publisher.pointer_key)
    failed = anvil(app, "sync", env=env)
    assert failed.returncode == 1
    assert failed.stdout == ""
    assert failed.stderr.startswith("Error: ")
    assert failed.stderr.count("\n") == 1
    assert "Traceback" not in failed.stderr
    usage = anvil(app, "mode", "--bogus", env=env)
    assert usage.returncode == 2
    assert "Traceback" not in usage.stderr
