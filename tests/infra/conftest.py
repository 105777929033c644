"""Fixtures for the production kit: the parsed template, its tools, and the stack in moto."""

from __future__ import annotations

import json
import shutil
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.servers import missing_tool

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
TEMPLATE_PATH = INFRA / "anvil.yaml"
REGION = "us-east-1"
BUCKET = "anvil-store-test"
PREFIX = "anvil"

#: Resource types moto's CloudFormation does not implement: it records them and moves on.
MOTO_SKIPS = {
    "AWS::CloudFront::CachePolicy",
    "AWS::CloudFront::Distribution",
    "AWS::CloudFront::OriginAccessControl",
    "AWS::S3::BucketPolicy",
}


def load_template() -> dict[str, Any]:
    """The template as CloudFormation reads it (short-form tags such as ``!Sub`` expanded)."""
    try:
        from cfnlint.decode import cfn_yaml
    except ImportError:
        missing_tool("cfn-lint is not installed (pip install cfn-lint; make test does)")
    loaded: dict[str, Any] = cfn_yaml.load(str(TEMPLATE_PATH))
    return loaded


@pytest.fixture(scope="session")
def template() -> dict[str, Any]:
    return load_template()


def checkov_binary() -> str | None:
    """checkov from the Makefile's separate venv (its pins clash with the project's), or PATH."""
    candidate = REPO / ".venv-tools" / "bin" / "checkov"
    return str(candidate) if candidate.exists() else shutil.which("checkov")


@dataclass
class Stack:
    """The stack moto created: its outputs and an administrator's clients."""

    outputs: dict[str, str]
    skipped_types: set[str]
    s3: Any
    iam: Any
    sts: Any

    def role_credentials(self, role_arn: str) -> dict[str, str]:
        """Temporary credentials of a role of the stack (via STS, as CI or EC2 would get)."""
        creds = self.sts.assume_role(RoleArn=role_arn, RoleSessionName="anvil-test")
        return {
            "aws_access_key_id": creds["Credentials"]["AccessKeyId"],
            "aws_secret_access_key": creds["Credentials"]["SecretAccessKey"],
            "aws_session_token": creds["Credentials"]["SessionToken"],
        }

    def policy_document(self, policy_arn: str) -> dict[str, Any]:
        """A managed policy's default version, as the stack rendered it."""
        version = self.iam.get_policy(PolicyArn=policy_arn)["Policy"]["DefaultVersionId"]
        got = self.iam.get_policy_version(PolicyArn=policy_arn, VersionId=version)
        document = got["PolicyVersion"]["Document"]
        return json.loads(document) if isinstance(document, str) else dict(document)


@pytest.fixture
def stack() -> Iterator[Stack]:
    """``infra/anvil.yaml`` deployed by moto's CloudFormation in-process (no network)."""
    try:
        import boto3
        import moto
    except ImportError:
        missing_tool("moto and boto3 are not installed (make test installs the dev extra)")

    body = load_template()
    # The CdnUrl output reads an attribute of the CloudFront distribution, which moto does not
    # create; every other output is deployed as written.
    del body["Outputs"]["CdnUrl"]
    with moto.mock_aws():
        cloudformation = boto3.client("cloudformation", region_name=REGION)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            cloudformation.create_stack(
                StackName="anvil",
                TemplateBody=json.dumps(body),
                Parameters=[
                    {"ParameterKey": "BucketName", "ParameterValue": BUCKET},
                    {"ParameterKey": "StorePrefix", "ParameterValue": PREFIX},
                    {"ParameterKey": "NoncurrentVersionDays", "ParameterValue": "30"},
                ],
                Capabilities=["CAPABILITY_IAM"],
            )
            described = cloudformation.describe_stacks(StackName="anvil")["Stacks"][0]
        assert described["StackStatus"] == "CREATE_COMPLETE", described
        skipped = set()
        for warning in caught:
            text = str(warning.message)
            if "not supported by moto's CloudFormation" in text:
                skipped.add(text.split("Tried to parse ", 1)[1].split(" ", 1)[0])
        yield Stack(
            outputs={o["OutputKey"]: o["OutputValue"] for o in described["Outputs"]},
            skipped_types=skipped,
            s3=boto3.client("s3", region_name=REGION),
            iam=boto3.client("iam", region_name=REGION),
            sts=boto3.client("sts", region_name=REGION),
        )
