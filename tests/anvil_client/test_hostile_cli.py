"""The ``anvil`` CLI in front of a hostile store or cache: one sentence, exit code 1, no trace."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from anvil_client.cli import cli
from tests.anvil_client.hostile_kit import V1, V2, check_sentence, signed
from tests.anvil_client.wire_publisher import WirePublisher


@pytest.fixture
def app(tmp_path: Path, publisher: WirePublisher, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "app"
    directory.mkdir()
    monkeypatch.chdir(directory)
    for var in [v for v in os.environ if v.startswith("ANVIL_")]:
        monkeypatch.delenv(var)
    monkeypatch.setenv("ANVIL_ACCESS_TOKEN", publisher.token)
    (directory / "anvil.toml").write_text(
        f'store = "{publisher.store.url}"\n'
        f'project_id = "{publisher.project_id}"\n'
        f'trusted_keys = ["{publisher.trusted_key}"]\n'
    )
    return directory


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def one_sentence_error(result: Result) -> str:
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert lines[0].startswith("Error: ")
    check_sentence(lines[0])
    return lines[0]


def test_sync_against_a_hostile_pointer_is_one_sentence(
    app: Path, publisher: WirePublisher
) -> None:
    publisher.publish(V1, version="1.0.0")
    assert run("sync").exit_code == 0
    release = publisher.put_object(b"{}", version="2.0.0", encoding="json")
    body = publisher.pointer_body(release, sequence=2)
    body["sequence"] = 2**64
    publisher.put_pointer(signed(publisher, body))
    assert "sequence" in one_sentence_error(run("sync"))
    publisher.put_pointer(b"\xef\xbb\xbf{}")
    assert "not valid UTF-8 JSON" in one_sentence_error(run("sync"))
    status = json.loads(run("status", "--json").output)
    assert status["version"] == "1.0.0"
    assert "UTF-8 JSON" in status["last_error"]


def test_status_and_sync_with_a_wrecked_cache(app: Path, publisher: WirePublisher) -> None:
    publisher.publish(V1, version="1.0.0")
    assert run("sync").exit_code == 0
    cache = next((app / ".anvil_cache").glob("*/production"))
    (cache / "state.json").write_bytes(b'{"instance_id": ' + b"[" * 30000 + b"]" * 30000 + b"}")
    (cache / "mode.json").write_bytes(b'{"mode": ' + b"[" * 30000 + b"]" * 30000 + b"}")
    (cache / "pointer.json").write_bytes(b"\x00" * 10)
    result = run("status", "--json")
    assert result.exit_code == 0, result.output
    status = json.loads(result.output)
    assert status["version"] is None
    assert "disk cache" in status["last_error"]
    publisher.publish(V2, version="2.0.0")
    result = run("sync")
    assert result.exit_code == 0, result.output
    assert json.loads(run("status", "--json").output)["version"] == "2.0.0"
