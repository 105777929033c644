"""LIVE instances pages: who runs what, and how a publication is being picked up.

    GET  /projects/<id>/instances                                    (viewers and up)
    GET  /projects/<id>/channels/<channel>/publications/<n>/status.json
    POST /projects/<id>/instances/<instance_id>/forget               (owners; stale ones only)

The publish status page itself is ``distribution.publish_status`` (it renders
``distribution/publish_status.html``); this blueprint gives that template its data through the
``publication_status`` template global and serves the same data as JSON for the page's
2-second refresh (``static/live-status.js``).
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from datetime import datetime, timedelta
from typing import Any

from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)
from flask.typing import ResponseReturnValue
from markupsafe import Markup
from sqlalchemy import func, select

from anvil_client.errors import AnvilError
from anvil_client.wire import Pointer, TrustedKey, key_id, verify_envelope
from forge_app.audit import ACTION_LABELS, record_event
from forge_app.authz import require_project_role
from forge_app.extensions import db
from forge_app.live_instances import (
    DEFAULT_STALE_SECONDS,
    InstanceView,
    ReleaseTarget,
    describe_instances,
    publication_state,
    summarise,
)
from forge_app.models import Project, Role, utcnow
from forge_app.models.distribution import AccessToken, Channel, Publication
from forge_app.models.instances import LiveInstance
from forge_app.presentation import ago

__all__ = ["bp", "publication_status", "stale_after"]

log = logging.getLogger("forge.instances")

bp = Blueprint("instances", __name__)

ACTION_LABELS.setdefault("instance.forget", "forgot LIVE instance")

_MAX_POINTER = 64 * 1024


def stale_after() -> timedelta:
    """``FORGE_INSTANCE_STALE_SECONDS`` (app config, else environment; default 15 minutes)."""
    raw = current_app.config.get("FORGE_INSTANCE_STALE_SECONDS")
    if raw is None:
        raw = os.environ.get("FORGE_INSTANCE_STALE_SECONDS")
    if raw is None or raw == "":
        return timedelta(seconds=DEFAULT_STALE_SECONDS)
    try:
        seconds = float(raw)
        if seconds <= 0:
            raise ValueError(raw)
    except (TypeError, ValueError):
        log.warning("FORGE_INSTANCE_STALE_SECONDS=%r is not a positive number; using 900", raw)
        return timedelta(seconds=DEFAULT_STALE_SECONDS)
    return timedelta(seconds=seconds)


# --- which release each channel tells its instances to serve -------------------------------


class _HistoryCache:
    """Verified history pointers by (store, project, channel, sequence): they never change."""

    def __init__(self, size: int = 512) -> None:
        self._items: OrderedDict[tuple[str, str, str, int], Pointer] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def get(self, key: tuple[str, str, str, int]) -> Pointer | None:
        with self._lock:
            found = self._items.get(key)
            if found is not None:
                self._items.move_to_end(key)
            return found

    def put(self, key: tuple[str, str, str, int], pointer: Pointer) -> None:
        with self._lock:
            self._items[key] = pointer
            while len(self._items) > self._size:
                self._items.popitem(last=False)


_history = _HistoryCache()


def _history_pointer(project: Project, channel: str, sequence: int) -> Pointer | None:
    """The signed history copy of ``sequence``, verified with the FORGE's key (None if it
    cannot be read or verified)."""
    from forge_app.services.publishing import forge_signing_key, forge_store

    store_url = str(current_app.config["FORGE_STORE_URL"])
    cache_key = (store_url, str(project.id), channel, sequence)
    cached = _history.get(cache_key)
    if cached is not None:
        return cached
    path = f"projects/{project.id}/channels/{channel}/history/{sequence:012d}.json"
    try:
        public = forge_signing_key().public_key()
        store = forge_store()
        try:
            data = store.get(path, max_size=_MAX_POINTER).data
        finally:
            store.close()
        pointer = Pointer.parse(verify_envelope(data, [TrustedKey(key_id(public), public)]))
    except AnvilError as e:
        log.warning("cannot read history entry %s: %s", path, e)
        return None
    if (
        pointer.sequence != sequence
        or pointer.channel != channel
        or pointer.project_id != str(project.id)
    ):
        log.warning("history entry %s holds another pointer", path)
        return None
    _history.put(cache_key, pointer)
    return pointer


def target_of_pointer(pointer: Pointer) -> ReleaseTarget:
    rollout = pointer.rollout
    return ReleaseTarget(
        channel=pointer.channel,
        sequence=pointer.sequence,
        version=pointer.release.version,
        content_sha256=pointer.release.content_sha256,
        rollout_percent=rollout.percent if rollout is not None else None,
        previous_version=rollout.previous.version if rollout is not None else None,
        previous_content_sha256=rollout.previous.content_sha256 if rollout is not None else None,
    )


def target_of_publication(
    project: Project, channel: str, publication: Publication
) -> ReleaseTarget:
    """What ``publication`` told instances to serve. A rollout's previous release comes from
    the signed history copy (else from the FORGE's own records of earlier publications)."""
    if publication.rollout_percent is not None:
        pointer = _history_pointer(project, channel, publication.sequence)
        if pointer is not None:
            return target_of_pointer(pointer)
    previous: Publication | None = None
    if publication.rollout_percent is not None:
        previous = db.session.scalar(
            select(Publication)
            .where(
                Publication.channel_id == publication.channel_id,
                Publication.sequence < publication.sequence,
                Publication.rollout_percent.is_(None),
            )
            .order_by(Publication.sequence.desc())
            .limit(1)
        )
    return ReleaseTarget(
        channel=channel,
        sequence=publication.sequence,
        version=publication.version,
        content_sha256=publication.content_sha256,
        rollout_percent=publication.rollout_percent,
        previous_version=previous.version if previous else None,
        previous_content_sha256=previous.content_sha256 if previous else None,
    )


def _latest_publications(project: Project) -> dict[str, Publication]:
    """The newest Publication of each of the project's channels, by channel name."""
    newest = (
        select(Publication.channel_id, func.max(Publication.sequence).label("sequence"))
        .where(Publication.project_id == project.id)
        .group_by(Publication.channel_id)
        .subquery()
    )
    rows = db.session.execute(
        select(Channel.name, Publication)
        .join(Publication, Publication.channel_id == Channel.id)
        .join(
            newest,
            (newest.c.channel_id == Publication.channel_id)
            & (newest.c.sequence == Publication.sequence),
        )
        .where(Channel.project_id == project.id)
    ).all()
    return {row[0]: row[1] for row in rows}


def channel_targets(
    project: Project, channels: set[str]
) -> tuple[dict[str, ReleaseTarget], list[str]]:
    """The current release of each channel (from the store's signed pointer, else the FORGE's
    records), and one sentence per channel whose store pointer could not be read."""
    from forge_app.services.publishing import PublishError, current_release, get_channel

    targets: dict[str, ReleaseTarget] = {}
    problems: list[str] = []
    latest = _latest_publications(project)
    for name in sorted(channels):
        channel = get_channel(project, name)
        pointer: Pointer | None = None
        if channel is not None:
            try:
                pointer = current_release(channel)
            except PublishError as e:
                problems.append(f"Channel {name}: {e}")
        if pointer is not None:
            targets[name] = target_of_pointer(pointer)
        elif name in latest:
            targets[name] = target_of_publication(project, name, latest[name])
    return targets, problems


def _revoked_tokens(project: Project) -> set[str]:
    return set(
        db.session.scalars(
            select(AccessToken.token_id).where(
                AccessToken.project_id == project.id, AccessToken.revoked_at.is_not(None)
            )
        )
    )


def _token_names(project: Project) -> dict[str, str]:
    query = select(AccessToken.token_id, AccessToken.name).where(
        AccessToken.project_id == project.id
    )
    return {row[0]: row[1] for row in db.session.execute(query)}


# --- the instances page ----------------------------------------------------------------------


@bp.get("/projects/<uuid:project_id>/instances")
@require_project_role(Role.VIEWER)
def index(project: Project) -> ResponseReturnValue:
    """Every instance that ever reported, grouped by channel, problems highlighted."""
    rows = list(
        db.session.scalars(
            select(LiveInstance)
            .where(LiveInstance.project_id == project.id)
            .order_by(LiveInstance.channel, LiveInstance.last_seen_at.desc())
        )
    )
    channels = {row.channel for row in rows}
    targets, problems = channel_targets(project, channels)
    views = describe_instances(
        rows, targets=targets, revoked_tokens=_revoked_tokens(project), stale_after=stale_after()
    )
    selected = request.args.get("channel") or None
    attention = request.args.get("show") == "attention"
    shown = [
        v
        for v in views
        if (selected is None or v.instance.channel == selected) and (not attention or v.problems)
    ]
    groups: dict[str, list[InstanceView]] = {}
    for view in shown:
        groups.setdefault(view.instance.channel, []).append(view)
    for group in groups.values():
        # Problems first, then the most recently seen.
        group.sort(key=lambda v: (not v.problems, -v.instance.last_seen_at.timestamp()))
    counts = {
        "total": len(views),
        "stale": sum(v.stale for v in views),
        "drift": sum(v.drift for v in views),
        "revoked": sum(v.revoked for v in views),
        "error": sum(bool(v.instance.last_error) for v in views),
    }
    return render_template(
        "instances/index.html",
        project=project,
        groups=groups,
        targets=targets,
        problems=problems,
        counts=counts,
        channels=sorted(channels),
        selected=selected,
        attention=attention,
        token_names=_token_names(project),
        stale_label=_duration(stale_after()),
        nav="projects",
        tab="instances",
    )


@bp.post("/projects/<uuid:project_id>/instances/<instance_id>/forget")
@require_project_role(Role.VIEWER)
def forget(project: Project, instance_id: str) -> ResponseReturnValue:
    """Remove a stale instance from the list (owners only; audited). A live one comes back with
    its next heartbeat, so only silent ones can be forgotten."""
    if g.role < Role.OWNER:
        abort(403, "Only owners can forget LIVE instances.")
    instance = db.session.scalar(
        select(LiveInstance).where(
            LiveInstance.project_id == project.id, LiveInstance.instance_id == instance_id
        )
    )
    if instance is None:
        abort(404)
    if utcnow() - instance.last_seen_at <= stale_after():
        flash(
            f"Instance {instance.instance_id[:8]} reported recently; only stale instances can be "
            "forgotten.",
            "error",
        )
        return redirect(url_for("instances.index", project_id=project.id))
    record_event(
        "instance.forget",
        instance,
        project=project,
        details={
            "instance_id": instance.instance_id,
            "hostname": instance.hostname,
            "channel": instance.channel,
            "last_seen_at": instance.last_seen_at.isoformat(),
        },
    )
    db.session.delete(instance)
    db.session.commit()
    flash(f"Forgot instance {instance.instance_id[:8]} on {instance.hostname}.", "success")
    return redirect(url_for("instances.index", project_id=project.id))


def _duration(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds % 3600 == 0:
        return f"{seconds // 3600} h"
    if seconds % 60 == 0:
        return f"{seconds // 60} min"
    return f"{seconds} s"


@bp.app_template_global("channel_instances")
def channel_instances(project: Project, channel: Any) -> list[InstanceView]:
    """The instances of one channel judged against its current release, problems first (for
    the publish confirmation page: ``distribution/_instances_on_channel.html``)."""
    name = channel if isinstance(channel, str) else channel.name
    rows = list(
        db.session.scalars(
            select(LiveInstance)
            .where(LiveInstance.project_id == project.id, LiveInstance.channel == name)
            .order_by(LiveInstance.last_seen_at.desc())
        )
    )
    if not rows:
        return []
    targets, _ = channel_targets(project, {name})
    views = describe_instances(
        rows, targets=targets, revoked_tokens=_revoked_tokens(project), stale_after=stale_after()
    )
    return sorted(views, key=lambda v: (v.stale, not v.problems))


@bp.app_template_filter("ago_iso")
def _ago_iso(text: str | None) -> Markup:
    """The ``ago`` filter for an ISO 8601 text (the JSON form of a time)."""
    if not text:
        return ago(None)
    return ago(datetime.fromisoformat(text.replace("Z", "+00:00")))


# --- the publish status page's data -----------------------------------------------------------


def _find_publication(project: Project, channel: str, sequence: int) -> Publication | None:
    return db.session.scalar(
        select(Publication)
        .join(Channel, Channel.id == Publication.channel_id)
        .where(
            Channel.project_id == project.id,
            Channel.name == channel,
            Publication.sequence == sequence,
        )
    )


def publication_status(project: Project, channel: Any, publication: Publication) -> dict[str, Any]:
    """Each instance of the publication's channel: applied, pending, error or superseded.

    Also a template global, so ``distribution/publish_status.html`` renders the same data the
    JSON endpoint serves (the page works without JavaScript).
    """
    name = channel if isinstance(channel, str) else channel.name
    target = target_of_publication(project, name, publication)
    rows = list(
        db.session.scalars(
            select(LiveInstance)
            .where(LiveInstance.project_id == project.id, LiveInstance.channel == name)
            .order_by(LiveInstance.last_seen_at.desc())
        )
    )
    views = describe_instances(
        rows,
        targets={name: target},
        revoked_tokens=_revoked_tokens(project),
        stale_after=stale_after(),
    )
    latest = db.session.scalar(
        select(Publication.sequence)
        .where(Publication.channel_id == publication.channel_id)
        .order_by(Publication.sequence.desc())
        .limit(1)
    )
    instances = []
    states = []
    for view in views:
        state, note = publication_state(view, target)
        states.append(state)
        item = view.to_json()
        item.update(
            state=state,
            note=note,
            expected_version=target.expected_for(view.instance.instance_id)[0],
        )
        instances.append(item)
    order = {"error": 0, "pending": 1, "superseded": 2, "applied": 3}
    instances.sort(key=lambda i: (i["stale"], order[i["state"]]))
    return {
        "project_id": str(project.id),
        "channel": name,
        "publication": {
            "sequence": publication.sequence,
            "version": publication.version,
            "content_sha256": publication.content_sha256,
            "kind": publication.kind,
            "rollout_percent": publication.rollout_percent,
            "previous_version": target.previous_version,
            "published_at": publication.published_at.isoformat().replace("+00:00", "Z"),
            "current": latest == publication.sequence,
            "latest_sequence": latest,
        },
        "summary": summarise(states),
        "instances": instances,
        "generated_at": utcnow().isoformat().replace("+00:00", "Z"),
    }


@bp.get("/projects/<uuid:project_id>/channels/<channel>/publications/<int:sequence>/status.json")
@require_project_role(Role.VIEWER)
def publication_status_json(project: Project, channel: str, sequence: int) -> ResponseReturnValue:
    publication = _find_publication(project, channel, sequence)
    if publication is None:
        abort(404, f"Channel {channel[:32]} has no publication {sequence}.")
    response = jsonify(publication_status(project, channel, publication))
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.app_template_global("publication_status")
def _publication_status_global(
    project: Project, channel: Any, publication: Publication
) -> dict[str, Any]:
    return publication_status(project, channel, publication)
