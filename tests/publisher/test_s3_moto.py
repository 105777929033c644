"""The publisher on moto's S3: conditional writes, headers of DESIGN §2, reader round trip."""

from __future__ import annotations

from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from anvil_client.errors import PreconditionFailed
from anvil_client.wire import AccessToken
from publisher import Publisher, build_bundle, inspect
from tests.publisher.conftest import client_apply, public_text


@pytest.fixture
def s3_store(moto_s3: Any) -> Any:
    from anvil_client.stores import S3Store

    return S3Store("anvil-test", "team/anvil", client=moto_s3)


def test_round_trip_and_headers_on_s3(
    s3_store: Any,
    moto_s3: Any,
    project_id: str,
    signing_key: Ed25519PrivateKey,
    token_a: AccessToken,
    prompts: dict[str, Any],
) -> None:
    pub = Publisher(s3_store, project_id=project_id, signing_key=signing_key)
    built = build_bundle(prompts, project_id=project_id, version="1.0.0", prompt_set_id="s")
    first = pub.publish(built, channel="production", recipients=[token_a.text])
    second = pub.publish(built, channel="production", recipients=[token_a.text])
    assert (first.sequence, second.sequence, second.reused_object) == (1, 2, True)
    applied = client_apply(s3_store, project_id, "production", signing_key, token_a)
    assert applied.data == built.data
    base = f"team/anvil/projects/{project_id}"
    heads = {
        key: moto_s3.head_object(Bucket="anvil-test", Key=f"{base}/{key}")
        for key in (
            "channels/production.json",
            "channels/production/history/000000000002.json",
            first.object_path.removeprefix(f"projects/{project_id}/"),
        )
    }
    for key, head in heads.items():
        assert head["ContentType"] == "application/json"
        immutable = "/bundles/" in f"/{key}" or key.startswith("bundles/")
        assert head["CacheControl"] == (
            "public, max-age=31536000, immutable" if immutable else "no-cache"
        )
    summary = inspect(s3_store, project_id, "production", [public_text(signing_key)], token_a)
    assert (summary.sequence, summary.prompt_count) == (2, 3)


def test_s3_conditional_writes_are_what_the_cas_relies_on(s3_store: Any) -> None:
    first = s3_store.put("projects/p/channels/c.json", b"1", if_none_match=True)
    with pytest.raises(PreconditionFailed):
        s3_store.put("projects/p/channels/c.json", b"2", if_none_match=True)
    with pytest.raises(PreconditionFailed):
        s3_store.put("projects/p/channels/c.json", b"2", if_match='"0000"')
    s3_store.put("projects/p/channels/c.json", b"3", if_match=first.etag)
    assert s3_store.get("projects/p/channels/c.json").data == b"3"
