"""Wire models: pointer v2 (signed), its release entries, bundle and its prompts (DESIGN §3-§4)."""

from __future__ import annotations

import itertools
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Annotated, Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator
from pydantic import ValidationError as PydanticValidationError

from anvil_client.errors import FormatError
from anvil_client.wire._canonical import canonical_json, parse_json_object
from anvil_client.wire._layout import RELEASES_MAX, bundles_prefix, is_bundle_name

# Python's ``$`` also matches before a final newline, so the compiled expressions end in
# ``\Z`` (``.match`` is then exact); pydantic (Rust regex) gets the ``$`` spelling.
_PROMPT_ID_PATTERN = r"^[a-z0-9_]+(\.[a-z0-9_-]+)*$"
_CHANNEL_PATTERN = r"^[a-z0-9][a-z0-9-]{0,31}$"
_SEMVER_PATTERN = (
    r"^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)"
    r"(?:-((?:0|[1-9][0-9]*|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9][0-9]*|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$"
)


def _exact(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern[:-1] + r"\Z", re.ASCII)


PROMPT_ID_RE = _exact(_PROMPT_ID_PATTERN)
PROMPT_ID_MAX = 128
CHANNEL_RE = _exact(_CHANNEL_PATTERN)
SEMVER_RE = _exact(_SEMVER_PATTERN)
ROLES = ("system", "user", "assistant")
POINTER_TYPE = "anvil.pointer/v2"
#: The longest display name of a release entry (a prompt set's name).
RELEASE_NAME_MAX = 200
#: Sequences are signed 64-bit integers everywhere else (databases, other languages' clients).
SEQUENCE_MAX = 2**63 - 1
BUNDLE_TYPE = "anvil.bundle/v1"
_RFC3339_RE = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})\Z",
    re.ASCII,
)

Hex64 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
Timestamp = Annotated[str, StringConstraints(max_length=64)]
_STRICT = ConfigDict(strict=True, frozen=True, extra="ignore")


def parse_timestamp(value: str) -> datetime:
    """Parse an RFC 3339 timestamp (``2026-01-15T10:30:00Z``) into an aware datetime.

    Raises:
        FormatError: if it is not an RFC 3339 date-time with a time zone.
    """
    if not isinstance(value, str) or not _RFC3339_RE.match(value):
        raise FormatError(f"{str(value)[:64]!r} is not an RFC 3339 timestamp with a time zone")
    try:
        moment = datetime.fromisoformat(value.upper().replace("Z", "+00:00"))
        moment.astimezone(UTC)  # 0001-01-01T00:00:00+01:00 is a valid reading of no instant
    except (ValueError, OverflowError) as e:
        raise FormatError(f"{value!r} is not a valid RFC 3339 timestamp") from e
    return moment


def format_timestamp(moment: datetime) -> str:
    """``YYYY-MM-DDTHH:MM:SSZ`` in UTC (a naive datetime is taken as local time)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def is_prompt_id(value: str) -> bool:
    """Whether ``value`` is a valid prompt id (DESIGN §1)."""
    return (
        isinstance(value, str)
        and len(value) <= PROMPT_ID_MAX
        and PROMPT_ID_RE.match(value) is not None
    )


class ObjectRef(BaseModel):
    """Where a release's stored bytes live and how to check them."""

    model_config = _STRICT
    path: str = Field(max_length=1024)
    sha256: Hex64
    size: int = Field(ge=0)
    encoding: Literal["jwe", "json"]

    def check_location(self, project_id: str) -> None:
        """The object must sit directly under ``projects/{project_id}/bundles/``.

        Raises:
            FormatError: otherwise.
        """
        prefix = bundles_prefix(project_id)
        name = self.path[len(prefix) :]
        if not self.path.startswith(prefix) or not is_bundle_name(name):
            raise FormatError(f"bundle object path {self.path[:300]!r} is outside {prefix}")
        if not name.endswith(f".{self.encoding}"):
            raise FormatError(
                f"bundle object path {self.path!r} does not match its encoding {self.encoding!r}"
            )


class Release(BaseModel):
    """One entry of a pointer: a published prompt set version and its stored object."""

    model_config = _STRICT
    prompt_set_id: str = Field(min_length=1, max_length=128)
    name: str = Field(max_length=RELEASE_NAME_MAX)
    version: Annotated[str, StringConstraints(pattern=_SEMVER_PATTERN, max_length=256)]
    content_sha256: Hex64
    object: ObjectRef

    def describe(self) -> str:
        """``Support bot 1.2.3`` (or the set id when the entry has no name)."""
        return f"{self.name or self.prompt_set_id} {self.version}"


