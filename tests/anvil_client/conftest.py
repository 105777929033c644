"""Fixtures of the LIVE client's tests: a wire-level publisher on a FileStore and clients."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from anvil_client import AnvilClient
from anvil_client.stores import FileStore
from tests.anvil_client.spy_stores import SpyStore
from tests.anvil_client.wire_publisher import WirePublisher


@pytest.fixture
def store(tmp_path: Path) -> SpyStore:
    """A FileStore behind a spy that records (and can fail) every GET."""
    return SpyStore(FileStore(tmp_path / "store"))


@pytest.fixture
def publisher(store: SpyStore) -> WirePublisher:
    return WirePublisher(store.inner)


@pytest.fixture
def make_client(
    tmp_path: Path, publisher: WirePublisher, store: SpyStore
) -> Iterator[Callable[..., AnvilClient]]:
    """``make_client(**overrides)``: a client of the publisher's channel, closed at teardown.

    Defaults: the spy store, ``start=False`` (tests drive polls), cache in ``tmp_path/cache``.
    """
    clients: list[AnvilClient] = []

    def make(**overrides: Any) -> AnvilClient:
        settings = publisher.client_settings(tmp_path / "cache", store=store)
        settings.setdefault("start", False)
        settings.update(overrides)
        client = AnvilClient(**settings)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()
