"""The SeaweedFS fixture itself: conditional writes are what the publisher's CAS relies on."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

pytestmark = pytest.mark.integration


def test_seaweedfs_enforces_conditional_puts(seaweedfs) -> None:  # type: ignore[no-untyped-def]
    client = seaweedfs.client()
    bucket = seaweedfs.create_bucket("cas-check")
    first = client.put_object(Bucket=bucket, Key="k", Body=b"1", IfNoneMatch="*")["ETag"]
    with pytest.raises(ClientError) as exists:
        client.put_object(Bucket=bucket, Key="k", Body=b"2", IfNoneMatch="*")
    assert exists.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
    with pytest.raises(ClientError) as stale:
        client.put_object(Bucket=bucket, Key="k", Body=b"2", IfMatch='"0000"')
    assert stale.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
    client.put_object(Bucket=bucket, Key="k", Body=b"3", IfMatch=first)
    assert client.get_object(Bucket=bucket, Key="k")["Body"].read() == b"3"
