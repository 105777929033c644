"""``s3://bucket/prefix`` stores through boto3 (imported only when such a store is opened).

>>> from anvil_client.stores import open_store
>>> open_store("s3://my-bucket/anvil?endpoint_url=http://127.0.0.1:8333").prefix
'anvil'
"""

from __future__ import annotations

import os
from typing import Any, Unpack

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from anvil_client.errors import (
    NotFound,
    PreconditionFailed,
    SizeLimitError,
    StoreError,
    StoreUnavailable,
)
from anvil_client.stores._base import GetResult, ObjectStore, PutOptions, PutResult

_NOT_MODIFIED = frozenset({"304", "NotModified"})
_NOT_FOUND = frozenset({"404", "NoSuchKey", "NotFound"})
_PRECONDITION = frozenset({"412", "PreconditionFailed", "409", "ConditionalRequestConflict"})
_DENIED = frozenset(
    {
        "401",
        "403",
        "AccessDenied",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "AllAccessDisabled",
    }
)
_READ_CHUNK = 1024 * 1024


class S3Store(ObjectStore):
    """An S3 bucket (AWS or any S3-compatible server such as SeaweedFS or MinIO).

    Credentials, region and endpoint come from the standard AWS chain; ``endpoint_url`` and
    ``region`` override. Checksums are computed only when required, which third-party servers
    handle; conditional writes use ``If-Match`` / ``If-None-Match: *``. Every object is
    written with ``Content-Type: application/json`` and the Cache-Control of DESIGN §2.
    A client built here is rebuilt in a forked child (boto3 clients are not fork-safe).
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        client: Any = None,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint_url = endpoint_url
        self.region = region
        query = f"?endpoint_url={endpoint_url}" if endpoint_url else ""
        self.url = f"s3://{bucket}/{self.prefix}{query}"
        self._owns_client = client is None
        self._client = client if client is not None else self._new_client()
        self._pid = os.getpid()

    def _new_client(self) -> Any:
        config = Config(
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            retries={"max_attempts": 3, "mode": "standard"},
            connect_timeout=5,
            read_timeout=30,
        )
        return boto3.session.Session().client(
            "s3", endpoint_url=self.endpoint_url, region_name=self.region, config=config
        )

    @property
    def client(self) -> Any:
        """The boto3 client, rebuilt after a fork when this store made it."""
        if self._owns_client and os.getpid() != self._pid:
            self._client = self._new_client()
            self._pid = os.getpid()
        return self._client

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _get(self, key: str, if_none_match: str | None, max_size: int) -> GetResult:
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": self._key(key)}
        if if_none_match:
            kwargs["IfNoneMatch"] = if_none_match
        try:
            response = self.client.get_object(**kwargs)
        except ClientError as e:
            code = _code(e)
            if code in _NOT_MODIFIED:
                return GetResult(data=b"", etag=if_none_match, modified=False)
            if code in _NOT_FOUND:
                raise NotFound(f"{key} does not exist in {self.url}") from e
            raise self._error("GET", key, code) from e
        except BotoCoreError as e:
            raise StoreUnavailable(f"GET {key} from {self.url} failed: {e}") from e
        body = response["Body"]
        try:
            if int(response.get("ContentLength") or 0) > max_size:
                raise SizeLimitError(f"{key} is larger than the {max_size}-byte limit")
            chunks = []
            size = 0
            while chunk := body.read(min(_READ_CHUNK, max_size + 1 - size)):
                chunks.append(chunk)
                size += len(chunk)
                if size > max_size:
                    raise SizeLimitError(f"{key} is larger than the {max_size}-byte limit")
        except (BotoCoreError, OSError) as e:
            raise StoreUnavailable(f"GET {key} from {self.url} failed while reading: {e}") from e
        finally:
            body.close()
        return GetResult(data=b"".join(chunks), etag=response.get("ETag"))

    def _put(self, key: str, data: bytes, **options: Unpack[PutOptions]) -> PutResult:
        kwargs: dict[str, Any] = {
            "Bucket": self.bucket,
            "Key": self._key(key),
            "Body": data,
            "ContentType": options["content_type"],
            "CacheControl": options["cache_control"],
        }
        if_match = options["if_match"]
        if if_match is not None:
            kwargs["IfMatch"] = if_match
        if options["if_none_match"]:
            kwargs["IfNoneMatch"] = "*"
        try:
            response = self.client.put_object(**kwargs)
        except ClientError as e:
            code = _code(e)
            if code in _PRECONDITION:
                raise PreconditionFailed(f"{key} changed in {self.url} ({code})") from e
            if code in _NOT_FOUND and if_match is not None:
                raise PreconditionFailed(f"{key} no longer exists in {self.url}") from e
            raise self._error("PUT", key, code) from e
        except BotoCoreError as e:
            raise StoreUnavailable(f"PUT {key} to {self.url} failed: {e}") from e
        return PutResult(etag=response.get("ETag"))

    def _list(self, prefix: str) -> list[str]:
        full = self._key(prefix)
        strip = len(self.prefix) + 1 if self.prefix else 0
        out: list[str] = []
        try:
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=full):
                out.extend(item["Key"][strip:] for item in page.get("Contents", []))
        except ClientError as e:
            raise self._error("LIST", prefix, _code(e)) from e
        except BotoCoreError as e:
            raise StoreUnavailable(f"LIST {prefix} in {self.url} failed: {e}") from e
        return out

    def _delete(self, key: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as e:
            raise self._error("DELETE", key, _code(e)) from e
        except BotoCoreError as e:
            raise StoreUnavailable(f"DELETE {key} in {self.url} failed: {e}") from e

    def _error(self, op: str, key: str, code: str) -> StoreError:
        """A permanent problem (denied, no bucket) is a StoreError; anything else may pass."""
        if code in _DENIED:
            return StoreError(
                f"{op} {key} in {self.url} was denied ({code}): check the credentials and policy"
            )
        if code == "NoSuchBucket":
            return StoreError(f"bucket {self.bucket!r} of {self.url} does not exist")
        return StoreUnavailable(f"{op} {key} in {self.url} failed: {code or 'unknown error'}")

    def close(self) -> None:
        if self._owns_client:
            self._client.close()


def _code(error: ClientError) -> str:
    err = error.response.get("Error", {})
    code = str(err.get("Code", ""))
    status = str(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
    return code if code and not code.isdigit() else status or code