def check_release_list(releases: list[Release], what: str = "releases") -> list[Release]:
    """1 to 100 entries, sorted by ``prompt_set_id``, each set once (DESIGN §4).

    Raises:
        ValueError: otherwise (pydantic turns it into a validation error).
    """
    if not 1 <= len(releases) <= RELEASES_MAX:
        raise ValueError(f"{what} must have 1 to {RELEASES_MAX} entries, not {len(releases)}")
    ids = [release.prompt_set_id for release in releases]
    for before, after in itertools.pairwise(ids):
        if before == after:
            raise ValueError(f"{what} names prompt set {after[:128]!r} twice")
        if before > after:
            raise ValueError(f"{what} must be sorted by prompt_set_id")
    return releases


class _HasContent(Protocol):
    @property
    def content_sha256(self) -> str: ...


def rollout_key(releases: Sequence[_HasContent]) -> str:
    """The entries' ``content_sha256`` joined by ``,`` in list order (the rollout bucket key).

    Any entries with a ``content_sha256`` do (the FORGE keys its own records of a list)."""
    return ",".join(release.content_sha256 for release in releases)


def served_version(releases: list[Release] | tuple[Release, ...]) -> str:
    """``status()["version"]`` (DESIGN §7): the one entry's version; with several entries
    ``name@version`` joined by ``, `` in list order."""
    if len(releases) == 1:
        return releases[0].version
    return ", ".join(f"{r.name or r.prompt_set_id}@{r.version}" for r in releases)


class Rollout(BaseModel):
    """A gradual rollout: ``percent`` of instances serve ``releases``, the rest ``previous``."""

    model_config = _STRICT
    percent: int = Field(ge=0, le=100)
    previous: list[Release]

    @field_validator("previous")
    @classmethod
    def _entries(cls, value: list[Release]) -> list[Release]:
        return check_release_list(value, "rollout.previous")


class Pointer(BaseModel):
    """The signed body saying which releases a channel serves (DESIGN §4, v2)."""

    model_config = _STRICT
    type: Literal["anvil.pointer/v2"]
    project_id: str = Field(max_length=128)
    channel: Annotated[str, StringConstraints(pattern=_CHANNEL_PATTERN)]
    sequence: int = Field(ge=1, le=SEQUENCE_MAX)
    published_at: Timestamp
    expires_at: Timestamp | None = None
    releases: list[Release]
    rollout: Rollout | None = None

    @field_validator("releases")
    @classmethod
    def _entries(cls, value: list[Release]) -> list[Release]:
        return check_release_list(value)

    @field_validator("published_at", "expires_at")
    @classmethod
    def _rfc3339(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                parse_timestamp(value)
            except FormatError as e:
                raise ValueError(str(e)) from None
        return value

    @classmethod
    def parse(cls, body: bytes) -> Pointer:
        """Parse a verified pointer body.

        Raises:
            FormatError: if it is not a valid ``anvil.pointer/v2`` body.
        """
        data = parse_json_object(body, "pointer")
        try:
            pointer = cls.model_validate(data)
        except PydanticValidationError as e:
            raise FormatError(f"pointer is invalid: {_first_error(e)}") from e
        return pointer

    def to_bytes(self) -> bytes:
        """The canonical JSON body, ready to sign."""
        return canonical_json(self.model_dump(mode="json"))

    @property
    def expires(self) -> datetime | None:
        return None if self.expires_at is None else parse_timestamp(self.expires_at)

    def all_releases(self) -> list[Release]:
        """Every entry the pointer names: ``releases`` and, during a rollout, ``previous``."""
        if self.rollout is None:
            return list(self.releases)
        return [*self.releases, *self.rollout.previous]

    def entry(self, prompt_set_id: str) -> Release | None:
        """The entry of one prompt set in ``releases``, or None."""
        return next((r for r in self.releases if r.prompt_set_id == prompt_set_id), None)

    def check_locations(self) -> None:
        """Every object named must sit directly under ``projects/{project_id}/bundles/``.

        Raises:
            FormatError: otherwise.
        """
        for release in self.all_releases():
            release.object.check_location(self.project_id)


def _first_error(e: PydanticValidationError) -> str:
    err = e.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "body"
    return f"{where}: {err['msg']}"


@dataclass(frozen=True, slots=True)
class Message:
    role: str
    template: str


@dataclass(frozen=True, slots=True)
class PromptSpec:
    """One prompt of a bundle: exactly one of ``template`` or ``messages``."""

    template: str | None
    messages: tuple[Message, ...] | None
    variables: tuple[str, ...]
    metadata: Mapping[str, Any]

    @property
    def kind(self) -> Literal["text", "chat"]:
        return "text" if self.template is not None else "chat"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"variables": list(self.variables), "metadata": dict(self.metadata)}
        if self.template is not None:
            out["template"] = self.template
        else:
            assert self.messages is not None
            out["messages"] = [{"role": m.role, "template": m.template} for m in self.messages]
        return out


