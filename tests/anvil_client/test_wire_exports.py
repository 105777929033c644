"""The public names of ``anvil_client.wire`` and ``anvil_client.stores`` (like httpx's test)."""

from __future__ import annotations

import subprocess
import sys
import types

import anvil_client.stores
import anvil_client.wire

WIRE = [
    "BUNDLE_MAX_SIZE",
    "BUNDLE_MEDIA_TYPE",
    "BUNDLE_TYPE",
    "CHANNEL_RE",
    "DEFAULT_MAX_OUTPUT",
    "ENVIRONMENT",
    "HEARTBEAT_MAX_SIZE",
    "HISTORY_NAME_RE",
    "POINTER_MAX_SIZE",
    "POINTER_PAYLOAD_TYPE",
    "POINTER_TYPE",
    "PROMPT_ID_MAX",
    "PROMPT_ID_RE",
    "RELEASES_MAX",
    "RELEASE_NAME_MAX",
    "ROLES",
    "SEMVER_RE",
    "TOKEN_RE",
    "AccessToken",
    "Bundle",
    "CompiledPrompt",
    "Message",
    "ObjectRef",
    "Pointer",
    "PromptSpec",
    "ReadableStore",
    "Release",
    "Rollout",
    "TrustedKey",
    "b64decode_any",
    "b64encode_std",
    "b64url_encode",
    "bundle_key",
    "bundles_prefix",
    "canonical_json",
    "check_bundle_matches",
    "check_content",
    "check_disjoint",
    "check_object",
    "check_object_size",
    "compile_prompt",
    "decrypt_bundle",
    "derive_kek",
    "encrypt_bundle",
    "fetch_object",
    "find_shared_prompt_id",
    "find_signing_key",
    "format_timestamp",
    "generate_private_key",
    "history_key",
    "history_prefix",
    "in_rollout",
    "inflate_bounded",
    "is_bundle_name",
    "is_prompt_id",
    "key_id",
    "load_private_key",
    "load_private_key_file",
    "open_object",
    "pae",
    "parse_bundle",
    "parse_json_object",
    "parse_public_key",
    "parse_template",
    "parse_timestamp",
    "pointer_key",
    "private_key_pem",
    "public_key_text",
    "recipient_ids",
    "rollout_key",
    "select_releases",
    "served_version",
    "sha256_hex",
    "sign_envelope",
    "spec_variables",
    "template_variables",
    "verify_envelope",
    "verify_pointer",
    "write_private_key_file",
]

STORES = [
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


def _public(module: types.ModuleType) -> set[str]:
    return {
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType)
        and name not in {"annotations", "TYPE_CHECKING", "Any"}
    }


def test_wire_exports() -> None:
    assert anvil_client.wire.__all__ == WIRE
    for name in WIRE:
        assert getattr(anvil_client.wire, name) is not None, name
    # Nothing public hides outside __all__.
    assert _public(anvil_client.wire) == set(WIRE)


def test_wire_members_come_from_private_modules() -> None:
    for name in WIRE:
        member = getattr(anvil_client.wire, name)
        if isinstance(member, type | types.FunctionType):
            assert member.__module__.startswith("anvil_client.wire._"), name


def test_stores_exports() -> None:
    assert anvil_client.stores.__all__ == STORES
    for name in STORES:
        assert getattr(anvil_client.stores, name) is not None, name
    assert _public(anvil_client.stores) | {"HttpStore", "S3Store"} == set(STORES)


def test_importing_the_wire_and_stores_loads_no_boto3_or_urllib3() -> None:
    code = (
        "import sys, anvil_client.wire, anvil_client.stores\n"
        "print(sorted(m for m in ('boto3', 'botocore', 'urllib3', 'flask', 'sqlalchemy')"
        " if m in sys.modules))\n"
        "anvil_client.stores.open_store('http://127.0.0.1:9/x')\n"
        "print('urllib3' in sys.modules, 'boto3' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout.splitlines()
    assert out == ["[]", "True False"]
