"""The REST API's request and response models: they validate every request body and every
response, and the OpenAPI document is generated from them (never written by hand).

Peering reads remote FORGEs' answers with these very models, so a remote answer is checked
against the same schema this FORGE publishes.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "ApproveRequest",
    "Channel",
    "ChannelList",
    "ChannelRelease",
    "ErrorBody",
    "ErrorResponse",
    "Message",
    "Org",
    "OrgList",
    "ProjectList",
    "ProjectSummary",
    "Prompt",
    "PromptCreate",
    "PromptList",
    "PromptSet",
    "PromptSetList",
    "PromptUpdate",
    "Publication",
    "PublishRequest",
    "RequestChangesRequest",
    "RollbackRequest",
    "SubmitRequest",
    "Version",
    "VersionDetail",
    "VersionList",
]

#: The largest integer every database column here holds (32-bit signed).
_INT_MAX = 2**31 - 1

Status = Literal["LIVE", "REVIEW", "LOCKED"]
Role = Literal["viewer", "editor", "reviewer", "owner"]


class _Response(BaseModel):
    # Extra fields are allowed so a newer FORGE can add fields without breaking its peers.
    model_config = ConfigDict(extra="allow")


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorBody(_Response):
    code: str = Field(description="A stable, machine-readable code such as not_found.")
    message: str = Field(description="One sentence for a person.")
    details: Any = Field(default=None, description="What exactly was wrong, when known.")


class ErrorResponse(_Response):
    """Every error answer: ``{"error": {"code", "message", "details"}}``."""

    error: ErrorBody


class _Page(_Response):
    next: str | None = Field(
        default=None, description="URL of the next page (also in the Link header), or null."
    )


class Org(_Response):
    slug: str
    name: str
    role: Role = Field(description="The token user's role in this organisation.")


class OrgList(_Page):
    items: list[Org]


class ProjectSummary(_Response):
    id: uuid.UUID
    org: str = Field(description="The organisation's slug.")
    org_name: str
    name: str
    description: str
    set_count: int
    prompt_count: int = Field(description="Prompts in the live drafts of all its sets.")
    last_updated: datetime | None = Field(description="The last change to any of its sets.")


class ProjectList(_Page):
    items: list[ProjectSummary]


class PromptSet(_Response):
    id: uuid.UUID
    project_id: uuid.UUID
    name: str
    description: str
    status: Status
    revision: int = Field(description="Grows with every change; send it back to transitions.")
    current_version: str | None = Field(description="The latest released (LOCKED) version.")
    pending_version: str | None = Field(description="The version under review, if any.")
    prompt_count: int
    updated_at: datetime


class PromptSetList(_Page):
    items: list[PromptSet]


class Version(_Response):
    version: str
    content_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    prompt_count: int
    changelog: str
    created_at: datetime
    prerelease: bool


class VersionList(_Page):
    items: list[Version]


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant"]
    template: str = Field(max_length=256 * 1024)


class PromptEntry(_Response):
    """A prompt in prompt-file shape: exactly one of ``template`` or ``messages``."""

    template: str | None = None
    messages: list[Message] | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class VersionDetail(Version):
    prompt_set_id: uuid.UUID
    bundle: str = Field(
        description="The exact bundle bytes (UTF-8 text) whose SHA-256 is content_sha256."
    )
    prompts: dict[str, PromptEntry]


class Prompt(PromptEntry):
    key: str
    kind: Literal["text", "chat"]
    variables: list[str]
    revision: int = Field(description="Send it back when updating (optimistic concurrency).")
    updated_at: datetime


class PromptList(_Page):
    items: list[Prompt]


class ChannelRelease(_Response):
    prompt_set_id: str
    name: str | None = None
    version: str
    content_sha256: str


class Channel(_Response):
    name: str
    policy: Literal["locked", "review", "any"]
    accepts: list[Status]
    sequence: int | None = Field(description="The last pointer the FORGE wrote, if any.")
    published_at: datetime | None
    serves: list[ChannelRelease] = Field(description="What the channel serves, one per set.")


class ChannelList(_Page):
    items: list[Channel]


class Publication(_Response):
    channel: str
    sequence: int
    kind: str
    version: str | None
    summary: str
    published_at: datetime
    serves: list[ChannelRelease]


_Template = Field(default=None, max_length=256 * 1024)


class PromptCreate(_Request):
    key: str = Field(max_length=128, description="The prompt id, like welcome.message.")
    template: str | None = _Template
    messages: list[Message] | None = Field(default=None, max_length=100)
    metadata: dict[str, Any] = Field(default_factory=dict)


class PromptUpdate(_Request):
    revision: int = Field(
        ge=1, le=_INT_MAX, description="The revision you read; a newer one is a 409."
    )
    template: str | None = _Template
    messages: list[Message] | None = Field(default=None, max_length=100)
    metadata: dict[str, Any] = Field(default_factory=dict)


class SubmitRequest(_Request):
    bump: Literal["patch", "minor", "major"]
    changelog: str = Field(max_length=5000)
    revision: int = Field(ge=1, le=_INT_MAX, description="The prompt set revision you looked at.")


class ApproveRequest(_Request):
    revision: int = Field(ge=1, le=_INT_MAX, description="The prompt set revision you reviewed.")


class RequestChangesRequest(_Request):
    comment: str = Field(max_length=5000)
    revision: int = Field(ge=1, le=_INT_MAX)


class PublishRequest(_Request):
    prompt_set_id: uuid.UUID
    version: str = Field(max_length=256)
    rollout_percent: int | None = Field(default=None, ge=1, le=100)
    confirm_compatibility: bool = Field(
        default=False,
        description=(
            "Publish despite caller-compatibility warnings (owners only; recorded in the audit "
            "log). Without it a publish with warnings is refused with 409 and the warnings."
        ),
    )


class RollbackRequest(_Request):
    sequence: int = Field(ge=1, le=_INT_MAX, description="The history entry to serve again.")
