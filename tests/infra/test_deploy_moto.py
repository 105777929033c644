"""``infra/anvil.yaml`` deployed by moto's CloudFormation, then used with the roles it made.

What moto checks and what it does not (moto 5, read in its source, ``moto/iam/access_control``):
- It creates the bucket (with its encryption) and the IAM policies, roles and instance
  profile; it skips the CloudFront resources and the bucket policy (asserted below), and it
  does not apply the bucket's versioning, public access block or lifecycle rules (those are
  asserted on the template in ``test_template.py``).
- With ``INITIAL_NO_AUTH_ACTION_COUNT`` at 0 it authenticates every request (SigV4, the
  assumed role's session token) and authorises its action on its resource against the
  principal's identity policies, with wildcards: so "the client cannot write" and "the
  publisher cannot touch other keys" are enforced here, by moto, on the roles the stack made.
- It does not evaluate ``StringLike`` conditions (an unknown operator passes), so the
  ``s3:prefix`` condition on ``ListBucket`` is not enforced by moto. The last test evaluates
  the deployed policy documents for it with ``tests/infra/policy_sim.py`` instead.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from anvil_client import AnvilClient
from anvil_client.errors import StoreError
from anvil_client.stores import S3Store
from anvil_client.wire import AccessToken, generate_private_key, public_key_text
from publisher import Publisher, build_bundle, collect_garbage
from tests.infra.conftest import BUCKET, MOTO_SKIPS, PREFIX, REGION, Stack
from tests.infra.policy_sim import allowed

PROMPTS = {"welcome.message": {"template": "Welcome {{ name }}!"}}


@contextlib.contextmanager
def iam_enforced() -> Iterator[None]:
    """moto authenticates and authorises every request inside this block."""
    from moto import settings
    from moto.core.authorization import ActionAuthenticatorMixin

    before = (settings.INITIAL_NO_AUTH_ACTION_COUNT, ActionAuthenticatorMixin.request_count)
    settings.INITIAL_NO_AUTH_ACTION_COUNT = 0
    try:
        yield
    finally:
        settings.INITIAL_NO_AUTH_ACTION_COUNT, ActionAuthenticatorMixin.request_count = before


def _s3(credentials: dict[str, str]) -> Any:
    import boto3

    return boto3.client("s3", region_name=REGION, **credentials)


def _denied(call: Any, **kwargs: Any) -> bool:
    try:
        call(**kwargs)
    except ClientError as e:
        return e.response["Error"]["Code"] == "AccessDenied"
    return False


@pytest.fixture
def app_role(stack: Stack) -> str:
    """An application's role with the stack's client read policy attached (as its docs say)."""
    role = stack.iam.create_role(
        RoleName="anvil-app",
        AssumeRolePolicyDocument='{"Version":"2012-10-17","Statement":[{"Effect":"Allow",'
        '"Principal":{"Service":"ec2.amazonaws.com"},"Action":"sts:AssumeRole"}]}',
    )
    stack.iam.attach_role_policy(
        RoleName="anvil-app", PolicyArn=stack.outputs["ClientReadPolicyArn"]
    )
    return str(role["Role"]["Arn"])


def test_moto_creates_the_bucket_and_iam_parts_and_skips_cloudfront(stack: Stack) -> None:
    assert stack.skipped_types == MOTO_SKIPS
    outputs = stack.outputs
    assert outputs["BucketName"] == BUCKET
    assert outputs["StoreUrl"] == f"s3://{BUCKET}/{PREFIX}"
    encryption = stack.s3.get_bucket_encryption(Bucket=BUCKET)
    rules = encryption["ServerSideEncryptionConfiguration"]["Rules"]
    assert rules[0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"

    def attached(role_arn: str) -> set[str]:
        name = role_arn.rsplit("/", 1)[1]
        found = stack.iam.list_attached_role_policies(RoleName=name)["AttachedPolicies"]
        return {p["PolicyArn"] for p in found}

    publisher, client = outputs["PublisherPolicyArn"], outputs["ClientReadPolicyArn"]
    assert attached(outputs["PublisherRoleArn"]) == {publisher}
    assert attached(outputs["ForgeRoleArn"]) == {publisher, client}
    profile = outputs["ForgeInstanceProfileArn"].rsplit("/", 1)[1]
    roles = stack.iam.get_instance_profile(InstanceProfileName=profile)["InstanceProfile"]["Roles"]
    assert [r["Arn"] for r in roles] == [outputs["ForgeRoleArn"]]
    document = stack.policy_document(client)
    assert document["Statement"][0]["Resource"] == f"arn:aws:s3:::{BUCKET}/{PREFIX}/*"


def test_publish_sync_and_gc_with_the_stack_roles(
    stack: Stack, app_role: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project_id = str(uuid.uuid4())
    key: Ed25519PrivateKey = generate_private_key()
    token = AccessToken.generate()
    publisher_creds = stack.role_credentials(stack.outputs["PublisherRoleArn"])
    forge_creds = stack.role_credentials(stack.outputs["ForgeRoleArn"])
    app_creds = stack.role_credentials(app_role)
    with iam_enforced():
        # CI publishes with the publisher role; the FORGE publishes the next version.
        ci = Publisher(
            S3Store(BUCKET, PREFIX, client=_s3(publisher_creds)),
            project_id=project_id,
            signing_key=key,
        )
        first = ci.publish(
            build_bundle(PROMPTS, project_id=project_id, version="1.0.0", prompt_set_id="s"),
            "production",
            recipients=[token.text],
        )
        forge = Publisher(
            S3Store(BUCKET, PREFIX, client=_s3(forge_creds)),
            project_id=project_id,
            signing_key=key,
        )
        second = forge.publish(
            build_bundle(
                {"welcome.message": {"template": "Hello {{ name }}!"}},
                project_id=project_id,
                version="1.1.0",
                prompt_set_id="s",
            ),
            "production",
            recipients=[token.text],
        )
        assert second.sequence == 2

        # The application syncs with its own role, through the store URL, as an app would.
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", app_creds["aws_access_key_id"])
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", app_creds["aws_secret_access_key"])
        monkeypatch.setenv("AWS_SESSION_TOKEN", app_creds["aws_session_token"])
        client = AnvilClient(
            store=f"s3://{BUCKET}/{PREFIX}",
            project_id=project_id,
            access_token=token.text,
            trusted_keys=[public_key_text(key.public_key())],
            cache_dir=tmp_path / "cache",
            start=False,
        )
        try:
            status = client.sync()
            assert (status["last_error"], status["sequence"], status["version"]) == (
                None,
                2,
                "1.1.0",
            )
            assert client.prompt("welcome.message", name="Ada") == "Hello Ada!"
        finally:
            client.close()

        # gc with the publisher role: 1.0.0's object is named by nothing kept.
        report = collect_garbage(
            S3Store(BUCKET, PREFIX, client=_s3(publisher_creds)),
            project_id,
            [public_key_text(key.public_key())],
            keep_history=1,
            min_age=timedelta(0),
            delete=True,
        )
        assert report.deleted == (first.object_path,)


def test_client_cannot_write_and_publisher_cannot_leave_its_prefix(
    stack: Stack, app_role: str
) -> None:
    stack.s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    stack.s3.put_object(Bucket=BUCKET, Key="other/secret.json", Body=b"{}")
    bundle = f"{PREFIX}/projects/p/bundles/{'a' * 64}.jwe"
    pointer = f"{PREFIX}/projects/p/channels/production.json"
    version = stack.s3.put_object(Bucket=BUCKET, Key=bundle, Body=b"x")["VersionId"]
    stack.s3.put_object(Bucket=BUCKET, Key=pointer, Body=b"{}")
    app = _s3(stack.role_credentials(app_role))
    pub = _s3(stack.role_credentials(stack.outputs["PublisherRoleArn"]))
    with iam_enforced():
        # The client read policy: GetObject under the prefix, and nothing else.
        assert app.get_object(Bucket=BUCKET, Key=pointer)["Body"].read() == b"{}"
        assert _denied(app.put_object, Bucket=BUCKET, Key=pointer, Body=b"forged")
        assert _denied(app.put_object, Bucket=BUCKET, Key=bundle, Body=b"forged")
        assert _denied(app.delete_object, Bucket=BUCKET, Key=bundle)
        assert _denied(app.list_objects_v2, Bucket=BUCKET, Prefix=f"{PREFIX}/")
        assert _denied(app.get_object, Bucket=BUCKET, Key="other/secret.json")

        # The publisher: everything under its prefix, nothing outside it.
        pub.put_object(Bucket=BUCKET, Key=f"{PREFIX}/projects/p/channels/x.json", Body=b"{}")
        assert _denied(pub.put_object, Bucket=BUCKET, Key="other/evil.json", Body=b"{}")
        assert _denied(pub.get_object, Bucket=BUCKET, Key="other/secret.json")
        assert _denied(pub.delete_object, Bucket=BUCKET, Key="other/secret.json")
        # It deletes bundle objects (gc) but never pointers, history or object versions.
        assert _denied(pub.delete_object, Bucket=BUCKET, Key=pointer)
        assert _denied(pub.delete_object, Bucket=BUCKET, Key=bundle, VersionId=version)
        pub.delete_object(Bucket=BUCKET, Key=bundle)
        # Through the store layer, a publisher aimed at another prefix fails with a sentence.
        with pytest.raises(StoreError, match="denied"):
            S3Store(BUCKET, "other", client=pub).put("projects/p/channels/c.json", b"{}")
    versions = stack.s3.list_object_versions(Bucket=BUCKET, Prefix=bundle)["Versions"]
    assert [v["VersionId"] for v in versions] == [version]  # still restorable


def test_listing_is_confined_to_the_prefix_by_policy_simulation(stack: Stack) -> None:
    outputs = stack.outputs
    publisher = [stack.policy_document(outputs["PublisherPolicyArn"])]
    client = [stack.policy_document(outputs["ClientReadPolicyArn"])]
    forge = publisher + client
    bucket = f"arn:aws:s3:::{BUCKET}"

    def can_list(documents: list[dict[str, Any]], prefix: str | None) -> bool:
        context = {} if prefix is None else {"s3:prefix": prefix}
        return allowed(documents, "s3:ListBucket", bucket, context)

    for documents in (publisher, forge):
        assert can_list(documents, f"{PREFIX}/projects/p/channels/")
        assert can_list(documents, f"{PREFIX}/projects/p/bundles/")
        assert not can_list(documents, "other/")
        assert not can_list(documents, "")
        assert not can_list(documents, None)  # listing the whole bucket
        assert not can_list(documents, f"{PREFIX}x/")  # a sibling prefix is not "under" it
    assert not can_list(client, f"{PREFIX}/projects/")
    # S3 answers 404 (not 403) for a missing object only to who may list it, evaluating
    # ListBucket with s3:prefix = the key: a publisher's first GET of a pointer is a 404.
    assert can_list(publisher, f"{PREFIX}/projects/p/channels/production.json")
    # The same documents, checked against what moto enforced in the test above.
    assert allowed(publisher, "s3:DeleteObject", f"{bucket}/{PREFIX}/projects/p/bundles/a.jwe")
    assert not allowed(
        publisher, "s3:DeleteObject", f"{bucket}/{PREFIX}/projects/p/channels/c/history/1.json"
    )
    assert not allowed(client, "s3:PutObject", f"{bucket}/{PREFIX}/projects/p/channels/c.json")
    assert allowed(client, "s3:GetObject", f"{bucket}/{PREFIX}/projects/p/channels/c.json")