@dataclass(frozen=True, slots=True)
class Bundle:
    """A verified, parsed bundle. ``content_sha256`` is the hash of the bytes it came from."""

    version: str
    project_id: str
    prompt_set_id: str
    created_at: str
    prompts: Mapping[str, PromptSpec]
    content_sha256: str


_EMPTY_METADATA: Mapping[str, Any] = MappingProxyType({})


def parse_bundle(data: bytes, *, content_sha256: str) -> Bundle:
    """Parse and structurally validate plaintext bundle bytes.

    Variable lists are taken from the (hash-verified) bundle; templates are compiled lazily on
    first render, so loading 10,000 prompts costs a JSON parse and one loop.

    Raises:
        FormatError: if the bundle is malformed, naming the first offending prompt id.
    """
    doc = parse_json_object(data, "bundle")
    if doc.get("type") != BUNDLE_TYPE:
        raise FormatError(f"bundle type must be {BUNDLE_TYPE!r}")
    header = {}
    for name in ("version", "project_id", "prompt_set_id", "created_at"):
        value = doc.get(name)
        if not isinstance(value, str):
            raise FormatError(f"bundle field {name!r} must be a string")
        header[name] = value
    if not SEMVER_RE.match(header["version"]):
        raise FormatError(f"bundle version {header['version'][:64]!r} is not semver")
    parse_timestamp(header["created_at"])
    snapshot = doc.get("snapshot")
    if not isinstance(snapshot, dict):
        raise FormatError("bundle snapshot must be an object")
    prompts = {prompt_id: _parse_prompt(prompt_id, raw) for prompt_id, raw in snapshot.items()}
    return Bundle(prompts=prompts, content_sha256=content_sha256, **header)


def _parse_prompt(prompt_id: str, raw: object) -> PromptSpec:
    # Runs once per prompt at every load (10,000 prompts from the disk cache): kept lean.
    if len(prompt_id) > PROMPT_ID_MAX or PROMPT_ID_RE.match(prompt_id) is None:
        raise FormatError(f"bundle has an invalid prompt id {prompt_id[:140]!r}")
    if type(raw) is not dict:
        raise FormatError(f"prompt {prompt_id!r} is not an object")
    template = raw.get("template")
    messages = raw.get("messages")
    parsed_messages = None
    if messages is None:
        if type(template) is not str:
            if template is None:
                raise FormatError(
                    f"prompt {prompt_id!r} must have exactly one of template or messages"
                )
            raise FormatError(f"prompt {prompt_id!r} template must be a string")
    elif template is not None:
        raise FormatError(f"prompt {prompt_id!r} must have exactly one of template or messages")
    else:
        parsed_messages = _parse_messages(prompt_id, messages)
    variables = raw.get("variables", [])
    try:  # sys.intern refuses anything but str
        names = tuple(map(sys.intern, variables)) if type(variables) is list else None
    except TypeError:
        names = None
    if names is None:
        raise FormatError(f"prompt {prompt_id!r} variables must be a list of strings")
    metadata = raw.get("metadata", _EMPTY_METADATA)
    if type(metadata) is not dict and metadata is not _EMPTY_METADATA:
        raise FormatError(f"prompt {prompt_id!r} metadata must be an object")
    return PromptSpec(
        template=template,
        messages=parsed_messages,
        variables=names,
        metadata=metadata or _EMPTY_METADATA,
    )


def _parse_messages(prompt_id: str, messages: object) -> tuple[Message, ...]:
    if not isinstance(messages, list) or not messages:
        raise FormatError(f"prompt {prompt_id!r} messages must be a non-empty list")
    out = []
    for entry in messages:
        if not isinstance(entry, dict):
            raise FormatError(f"prompt {prompt_id!r} has a message that is not an object")
        role, text = entry.get("role"), entry.get("template")
        if role not in ROLES:
            raise FormatError(
                f"prompt {prompt_id!r} has a message with invalid role {repr(role)[:40]}"
            )
        if not isinstance(text, str):
            raise FormatError(f"prompt {prompt_id!r} has a message without a template string")
        out.append(Message(role=sys.intern(role), template=text))
    return tuple(out)
