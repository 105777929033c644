"""The Anvil wire format: canonical JSON, DSSE pointers, JWE bundles, tokens, keys, rendering.

    >>> from anvil_client.wire import AccessToken
    >>> AccessToken.generate().text.startswith("anvil_")
    True

This is the contract between the publisher (which writes it) and the client (which reads it);
both import it from here. Everything is pure: bytes in, models out, no I/O.
"""

from __future__ import annotations

from anvil_client.wire._canonical import (
    b64decode_any,
    b64encode_std,
    b64url_encode,
    canonical_json,
    parse_json_object,
    sha256_hex,
)
from anvil_client.wire._dsse import POINTER_PAYLOAD_TYPE, pae, sign_envelope, verify_envelope
from anvil_client.wire._jwe import (
    BUNDLE_MEDIA_TYPE,
    decrypt_bundle,
    encrypt_bundle,
    inflate_bounded,
    recipient_ids,
)
from anvil_client.wire._keys import (
    TrustedKey,
    generate_private_key,
    key_id,
    load_private_key,
    load_private_key_file,
    parse_public_key,
    private_key_pem,
    public_key_text,
    write_private_key_file,
)
from anvil_client.wire._models import (
    BUNDLE_TYPE,
    CHANNEL_RE,
    POINTER_TYPE,
    PROMPT_ID_MAX,
    PROMPT_ID_RE,
    ROLES,
    SEMVER_RE,
    Bundle,
    Message,
    ObjectRef,
    Pointer,
    PromptSpec,
    Release,
    Rollout,
    format_timestamp,
    is_prompt_id,
    parse_bundle,
    parse_timestamp,
)
from anvil_client.wire._render import (
    DEFAULT_MAX_OUTPUT,
    ENVIRONMENT,
    CompiledPrompt,
    compile_prompt,
    parse_template,
    spec_variables,
    template_variables,
)
from anvil_client.wire._rollout import in_rollout, select_release
from anvil_client.wire._tokens import TOKEN_RE, AccessToken, derive_kek

__all__ = [
    "BUNDLE_MEDIA_TYPE",
    "BUNDLE_TYPE",
    "CHANNEL_RE",
    "DEFAULT_MAX_OUTPUT",
    "ENVIRONMENT",
    "POINTER_PAYLOAD_TYPE",
    "POINTER_TYPE",
    "PROMPT_ID_MAX",
    "PROMPT_ID_RE",
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
    "Release",
    "Rollout",
    "TrustedKey",
    "b64decode_any",
    "b64encode_std",
    "b64url_encode",
    "canonical_json",
    "compile_prompt",
    "decrypt_bundle",
    "derive_kek",
    "encrypt_bundle",
    "format_timestamp",
    "generate_private_key",
    "in_rollout",
    "inflate_bounded",
    "is_prompt_id",
    "key_id",
    "load_private_key",
    "load_private_key_file",
    "pae",
    "parse_bundle",
    "parse_json_object",
    "parse_public_key",
    "parse_template",
    "parse_timestamp",
    "private_key_pem",
    "public_key_text",
    "recipient_ids",
    "select_release",
    "sha256_hex",
    "sign_envelope",
    "spec_variables",
    "template_variables",
    "verify_envelope",
    "write_private_key_file",
]
