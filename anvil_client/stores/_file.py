"""``file:///path`` stores: a local directory, with compare-and-swap under a file lock.

>>> import tempfile; from anvil_client.stores import FileStore
>>> FileStore(tempfile.mkdtemp()).put("a/b.json", b"{}").etag is not None
True
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Unpack

from anvil_client._platform import lock, unlock
from anvil_client.errors import NotFound, PreconditionFailed, SizeLimitError
from anvil_client.stores._base import GetResult, ObjectStore, PutOptions, PutResult

_LOCK_NAME = ".anvil-store.lock"


def etag_of(data: bytes) -> str:
    """The quoted ETag a FileStore gives ``data`` (a content hash)."""
    return '"' + hashlib.sha256(data).hexdigest()[:32] + '"'


class FileStore(ObjectStore):
    """A directory as an object store. ETags are content hashes, so they change with content.

    Conditional writes hold an exclusive ``flock`` on ``.anvil-store.lock`` in the root, so
    compare-and-swap is exact across threads and processes on one host (not across NFS).
    Objects are written atomically (temp file, fsync, rename) with mode 0644.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).resolve()
        self.url = self.root.as_uri()

    def _path(self, key: str) -> Path:
        return self.root / key

    def _get(self, key: str, if_none_match: str | None, max_size: int) -> GetResult:
        try:
            data = read_regular_file(self._path(key), max_size)
        except SizeLimitError:
            raise SizeLimitError(f"{key} is larger than the {max_size}-byte limit") from None
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError) as e:
            raise NotFound(f"{key} does not exist in {self.url}") from e
        except NotARegularFile as e:
            raise NotFound(f"{key} in {self.url} is not a regular file") from e
        etag = etag_of(data)
        if if_none_match is not None and if_none_match == etag:
            return GetResult(data=b"", etag=etag, modified=False)
        return GetResult(data=data, etag=etag)

    def _put(self, key: str, data: bytes, **options: Unpack[PutOptions]) -> PutResult:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._locked():
            current = None
            with contextlib.suppress(FileNotFoundError):
                current = etag_of(path.read_bytes())
            if options["if_none_match"] and current is not None:
                raise PreconditionFailed(f"{key} already exists in {self.url}")
            if options["if_match"] is not None and current != options["if_match"]:
                raise PreconditionFailed(f"{key} changed in {self.url} since it was read")
            write_atomically(path, data, mode=0o644)
        return PutResult(etag=etag_of(data))

    def _list(self, prefix: str) -> list[str]:
        # Walk only the deepest directory the prefix names (the prefix was checked safe).
        start = self.root / prefix.rpartition("/")[0]
        out = []
        for dirpath, _, filenames in os.walk(start):
            for name in filenames:
                if name.startswith("."):
                    continue
                key = Path(dirpath, name).relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    out.append(key)
        return out

    def _delete(self, key: str) -> None:
        with self._locked(), contextlib.suppress(FileNotFoundError):
            self._path(key).unlink()

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / _LOCK_NAME).open("a") as lock_file:
            lock(lock_file.fileno())
            try:
                yield
            finally:
                unlock(lock_file.fileno())


class NotARegularFile(OSError):
    """A FIFO, socket or device where a file was expected."""


def read_regular_file(path: Path, max_size: int) -> bytes:
    """The bytes of the regular file at ``path``, reading at most ``max_size + 1`` of them.

    The file is opened non-blocking and checked before any read: a FIFO would block forever
    and a device could be endless. Only what the file holds is allocated, never the cap.

    Raises:
        FileNotFoundError: if there is nothing at ``path``.
        IsADirectoryError: if it is a directory.
        NotARegularFile: if it is a FIFO, socket or device.
        SizeLimitError: if it holds (or grows to) more than ``max_size`` bytes.
        OSError: if it cannot be read.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as f:
        mode = os.fstat(fd)
        if stat.S_ISDIR(mode.st_mode):
            raise IsADirectoryError(f"{path} is a directory")
        if not stat.S_ISREG(mode.st_mode):
            raise NotARegularFile(f"{path} is not a regular file")
        if mode.st_size > max_size:
            raise SizeLimitError(f"{path.name} is larger than the {max_size}-byte limit")
        data = f.read(mode.st_size + 1)  # +1 notices growth; read(max_size) would allocate it
    if len(data) > max_size:
        raise SizeLimitError(f"{path.name} is larger than the {max_size}-byte limit")
    return data


def write_atomically(path: Path, data: bytes, *, mode: int | None = None) -> None:
    """Temp file in the same directory, fsync, rename, fsync the directory.

    A crash at any point leaves either the old or the new content, never a mix. The file
    is private (0600) unless ``mode`` says otherwise.

    Raises:
        OSError: if the directory is not writable or the disk is full (the temp file is removed).
    """
    import tempfile  # only writers pay for it (and shutil, bz2, lzma), not a cold start

    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        if mode is not None:
            os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
