"""``s3://bucket/prefix`` stores through boto3 (imported only when such a store is opened)."""

from __future__ import annotations

from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from anvil_client.errors import NotFound, PreconditionFailed, SizeLimitError, StoreUnavailable
from anvil_client.stores._base import GetResult, ObjectStore, PutResult


class S3Store(ObjectStore):
    """An S3 bucket (AWS or any S3-compatible server such as SeaweedFS or MinIO).

    Credentials, region and endpoint come from the standard AWS chain; ``endpoint_url`` and
    ``region`` override. Checksums are computed only when required, which third-party servers
    handle; conditional writes use ``If-Match`` / ``If-None-Match: *``.
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
        query = f"?endpoint_url={endpoint_url}" if endpoint_url else ""
        self.url = f"s3://{bucket}/{self.prefix}{query}"
        if client is None:
            config = Config(
                signature_version="s3v4",
                s3={"addressing_style": "path"},
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
                retries={"max_attempts": 3, "mode": "standard"},
                connect_timeout=5,
                read_timeout=30,
            )
            client = boto3.session.Session().client(
                "s3", endpoint_url=endpoint_url, region_name=region, config=config
            )
        self._client = client

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _get(self, key: str, if_none_match: str | None, max_size: int) -> GetResult:
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": self._key(key)}
        if if_none_match:
            kwargs["IfNoneMatch"] = if_none_match
        try:
            response = self._client.get_object(**kwargs)
        except ClientError as e:
            code = _code(e)
            if code in ("304", "NotModified"):
                return GetResult(data=b"", etag=if_none_match, modified=False)
            if code in ("404", "NoSuchKey", "NotFound"):
                raise NotFound(f"{key} does not exist in {self.url}") from e
            raise StoreUnavailable(f"GET {key} from {self.url} failed: {code}") from e
        except BotoCoreError as e:
            raise StoreUnavailable(f"GET {key} from {self.url} failed: {e}") from e
        body = response["Body"]
        try:
            if int(response.get("ContentLength", 0)) > max_size:
                raise SizeLimitError(f"{key} is larger than the {max_size}-byte limit")
            data = body.read(max_size + 1)
        finally:
            body.close()
        return GetResult(data=data, etag=response.get("ETag"))

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
        kwargs: dict[str, Any] = {
            "Bucket": self.bucket,
            "Key": self._key(key),
            "Body": data,
            "ContentType": content_type,
            "CacheControl": cache_control,
        }
        if if_match is not None:
            kwargs["IfMatch"] = if_match
        if if_none_match:
            kwargs["IfNoneMatch"] = "*"
        try:
            response = self._client.put_object(**kwargs)
        except ClientError as e:
            code = _code(e)
            if code in ("412", "PreconditionFailed", "409", "ConditionalRequestConflict"):
                raise PreconditionFailed(f"{key} changed in {self.url} ({code})") from e
            if code in ("404", "NoSuchKey") and if_match is not None:
                raise PreconditionFailed(f"{key} no longer exists in {self.url}") from e
            raise StoreUnavailable(f"PUT {key} to {self.url} failed: {code}") from e
        except BotoCoreError as e:
            raise StoreUnavailable(f"PUT {key} to {self.url} failed: {e}") from e
        return PutResult(etag=response.get("ETag"))

    def _list(self, prefix: str) -> list[str]:
        full = self._key(prefix)
        strip = len(self.prefix) + 1 if self.prefix else 0
        out = []
        try:
            paginator = self._client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=full):
                out.extend(item["Key"][strip:] for item in page.get("Contents", []))
        except (ClientError, BotoCoreError) as e:
            raise StoreUnavailable(f"LIST {prefix} in {self.url} failed: {e}") from e
        return out

    def _delete(self, key: str) -> None:
        try:
            self._client.delete_object(Bucket=self.bucket, Key=self._key(key))
        except (ClientError, BotoCoreError) as e:
            raise StoreUnavailable(f"DELETE {key} in {self.url} failed: {e}") from e

    def close(self) -> None:
        self._client.close()


def _code(error: ClientError) -> str:
    err = error.response.get("Error", {})
    code = str(err.get("Code", ""))
    status = str(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
    return code if code and not code.isdigit() else status or code
