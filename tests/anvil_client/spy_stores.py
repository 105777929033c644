"""Store wrappers that spy on (and can break) what a client asks a store for; test code only."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from anvil_client.errors import StoreUnavailable
from anvil_client.stores import FileStore, GetResult, ObjectStore, PutResult


@dataclass(frozen=True)
class Call:
    key: str
    if_none_match: str | None
    started: float
    outcome: str  # "200", "304" or the error class name


class SpyStore(ObjectStore):
    """Delegates to ``inner`` and records every GET; ``down = True`` simulates an outage."""

    def __init__(self, inner: ObjectStore) -> None:
        self.inner = inner
        self.url = inner.url
        self.read_only = inner.read_only
        self.calls: list[Call] = []
        self.down = False
        self.bytes_read = 0
        self._lock = threading.Lock()

    def _get(self, key: str, if_none_match: str | None, max_size: int) -> GetResult:
        started = time.monotonic()
        if self.down:
            self._record(Call(key, if_none_match, started, "StoreUnavailable"))
            raise StoreUnavailable(f"GET {key} failed: the test store is down")
        try:
            result = self.inner.get(key, if_none_match=if_none_match, max_size=max_size)
        except Exception as e:
            self._record(Call(key, if_none_match, started, type(e).__name__))
            raise
        self._record(Call(key, if_none_match, started, "200" if result.modified else "304"))
        with self._lock:
            self.bytes_read += len(result.data)
        return result

    def _record(self, call: Call) -> None:
        with self._lock:
            self.calls.append(call)

    def _put(
        self,
        key: str,
        data: bytes,
        *,
        if_match: str | None,
        if_none_match: bool,
        content_type: str,
        cache_control: str,
    ) -> PutResult:
        return self.inner.put(
            key,
            data,
            if_match=if_match,
            if_none_match=if_none_match,
            content_type=content_type,
            cache_control=cache_control,
        )

    def _list(self, prefix: str) -> list[str]:
        return self.inner.list(prefix)

    def _delete(self, key: str) -> None:
        self.inner.delete(key)

    def close(self) -> None:
        self.inner.close()

    def gets(self, suffix: str = "") -> list[Call]:
        with self._lock:
            return [c for c in self.calls if c.key.endswith(suffix)]

    def pointer_gets(self) -> list[Call]:
        return [c for c in self.gets() if "/channels/" in c.key]

    def bundle_gets(self) -> list[Call]:
        return [c for c in self.gets() if "/bundles/" in c.key]


class LoggingFileStore(FileStore):
    """A FileStore that appends ``"{pid} {key}"`` to a log file for every GET, from any process."""

    def __init__(self, root: str | os.PathLike[str], log: str | os.PathLike[str]) -> None:
        super().__init__(root)
        self.log = Path(log)

    def _get(self, key: str, if_none_match: str | None, max_size: int) -> GetResult:
        line = f"{os.getpid()} {time.monotonic():.6f} {key}\n".encode()
        fd = os.open(self.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)
        return super()._get(key, if_none_match, max_size)


def read_log(path: Path) -> list[tuple[int, float, str]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        pid, moment, key = line.split(" ", 2)
        out.append((int(pid), float(moment), key))
    return out


def wait_for(condition, timeout: float = 10.0, interval: float = 0.01, message: str = ""):  # type: ignore[no-untyped-def]
    """Poll ``condition`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message or condition}")
        time.sleep(interval)
