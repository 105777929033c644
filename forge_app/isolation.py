"""Run one untrusted computation (a template preview) in a forked child with limits.

    >>> from forge_app.isolation import run_isolated
    >>> run_isolated(sum, [1, 2, 3])
    6

Jinja2's sandbox stops unsafe attribute access and our guards stop the operations that
multiply memory, but nothing inside a process bounds CPU: ``{% for a in range(100000) %}{% for
b in range(100000) %}…`` would pin a FORGE worker forever. Previews therefore render in a
forked child with a wall-clock deadline and an address-space limit; the child is killed by its
PID when the deadline passes. Results and errors come back pickled over a pipe.

Forking costs a worker's CPU too, so each process runs at most a few children at once
(:class:`Slots`, ``FORGE_PREVIEW_CONCURRENCY`` in the FORGE); beyond that
:class:`IsolationBusy` is raised at once, and the caller answers "try again".
"""

from __future__ import annotations

import contextlib
import os
import pickle
import resource
import select
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from forge_app.errors import ForgeError, Kind

T = TypeVar("T")

DEFAULT_TIMEOUT = 2.0
DEFAULT_EXTRA_MEMORY = 256 * 1024 * 1024
DEFAULT_MAX_CONCURRENT = 4
_MAX_RESULT = 8 * 1024 * 1024


class IsolationError(ForgeError):
    """The isolated computation timed out, ran out of memory or died."""

    default_kind = Kind.UNAVAILABLE


class IsolationBusy(IsolationError):
    """Every slot for isolated computations in this process is taken; try again shortly."""

    retry_after = 1


class Slots:
    """At most ``limit`` isolated computations at once in this process (thread-safe)."""

    def __init__(self, limit: int = DEFAULT_MAX_CONCURRENT) -> None:
        if limit < 1:
            raise ValueError("the number of slots must be at least 1")
        self.limit = limit
        self._semaphore = threading.BoundedSemaphore(limit)

    @contextlib.contextmanager
    def take(self) -> Iterator[None]:
        """Hold one slot for the block.

        Raises:
            IsolationBusy: if every slot is taken (it never waits).
        """
        if not self._semaphore.acquire(blocking=False):
            raise IsolationBusy(
                f"{self.limit} previews are already running here; try again in a moment"
            )
        try:
            yield
        finally:
            self._semaphore.release()


_DEFAULT_SLOTS = Slots()


def run_isolated(
    func: Callable[..., T],
    *args: Any,
    timeout: float = DEFAULT_TIMEOUT,
    extra_memory: int = DEFAULT_EXTRA_MEMORY,
    slots: Slots | None = None,
) -> T:
    """Call ``func(*args)`` in a forked child and return its result (or re-raise its error).

    Raises:
        IsolationBusy: if ``slots`` (by default, this process's four) are all taken.
        IsolationError: if the child exceeds ``timeout`` seconds or its memory limit, or dies.
        Exception: whatever ``func`` raised, re-raised in the parent.
    """
    with (slots or _DEFAULT_SLOTS).take():
        return _run_forked(func, args, timeout, extra_memory)


def _run_forked(func: Callable[..., T], args: tuple[Any, ...], timeout: float, memory: int) -> T:
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: compute, write one pickled answer, exit without cleanup handlers
        os.close(read_fd)
        status = 0
        try:
            _limit_memory(memory)
            try:
                answer: tuple[bool, Any] = (True, func(*args))
            except MemoryError:
                answer = (False, IsolationError("the preview needs too much memory"))
            except RecursionError:
                answer = (False, IsolationError("the preview recursed too deeply"))
            except Exception as e:
                answer = (False, e)
            payload = pickle.dumps(answer)
            if len(payload) > _MAX_RESULT:
                payload = pickle.dumps((False, IsolationError("the preview is too large")))
            with os.fdopen(write_fd, "wb") as pipe:
                pipe.write(payload)
        except BaseException:
            status = 1
        finally:
            os._exit(status)
    os.close(write_fd)
    try:
        data = _read_until(read_fd, time.monotonic() + timeout)
    finally:
        os.close(read_fd)
        _reap(pid)
    if data is None:
        raise IsolationError(f"the preview took longer than {timeout:g} seconds and was stopped")
    if not data:
        raise IsolationError("the preview stopped unexpectedly (out of memory?)")
    ok, value = pickle.loads(data)  # noqa: S301 - bytes written by our own forked child
    if ok:
        return value  # type: ignore[no-any-return]
    raise value


def _limit_memory(extra: int) -> None:
    current = 0
    with contextlib.suppress(OSError), open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmSize:"):
                current = int(line.split()[1]) * 1024
    if current:
        limit = current + extra
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _read_until(fd: int, deadline: float) -> bytes | None:
    chunks: list[bytes] = []
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        ready, _, _ = select.select([fd], [], [], remaining)
        if not ready:
            return None
        chunk = os.read(fd, 65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == 0:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
