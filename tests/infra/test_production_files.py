"""The FORGE's production files: ``infra/gunicorn.conf.py`` serves the FORGE with real gunicorn
workers, and ``infra/anvil-forge.service`` passes ``systemd-analyze verify``."""

from __future__ import annotations

import configparser
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.infra.conftest import INFRA
from tests.servers import free_port_block, missing_tool, stop_process

BIN = Path(sys.executable).parent
SECRET = "anvil_abcdefghijkl_" + "s" * 43


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(request, timeout=5) as response:
        return response.status, response.read()


def _children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(p) for p in text.split()]


@pytest.mark.integration
def test_gunicorn_config_serves_the_forge_with_its_workers(tmp_path: Path) -> None:
    if not (BIN / "gunicorn").exists():
        missing_tool("gunicorn is not installed (it is in the forge extra; make test installs it)")
    (port,) = free_port_block(1)
    env = {
        **os.environ,
        "FORGE_INSTANCE_PATH": str(tmp_path / "instance"),
        "FORGE_BIND": f"127.0.0.1:{port}",
        "FORGE_WORKERS": "2",
        "FORGE_ACCESS_LOG": str(tmp_path / "access.log"),
        "HOME": str(tmp_path),
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
    }
    (tmp_path / "metrics").mkdir()  # as systemd's RuntimeDirectory= does
    subprocess.run(
        [str(BIN / "anvil-forge"), "db", "upgrade"],
        env=env,
        check=True,
        timeout=120,
        capture_output=True,
    )
    # A previous run's file, unreadable: the workers would fail on it if the config did not
    # empty the folder first.
    stale = tmp_path / "metrics" / "counter_1.db"
    stale.write_bytes(b"")
    log = (tmp_path / "gunicorn.log").open("wb")
    proc = subprocess.Popen(
        [str(BIN / "gunicorn"), "--config", str(INFRA / "gunicorn.conf.py")],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=tmp_path,
    )
    try:
        deadline = time.monotonic() + 60
        while True:  # wait for readiness (bounded), not for a race
            try:
                status, body = _get(f"http://127.0.0.1:{port}/healthz")
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        assert (status, body.strip()) == (200, b'{"status":"ok"}')
        assert len(_children(proc.pid)) == 2
        _get(f"http://127.0.0.1:{port}/healthz", {"Authorization": f"Bearer {SECRET}"})
    finally:
        stop_process(proc, grace=30)
        log.close()
    server_log = (tmp_path / "gunicorn.log").read_text()
    assert proc.returncode == 0, server_log
    # The default worker class is gevent's (the FORGE's subclass), for the hint streams.
    assert re.search(r"Using worker: \S*gevent", server_log, re.IGNORECASE), server_log
    assert not stale.exists()  # the config emptied /metrics' multiprocess folder at start
    access = (tmp_path / "access.log").read_text()
    # Both requests are logged (a readiness probe that timed out under load may add one more).
    assert access.count('"GET /healthz HTTP/1.1" 200') >= 2
    assert SECRET not in access
    assert not (tmp_path / ".gunicorn").exists()  # no control socket in $HOME


def test_systemd_unit_verifies_and_runs_unprivileged(tmp_path: Path) -> None:
    unit_text = (INFRA / "anvil-forge.service").read_text()
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read_string(unit_text)
    service = unit["Service"]
    assert service["User"] == "anvil" and service["Type"] == "notify"
    assert service["ExecStart"].endswith("gunicorn --config /etc/anvil/gunicorn.conf.py")
    assert service["ExecStartPre"].endswith("anvil-forge db upgrade")
    assert service["NoNewPrivileges"] == "yes" and service["ProtectSystem"] == "strict"
    assert service["LoadCredential"] == "signing-key.pem:/etc/anvil/signing-key.pem"
    assert "PRIVATE KEY" not in unit_text  # the key itself is never inline
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        missing_tool("systemd-analyze is not installed (Debian package systemd)")
    # The unit names the production venv; point it at this one so its commands exist.
    local = tmp_path / "anvil-forge.service"
    local.write_text(unit_text.replace("/opt/anvil/venv/bin/", f"{BIN}/"))
    run = subprocess.run(
        [analyze, "verify", "--man=no", str(local)], capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr
    assert "anvil-forge.service" not in run.stderr, run.stderr  # no warning about the unit
