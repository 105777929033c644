"""The one small storage interface; the checks that must never be skipped live here.

>>> from anvil_client.stores import check_key
>>> check_key("projects/p/channels/production.json")
"""

from __future__ import annotations

import builtins
import dataclasses
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TypedDict, Unpack

from anvil_client.errors import AnvilError, SizeLimitError, StoreError, StoreUnavailable
from anvil_client.wire._layout import BUNDLE_MAX_SIZE

DEFAULT_MAX_SIZE = BUNDLE_MAX_SIZE  # the one cap, from anvil_client.wire
_KEY_RE = re.compile(r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*\Z")
# An ETag is sent back verbatim in If-None-Match: no control characters, a sane length.
_ETAG_RE = re.compile(r"[\x20-\x7e\x80-\xff]{1,1024}\Z")

IMMUTABLE_CACHE_CONTROL = "public, max-age=31536000, immutable"
MUTABLE_CACHE_CONTROL = "no-cache"
JSON_CONTENT_TYPE = "application/json"


@dataclass(frozen=True)
class GetResult:
    """A GET's answer. ``modified`` is False for a 304 (then ``data`` is empty)."""

    data: bytes
    etag: str | None
    modified: bool = True


@dataclass(frozen=True)
class PutResult:
    """A PUT's answer: the new object's ETag, for a later ``if_match``."""

    etag: str | None


def is_usable_etag(value: object) -> bool:
    """Whether an ETag can be sent back in ``If-None-Match`` as it is (no control characters,
    at most 1024 characters); an unusable one is dropped rather than failing every poll."""
    return isinstance(value, str) and _ETAG_RE.match(value) is not None


def cache_control_for(key: str) -> str:
    """Cache-Control per DESIGN §2: bundle objects are immutable, pointers and history are not."""
    return IMMUTABLE_CACHE_CONTROL if "/bundles/" in key else MUTABLE_CACHE_CONTROL


def check_key(key: str) -> None:
    """Keys are relative, slash-separated, of safe characters; no segment starts with ``.``.

    That excludes ``.``/``..`` traversal and the store's own dot-files (lock, temp files).

    Raises:
        StoreError: if the key is unsafe.
    """
    if (
        not isinstance(key, str)
        or len(key) > 1024
        or not _KEY_RE.match(key)
        or any(part.startswith(".") for part in key.split("/"))
    ):
        raise StoreError(f"refusing unsafe object key {key[:200]!r}")


def check_prefix(prefix: str) -> None:
    """A listing prefix is empty or a safe key, optionally ending with ``/``.

    Raises:
        StoreError: if the prefix is unsafe.
    """
    if prefix:
        check_key(prefix[:-1] if prefix.endswith("/") else prefix)


class PutOptions(TypedDict):
    """The conditions and headers of one PUT, as the base class passes them to ``_put``."""

    if_match: str | None
    if_none_match: bool
    content_type: str
    cache_control: str


class ObjectStore(ABC):
    """``get`` (conditional, size-capped), ``put`` (conditional), ``list`` and ``delete``.

    Subclasses implement the underscored methods; this base validates keys, enforces the size
    cap on every answer and maps any unexpected error to :class:`StoreUnavailable`.
    """

    url: str
    read_only: bool = False

    def get(
        self, key: str, *, if_none_match: str | None = None, max_size: int = DEFAULT_MAX_SIZE
    ) -> GetResult:
        """Fetch an object, or learn it did not change (``modified=False``).

        A 304 is a result (``modified=False``), never an exception.

        Raises:
            NotFound: if there is no such object.
            SizeLimitError: if the object is larger than ``max_size``.
            StoreError: if the key is unsafe, the store refuses the request, or it answers
                "not modified" to a request without ``if_none_match``.
            StoreUnavailable: if the store cannot be reached or fails.
        """
        check_key(key)
        try:
            result = self._get(key, if_none_match, max_size)
        except AnvilError:
            raise
        except Exception as e:
            raise StoreUnavailable(f"GET {key} from {self.url} failed: {e}") from e
        if not result.modified and not if_none_match:
            # Taken as "unchanged", it would confirm whatever is served, for ever.
            raise StoreError(
                f"GET {key} from {self.url} answered 304 Not Modified to an unconditional request"
            )
        if len(result.data) > max_size:
            raise SizeLimitError(f"{key} is larger than the {max_size}-byte limit")
        if result.etag is not None and not is_usable_etag(result.etag):
            result = dataclasses.replace(result, etag=None)  # GET in full next time
        return result

    def put(
        self,
        key: str,
        data: bytes,
        *,
        if_match: str | None = None,
        if_none_match: bool = False,
        content_type: str = JSON_CONTENT_TYPE,
        cache_control: str | None = None,
    ) -> PutResult:
        """Write an object, optionally only if its ETag is ``if_match`` or it does not exist.

        Raises:
            PreconditionFailed: if the condition does not hold.
            StoreError: if the key is unsafe or the store is read-only.
            StoreUnavailable: if the store cannot be reached.
        """
        check_key(key)
        if self.read_only:
            raise StoreError(f"{self.url} is read-only")
        if if_match is not None and if_none_match:
            raise ValueError("if_match and if_none_match exclude each other")
        try:
            return self._put(
                key,
                data,
                if_match=if_match,
                if_none_match=if_none_match,
                content_type=content_type,
                cache_control=cache_control or cache_control_for(key),
            )
        except AnvilError:
            raise
        except Exception as e:
            raise StoreUnavailable(f"PUT {key} to {self.url} failed: {e}") from e

    def list(self, prefix: str = "") -> list[str]:
        """Keys starting with ``prefix`` (a plain string prefix, as in S3), sorted.

        Raises:
            StoreError: if the prefix is unsafe or the store cannot list (read-only HTTP).
            StoreUnavailable: if the store cannot be reached.
        """
        check_prefix(prefix)
        try:
            return sorted(self._list(prefix))
        except AnvilError:
            raise
        except Exception as e:
            raise StoreUnavailable(f"LIST {prefix} in {self.url} failed: {e}") from e

    def delete(self, key: str) -> None:
        """Delete an object; deleting a missing object is not an error.

        Raises:
            StoreError: if the key is unsafe or the store is read-only.
            StoreUnavailable: if the store cannot be reached.
        """
        check_key(key)
        if self.read_only:
            raise StoreError(f"{self.url} is read-only")
        try:
            self._delete(key)
        except AnvilError:
            raise
        except Exception as e:
            raise StoreUnavailable(f"DELETE {key} in {self.url} failed: {e}") from e

    def close(self) -> None:  # noqa: B027 - optional hook: most stores hold nothing to release
        """Release connections; the store may not be used afterwards."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"

    @abstractmethod
    def _get(self, key: str, if_none_match: str | None, max_size: int) -> GetResult: ...

    @abstractmethod
    def _put(self, key: str, data: bytes, **options: Unpack[PutOptions]) -> PutResult: ...

    @abstractmethod
    def _list(self, prefix: str) -> builtins.list[str]: ...

    @abstractmethod
    def _delete(self, key: str) -> None: ...
