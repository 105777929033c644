"""REST API v1: a project's channels, publishing and rolling back (the channel's policy and
the user's roles apply, as on the publish pages)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import g
from pydantic import BaseModel

from forge_app.authz import View, load_prompt_set, require_project_role, signed_in_user
from forge_app.models import Project, Role
from forge_app.models.distribution import DEFAULT_CHANNELS, POLICIES, Channel
from forge_app.rest import _schemas as s
from forge_app.rest._projects import load_version
from forge_app.rest._registry import Resource, committed, found_or_api_404, read_body

__all__: list[str] = []


CHANNELS = Resource("channels", "/projects/<project_id>/channels")


def _serves(releases: list[dict[str, Any]]) -> list[s.ChannelRelease]:
    return [
        s.ChannelRelease(
            prompt_set_id=str(r.get("prompt_set_id", "")),
            name=r.get("name"),
            version=str(r.get("version", "")),
            content_sha256=str(r.get("content_sha256", "")),
        )
        for r in releases
    ]


def _channel_model(channel: Channel | None, name: str) -> s.Channel:
    from forge_app.services.publishing import latest_publication

    policy = channel.policy if channel is not None else DEFAULT_CHANNELS[name]
    publication = latest_publication(channel) if channel is not None else None
    return s.Channel(
        name=name,
        policy=policy,  # type: ignore[arg-type]
        accepts=list(POLICIES.get(policy, POLICIES["locked"])),  # type: ignore[arg-type]
        sequence=publication.sequence if publication else None,
        published_at=publication.published_at if publication else None,
        serves=_serves(publication.releases if publication else []),
    )


@CHANNELS.get("", s.ChannelList, "A project's channels and what each one serves")
@require_project_role(Role.VIEWER)
def list_channels(project: Project) -> s.ChannelList:
    """What each channel serves, as the FORGE last published it (one entry per prompt set)."""
    from forge_app.services.publishing import project_channels

    channels = {c.name: c for c in project_channels(project)}
    names = [*[n for n in DEFAULT_CHANNELS if n not in channels], *channels]
    order = list(DEFAULT_CHANNELS)
    names.sort(key=lambda n: (order.index(n) if n in order else len(order), n))
    return s.ChannelList(items=[_channel_model(channels.get(n), n) for n in names])


def _channel(project: Project, name: str) -> Channel:
    from forge_app.services import publishing

    found = publishing.get_channel(project, name)
    if found is None and name in DEFAULT_CHANNELS:
        publishing.ensure_default_channels(project)
        found = publishing.get_channel(project, name)
    return found_or_api_404(found, f"The project has no channel {name[:40]!r}.")


def _publication_model(publication: Any, channel: Channel) -> s.Publication:
    return s.Publication(
        channel=channel.name,
        sequence=publication.sequence,
        kind=publication.kind,
        version=publication.version,
        summary=publication.summary or "",
        published_at=publication.published_at,
        serves=_serves(publication.releases),
    )


def _channel_post(action: str, body: type[BaseModel], summary: str) -> Callable[[View], View]:
    """Declare a channel write answering the new publication (503 when the store is down).
    Any member may call it: the publishing service applies the channel's policy and roles."""
    declare = CHANNELS.post(
        f"/<channel>/{action}", s.Publication, summary, body=body, errors=(503,)
    )
    return lambda view: declare(require_project_role(Role.VIEWER)(view))


def _write_to_channel(
    project: Project, name: str, write: Callable[[Channel], Any]
) -> s.Publication:
    """Find the channel (a 404 comes before any body error), run ``write`` (it reads the body
    and calls the publishing service) and commit; the answer is the new publication."""
    found = _channel(project, name)
    return _publication_model(committed(lambda: write(found)), found)


@_channel_post(
    "publish",
    s.PublishRequest,
    "Publish a version to a channel (the channel's policy and roles apply)",
)
def publish(project: Project, channel: str) -> s.Publication:
    from forge_app.services import publishing

    def write(found: Channel) -> Any:
        body = read_body(s.PublishRequest)
        prompt_set = load_prompt_set(project, body.prompt_set_id)
        version = load_version(prompt_set, body.version)
        return publishing.publish_confirmed(
            prompt_set,
            version,
            found,
            user=signed_in_user(),
            role=g.role,
            rollout_percent=body.rollout_percent,
            compat_confirmed=body.confirm_compatibility,
        )

    return _write_to_channel(project, channel, write)


@_channel_post(
    "rollback", s.RollbackRequest, "Serve an earlier history entry again, as a new sequence"
)
def rollback(project: Project, channel: str) -> s.Publication:
    from forge_app.services import publishing

    def write(found: Channel) -> Any:
        body = read_body(s.RollbackRequest)
        return publishing.rollback_to(found, body.sequence, user=signed_in_user(), role=g.role)

    return _write_to_channel(project, channel, write)
