"""Open a store from its URL."""

from __future__ import annotations

from urllib.parse import parse_qs, unquote, urlsplit

from anvil_client.errors import ConfigError
from anvil_client.stores._base import ObjectStore
from anvil_client.stores._file import FileStore


def open_store(url: str) -> ObjectStore:
    """Open a store from its URL (DESIGN §2).

    ``file:///abs/path``; ``s3://bucket/prefix`` (credentials and region from the AWS chain,
    ``?endpoint_url=…&region=…`` override); ``http(s)://host/prefix`` (read-only).

    Raises:
        ConfigError: for an unknown scheme or a malformed URL.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "file":
        if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
            raise ConfigError(f"file store URL must be file:///absolute/path, got {url!r}")
        return FileStore(unquote(parts.path))
    if scheme == "s3":
        if not parts.netloc:
            raise ConfigError(f"s3 store URL needs a bucket: s3://bucket/prefix, got {url!r}")
        query = parse_qs(parts.query)
        unknown = sorted(set(query) - {"endpoint_url", "region"})
        if unknown:
            raise ConfigError(
                f"s3 store URL has unknown parameter {unknown[0]!r}; "
                "only endpoint_url and region are understood"
            )
        endpoint = query.get("endpoint_url", [""])[0]
        if endpoint and urlsplit(endpoint).scheme not in ("http", "https"):
            raise ConfigError(f"s3 endpoint_url must be an http(s) URL, got {endpoint!r}")
        try:
            from anvil_client.stores._s3 import S3Store
        except ImportError as e:
            raise ConfigError("s3:// stores need boto3: pip install 'anvil-prompts[s3]'") from e
        return S3Store(
            parts.netloc,
            parts.path.strip("/"),
            endpoint_url=query.get("endpoint_url", [None])[0],
            region=query.get("region", [None])[0],
        )
    if scheme in ("http", "https"):
        if not parts.netloc:
            raise ConfigError(f"store URL has no host: {url!r}")
        from anvil_client.stores._http import HttpStore

        return HttpStore(url)
    raise ConfigError(
        f"unknown store scheme {parts.scheme or '(none)'!r} in {url!r}: "
        "use file://, s3://, http:// or https://"
    )
