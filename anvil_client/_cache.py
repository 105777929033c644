"""The disk cache shared by every process of one instance (DESIGN §7).

    >>> from pathlib import Path
    >>> from anvil_client._cache import DiskCache
    >>> DiskCache(Path("/tmp/c"), "p1", "production").dir.as_posix()
    '/tmp/c/p1/production'

``{cache_dir}/{project_id}/{channel}/`` holds ``pointer.json`` (the envelope as received),
``bundles/{content_sha256}.json`` (verified plaintext), ``state.json`` (instance id, highest
accepted sequence, ETag, times, last error; written by whoever polls or syncs) and
``mode.json`` (the ``anvil mode`` override). Durable files are written with temp file + fsync
+ rename, so a crash at any point leaves the old or the new file. This module only reads and
writes bytes; everything read is verified again by the caller.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from anvil_client._config import MODES, Mode
from anvil_client._platform import lock
from anvil_client.errors import AnvilError, ConfigError, SizeLimitError
from anvil_client.stores import write_atomically
from anvil_client.stores._base import is_usable_etag
from anvil_client.stores._file import NotARegularFile, read_regular_file
from anvil_client.wire import POINTER_MAX_SIZE

_STATE_MAX_SIZE = 64 * 1024
_TMP_MAX_AGE = 3600.0
StatKey = tuple[int, int, int] | None
Signature = tuple[StatKey, StatKey, StatKey] | None


@dataclass
class CacheState:
    """``state.json``: who this instance is and what its poller last saw (``contents`` are
    the served entries' ``content_sha256``, ``version`` is ``status()["version"]``)."""

    instance_id: str
    sequence: int = 0
    etag: str | None = None
    etag_sequence: int | None = None
    contents: list[str] = field(default_factory=list)
    version: str | None = None
    last_check: str | None = None
    last_sync: str | None = None
    last_error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_bytes(self) -> bytes:
        data = asdict(self)
        extra = data.pop("extra")
        return json.dumps({**extra, **data}, sort_keys=True, indent=1).encode("utf-8")

    @classmethod
    def from_bytes(cls, data: bytes) -> CacheState | None:
        try:
            doc = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            return None
        if not isinstance(doc, dict) or not _is_uuid(doc.get("instance_id")):
            return None
        known = {name for name in cls.__dataclass_fields__ if name != "extra"}
        values = {k: v for k, v in doc.items() if k in known}
        if not isinstance(values.get("sequence", 0), int):
            values["sequence"] = 0
        contents = values.get("contents", [])
        if not isinstance(contents, list) or not all(isinstance(c, str) for c in contents):
            values["contents"] = []
        for name in ("etag", "version", "last_check", "last_sync", "last_error"):
            if not isinstance(values.get(name), str | None):
                values[name] = None
        if not isinstance(values.get("etag_sequence"), int | None):
            values["etag_sequence"] = None
        if values.get("etag") is not None and not is_usable_etag(values["etag"]):
            values["etag"] = None  # sent back verbatim: a broken one would fail every poll
        return cls(**values, extra={k: v for k, v in doc.items() if k not in known})


class DiskCache:
    """Files of one ``(project, channel)`` under the cache dir, and the locks that guard them."""

    def __init__(self, root: Path, project_id: str, channel: str) -> None:
        self.dir = Path(root) / project_id / channel
        self.bundles = self.dir / "bundles"
        self.pointer_path = self.dir / "pointer.json"
        self.state_path = self.dir / "state.json"
        self.mode_path = self.dir / "mode.json"
        self.usage_dir = self.dir / "usage"
        self._lead_fd: int | None = None
        self._probe_fd: int | None = None  # .poll.lock, kept open between tries to lead
        self._held: set[int] = set()  # write-lock descriptors open right now (any thread)

    def prepare(self) -> None:
        """Create the directories (mode 0700: they hold decrypted prompts).

        Raises:
            ConfigError: if the cache dir cannot be created.
        """
        try:
            self.dir.parent.parent.mkdir(parents=True, exist_ok=True)
            for directory in (self.dir.parent, self.dir, self.bundles):
                directory.mkdir(mode=0o700, exist_ok=True)
        except OSError as e:
            raise ConfigError(f"cannot create the cache dir {self.dir}: {_reason(e)}") from e

    # --- reading -------------------------------------------------------------------------

    def read_pointer(self, *, strict: bool = False) -> bytes | None:
        """The cached envelope as received, or ``None`` if there is none.

        Raises:
            AnvilError: only when ``strict``, if a pointer file is there but cannot be used.
        """
        if strict:
            return _read_strict(self.pointer_path, POINTER_MAX_SIZE)
        return _read(self.pointer_path, POINTER_MAX_SIZE)

    def read_bundle(self, content_sha256: str, max_size: int) -> bytes | None:
        return _read(self.bundle_path(content_sha256), max_size)

    def has_bundle(self, content_sha256: str, max_size: int) -> bool:
        """Whether the cached bundle is there and still hashes to ``content_sha256``."""
        data = _read(self.bundle_path(content_sha256), max_size)
        return data is not None and hashlib.sha256(data).hexdigest() == content_sha256

    def bundle_path(self, content_sha256: str) -> Path:
        return self.bundles / f"{content_sha256}.json"

    def read_state(self) -> CacheState | None:
        data = _read(self.state_path, _STATE_MAX_SIZE)
        return None if data is None else CacheState.from_bytes(data)

    def read_mode(self) -> Mode | None:
        """The ``anvil mode`` override, or ``None`` (an unreadable file counts as none)."""
        data = _read(self.mode_path, _STATE_MAX_SIZE)
        if data is None:
            return None
        try:
            mode = json.loads(data.decode("utf-8")).get("mode")
        except (UnicodeDecodeError, ValueError, AttributeError, RecursionError):
            return None
        return mode if mode in MODES else None

    def signature(self) -> Signature:
        """Cheap change detection: (mtime, size, inode) of pointer, state and mode files."""
        return (_stat(self.pointer_path), _stat(self.state_path), _stat(self.mode_path))

    # --- writing -------------------------------------------------------------------------

    def write_bundle(self, content_sha256: str, plaintext: bytes) -> None:
        write_atomically(self.bundle_path(content_sha256), plaintext)

    def write_pointer(self, envelope: bytes) -> None:
        write_atomically(self.pointer_path, envelope)

    def write_state(self, state: CacheState, *, durable: bool) -> None:
        """Durable when it carries a new sequence or ETag; times alone need no fsync."""
        if durable:
            write_atomically(self.state_path, state.to_bytes())
        else:
            _replace(self.state_path, state.to_bytes())

    def write_mode(self, mode: Mode) -> None:
        """Persist the ``anvil mode`` override.

        Raises:
            ConfigError: if the cache dir is not writable.
        """
        self.prepare()
        body = {"mode": mode, "set_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        try:
            write_atomically(self.mode_path, json.dumps(body).encode("utf-8"))
        except OSError as e:
            raise ConfigError(f"cannot write {self.mode_path}: {_reason(e)}") from e

    def clear_mode(self) -> bool:
        """Remove the override; ``False`` if there was none.

        Raises:
            ConfigError: if it cannot be removed.
        """
        try:
            self.mode_path.unlink()
        except FileNotFoundError:
            return False
        except OSError as e:
            raise ConfigError(f"cannot remove {self.mode_path}: {_reason(e)}") from e
        return True

    def prune(self, keep: set[str]) -> None:
        """Delete bundle files not in ``keep`` and temp files left by killed writers."""
        now = time.time()
        for directory in (self.bundles, self.dir):
            with contextlib.suppress(OSError):
                for entry in os.scandir(directory):
                    name = entry.name
                    with contextlib.suppress(OSError):
                        if name.startswith(".") and name.endswith(".tmp"):
                            if now - entry.stat().st_mtime > _TMP_MAX_AGE:
                                os.unlink(entry.path)
                        elif (
                            directory == self.bundles
                            and name.endswith(".json")
                            and name[: -len(".json")] not in keep
                        ):
                            os.unlink(entry.path)

    def ensure_state(self) -> CacheState:
        """Read ``state.json``, creating it with a new random instance id if needed.

        Raises:
            ConfigError: if the cache dir is not writable.
        """
        state = self.read_state()
        if state is not None:
            return state
        try:
            with self.write_lock():
                state = self.read_state()
                if state is None:
                    import uuid  # once per cache dir

                    state = CacheState(instance_id=str(uuid.uuid4()))
                    write_atomically(self.state_path, state.to_bytes())
        except OSError as e:
            raise ConfigError(f"cannot write {self.state_path}: {_reason(e)}") from e
        return state

    def stat_state(self) -> StatKey:
        """The ``state.json`` part of :meth:`signature` (after this process wrote it)."""
        return _stat(self.state_path)

    def hand_over_usage(self, data: bytes) -> None:
        """Leave usage counts of a process that sends no heartbeats for the one that does
        (``usage/{pid}-{ns}.json``, temp file + rename: the reader sees all or nothing)."""
        with contextlib.suppress(FileExistsError):
            self.usage_dir.mkdir(mode=0o700)
        _replace(self.usage_dir / f"{os.getpid()}-{time.time_ns()}.json", data)

    def take_usage(self, max_size: int = 1024 * 1024) -> list[bytes]:
        """Read and delete what the other processes handed over (unusable files are dropped)."""
        found: list[bytes] = []
        try:
            entries = list(os.scandir(self.usage_dir))
        except OSError:
            return found
        for entry in entries:
            name = entry.name
            if name.startswith(".") or not name.endswith(".json"):
                continue
            data = _read(Path(entry.path), max_size)
            with contextlib.suppress(OSError):
                os.unlink(entry.path)
            if data is not None:
                found.append(data)
        return found

    # --- locks ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def write_lock(self) -> Iterator[None]:
        """Serialise writers of this cache dir across threads and processes."""
        fd = os.open(self.dir / ".write.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self._held.add(fd)
        try:
            lock(fd)
            yield
        finally:
            self._held.discard(fd)
            os.close(fd)  # closing releases the lock

    def try_lead(self) -> bool:
        """Try to become the one poller of this cache dir; held until :meth:`resign`.

        The lock file stays open between tries: a process waiting to lead costs one
        ``flock`` call per try, not an ``open`` and a ``close``.
        """
        if self._lead_fd is not None:
            return True
        fd = self._probe_fd
        if fd is None:
            try:
                fd = os.open(self.dir / ".poll.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except OSError:
                return False
            self._probe_fd = fd
        try:
            lock(fd, blocking=False)
        except OSError as e:
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return False
            self._probe_fd = None
            os.close(fd)
            raise
        self._lead_fd, self._probe_fd = fd, None
        return True

    @property
    def leading(self) -> bool:
        return self._lead_fd is not None

    def resign(self) -> None:
        for fd in (self._lead_fd, self._probe_fd):
            if fd is not None:
                os.close(fd)
        self._lead_fd = self._probe_fd = None

    def forget_lock_after_fork(self) -> None:
        """In a forked child: drop inherited lock descriptors without unlocking.

        flock belongs to the open file description, which the parent shares: ``LOCK_UN`` here
        would release the parent's lock, while closing our copy leaves it intact. Left open,
        a copy of a write lock the parent held during the fork would keep it locked forever.
        """
        inherited = list(self._held)
        self._held.clear()
        # An inherited probe descriptor shares its open file description with the parent's:
        # locking it here would make both processes leaders.
        for fd in (self._lead_fd, self._probe_fd):
            if fd is not None:
                inherited.append(fd)
        self._lead_fd = self._probe_fd = None
        for fd in inherited:
            with contextlib.suppress(OSError):
                os.close(fd)


def _read(path: Path, max_size: int) -> bytes | None:
    """The file's bytes, or ``None`` if it is missing, unusable or larger than ``max_size``."""
    try:
        return read_regular_file(path, max_size)
    except (OSError, SizeLimitError):
        return None


def _read_strict(path: Path, max_size: int) -> bytes | None:
    """The file's bytes, or ``None`` if it is missing.

    Raises:
        AnvilError: if it is there but not a readable regular file of at most ``max_size``.
    """
    try:
        return read_regular_file(path, max_size)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except SizeLimitError as e:
        raise SizeLimitError(f"{path.name} is larger than the {max_size}-byte limit") from e
    except (IsADirectoryError, NotARegularFile) as e:
        raise AnvilError(f"{path.name} is not a regular file") from e
    except OSError as e:
        raise AnvilError(f"{path.name} cannot be read: {_reason(e)}") from e


def _replace(path: Path, data: bytes) -> None:
    import tempfile  # only writers pay for it (and shutil, bz2, lzma), not a cold start

    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _stat(path: Path) -> StatKey:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


_UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z")


def _is_uuid(value: object) -> bool:
    return isinstance(value, str) and _UUID_RE.match(value) is not None


def _reason(e: OSError) -> str:
    return e.strerror or str(e)
