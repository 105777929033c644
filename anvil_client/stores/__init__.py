"""Object stores behind one small interface: ``file://``, ``s3://``, ``http(s)://``.

    >>> from anvil_client.stores import open_store
    >>> open_store("file:///tmp/anvil-store").read_only
    False

``open_store`` imports boto3 only for ``s3://`` URLs and urllib3 only for ``http(s)://``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from anvil_client.stores._base import (
    DEFAULT_MAX_SIZE,
    GetResult,
    ObjectStore,
    PutResult,
    cache_control_for,
    check_key,
)
from anvil_client.stores._file import FileStore, write_atomically
from anvil_client.stores._open import open_store

if TYPE_CHECKING:
    from anvil_client.stores._http import HttpStore
    from anvil_client.stores._s3 import S3Store

__all__ = [
    "DEFAULT_MAX_SIZE",
    "FileStore",
    "GetResult",
    "HttpStore",
    "ObjectStore",
    "PutResult",
    "S3Store",
    "cache_control_for",
    "check_key",
    "open_store",
    "write_atomically",
]


def __getattr__(name: str) -> Any:
    # S3Store and HttpStore are importable from here, but boto3 and urllib3 load only on use.
    if name == "S3Store":
        from anvil_client.stores._s3 import S3Store

        return S3Store
    if name == "HttpStore":
        from anvil_client.stores._http import HttpStore

        return HttpStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
