"""LIVE instances pages: who runs what, and how a publication is being picked up.

    GET  /projects/<id>/instances[?channel=…&show=attention|archived&page=N]  (viewers and up)
    GET  /projects/<id>/channels/<channel>/publications/<n>/status.json
    POST /projects/<id>/instances/<instance_id>/forget               (owners; stale ones only)
    GET  /projects/<id>/instances/forget?scope=archived|silent       (owners: confirmation)
    POST /projects/<id>/instances/forget                             (owners: bulk forget)

The publish status page itself is ``distribution.publish_status`` (it renders
``distribution/publish_status.html``); this blueprint gives that template its data through the
``publication_status`` template global and serves the same data as JSON for the page's
2-second refresh (``static/live-status.js``). Every page here costs the same few SQL queries
however many instances report (the page shows ``FORGE_INSTANCES_PER_PAGE``, default 100).
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from datetime import datetime, timedelta
from typing import Any, Literal

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
from anvil_client.wire import (
    POINTER_MAX_SIZE,
    Pointer,
    TrustedKey,
    history_key,
    key_id,
    verify_pointer,
)
from forge_app.audit import record_event
from forge_app.authz import require_project_role, signed_in_user
from forge_app.extensions import db
from forge_app.models import Project, PromptSet, Role, utcnow
from forge_app.models.distribution import AccessToken, Channel, Publication
from forge_app.models.instances import LiveInstance
from forge_app.presentation import ago
from forge_app.services.heartbeats import number_setting
from forge_app.services.instances import (
    DEFAULT_ARCHIVE_DAYS,
    DEFAULT_STALE_SECONDS,
    ChannelTarget,
    InstanceView,
    archive_silent_instances,
    describe_instances,
    forget_silent_instances,
    publication_state,
    silent_condition,
    summarise,
)

__all__ = ["archive_after", "bp", "publication_status", "stale_after"]

log = logging.getLogger("forge.instances")

bp = Blueprint("instances", __name__)


DEFAULT_PER_PAGE = 100
#: The publish status page and the publish confirmation list this many instances at most
#: (problems first); their counts cover every instance.
STATUS_ROWS_MAX = 500
SIDE_ROWS_MAX = 50
#: The channel filter offers at most this many of the channel names instances report.
CHANNEL_CHOICES_MAX = 200


def _number(name: str, default: float) -> float:
    try:
        return number_setting(current_app.config, os.environ, name, default)
    except ValueError as e:
        log.warning("%s; using %g", e, default)
        return default


def stale_after() -> timedelta:
    """``FORGE_INSTANCE_STALE_SECONDS`` (app config, else environment; default 15 minutes)."""
    return timedelta(seconds=_number("FORGE_INSTANCE_STALE_SECONDS", DEFAULT_STALE_SECONDS))


def archive_after() -> timedelta:
    """``FORGE_INSTANCE_ARCHIVE_DAYS`` (app config, else environment; default 30 days)."""
    return timedelta(days=_number("FORGE_INSTANCE_ARCHIVE_DAYS", DEFAULT_ARCHIVE_DAYS))


def _per_page() -> int:
    return max(1, int(_number("FORGE_INSTANCES_PER_PAGE", DEFAULT_PER_PAGE)))


# --- which entry lists each channel tells its instances to serve ---------------------------


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
    """The signed history copy of ``sequence``, verified with the FORGE's key by
    :func:`anvil_client.wire.verify_pointer` (None if it cannot be read or verified)."""
    from forge_app.services.publishing import forge_signing_key, forge_store

    store_url = str(current_app.config["FORGE_STORE_URL"])
    cache_key = (store_url, str(project.id), channel, sequence)
    cached = _history.get(cache_key)
    if cached is not None:
        return cached
    path = history_key(str(project.id), channel, sequence)
    try:
        public = forge_signing_key().public_key()
        store = forge_store()
        try:
            data = store.get(path, max_size=POINTER_MAX_SIZE).data
        finally:
            store.close()
        pointer = verify_pointer(
            data,
            [TrustedKey(key_id(public), public)],
            project_id=str(project.id),
            channel=channel,
        )
    except AnvilError as e:
        log.warning("cannot read history entry %s: %s", path, e)
        return None
    if pointer.sequence != sequence:
        log.warning("history entry %s holds another pointer", path)
        return None
    _history.put(cache_key, pointer)
    return pointer


def target_of_publication(
    project: Project, channel: str, publication: Publication
) -> ChannelTarget:
    """What ``publication`` told instances to serve: the FORGE's record of the whole list
    (and of a rollout's previous list); when the record lacks the previous list, the signed
    history copy."""
    previous = publication.previous_releases
    if publication.rollout_percent is not None and previous is None:
        pointer = _history_pointer(project, channel, publication.sequence)
        if pointer is not None:
            return ChannelTarget.from_pointer(pointer)
    return ChannelTarget.from_records(
        channel,
        publication.sequence,
        publication.releases,
        rollout_percent=publication.rollout_percent,
        previous=previous if publication.rollout_percent is not None else None,
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
) -> tuple[dict[str, ChannelTarget], list[str]]:
    """The current entry lists of each channel (from the store's signed pointer, else the
    FORGE's records), and one sentence per channel whose store pointer could not be read."""
    from forge_app.errors import ForgeError
    from forge_app.services.publishing import current_release

    targets: dict[str, ChannelTarget] = {}
    problems: list[str] = []
    if not channels:
        return targets, problems
    # All of the project's channels (a few, made by owners), not an IN list of the names
    # instances report (any number of made-up ones).
    known = {
        channel.name: channel
        for channel in db.session.scalars(select(Channel).where(Channel.project_id == project.id))
        if channel.name in channels
    }
    latest = _latest_publications(project) if known else {}
    for name in sorted(known):
        pointer: Pointer | None = None
        try:
            pointer = current_release(known[name])
        except ForgeError as e:
            problems.append(f"Channel {name}: {e}")
        if pointer is not None:
            targets[name] = ChannelTarget.from_pointer(pointer)
        elif name in latest:
            targets[name] = target_of_publication(project, name, latest[name])
    return targets, problems


def _tokens(project: Project) -> tuple[set[str], dict[str, str]]:
    """The project's revoked token ids, and every token's name by id (one query)."""
    revoked: set[str] = set()
    names: dict[str, str] = {}
    query = select(AccessToken.token_id, AccessToken.name, AccessToken.revoked_at).where(
        AccessToken.project_id == project.id
    )
    for token_id, name, revoked_at in db.session.execute(query):
        names[token_id] = name
        if revoked_at is not None:
            revoked.add(token_id)
    return revoked, names


def _set_names(project: Project) -> dict[str, str]:
    """The FORGE's prompt set names by the pointer's ``prompt_set_id`` (the UUID as text)."""
    query = select(PromptSet.id, PromptSet.name).where(PromptSet.project_id == project.id)
    return {str(row[0]): row[1] for row in db.session.execute(query)}


def _judge(
    project: Project, rows: list[LiveInstance], targets: dict[str, ChannelTarget]
) -> tuple[list[InstanceView], dict[str, str]]:
    revoked, token_names = _tokens(project)
    views = describe_instances(
        rows,
        targets=targets,
        revoked_tokens=revoked,
        stale_after=stale_after(),
        names=_set_names(project),
    )
    return views, token_names


def _rank(view: InstanceView) -> tuple[bool, bool, float]:
    """Problems first, silent ones after the live ones, then the most recently seen."""
    return (not view.problems, view.stale, -view.instance.last_seen_at.timestamp())


# --- the instances page ----------------------------------------------------------------------


@bp.get("/projects/<uuid:project_id>/instances")
@require_project_role(Role.VIEWER)
def index(project: Project) -> ResponseReturnValue:
    """Every instance that reported, by channel, problems first; archived ones on request."""
    if archive_silent_instances(db.session, project, older_than=archive_after()):
        db.session.commit()
    show = request.args.get("show") or ""
    archived = show == "archived"
    attention = show == "attention"
    selected = request.args.get("channel") or None
    page = request.args.get("page", "1")
    page_number = int(page) if page.isdigit() and 0 < len(page) < 7 else 1

    query = select(LiveInstance).where(
        LiveInstance.project_id == project.id,
        LiveInstance.archived_at.is_not(None) if archived else LiveInstance.archived_at.is_(None),
    )
    rows = list(db.session.scalars(query))
    archived_count = (
        len(rows)
        if archived
        else int(
            db.session.scalar(
                select(func.count(LiveInstance.id)).where(
                    LiveInstance.project_id == project.id, LiveInstance.archived_at.is_not(None)
                )
            )
            or 0
        )
    )
    channels = {row.channel for row in rows}
    targets, problems = channel_targets(project, channels)
    views, token_names = _judge(project, rows, targets)
    counts = {
        "total": len(views),
        "stale": sum(v.stale for v in views),
        "drift": sum(v.drift for v in views),
        "revoked": sum(v.revoked for v in views),
        "error": sum(bool(v.instance.last_error) for v in views),
        "archived": archived_count,
    }
    shown = [
        v
        for v in views
        if (selected is None or v.instance.channel == selected) and (not attention or v.problems)
    ]
    shown.sort(key=lambda v: (v.instance.channel, *_rank(v)))
    per_page = _per_page()
    pages = max(1, -(-len(shown) // per_page))
    page_number = min(page_number, pages)
    groups: dict[str, list[InstanceView]] = {}
    for view in shown[(page_number - 1) * per_page : page_number * per_page]:
        groups.setdefault(view.instance.channel, []).append(view)
    return render_template(
        "instances/index.html",
        project=project,
        groups=groups,
        targets=targets,
        problems=problems,
        counts=counts,
        channels=sorted(channels)[:CHANNEL_CHOICES_MAX],
        selected=selected,
        show=show,
        attention=attention,
        archived=archived,
        page=page_number,
        pages=pages,
        shown_count=len(shown),
        token_names=token_names,
        stale_label=_duration(stale_after()),
        archive_days=_days(archive_after()),
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


def _scope(value: str | None) -> Literal["archived", "silent"]:
    if value == "archived":
        return "archived"
    if value in (None, "", "silent"):  # the bare URL offers the silent ones
        return "silent"
    abort(400, "Choose which instances to forget: archived or silent.")


@bp.route("/projects/<uuid:project_id>/instances/forget", methods=["GET", "POST"])
@require_project_role(Role.VIEWER)
def forget_bulk(project: Project) -> ResponseReturnValue:
    """Forget every archived (or every silent) instance at once: owners only, after a
    confirmation page, audited as one event with the count."""
    if g.role < Role.OWNER:
        abort(403, "Only owners can forget LIVE instances.")
    scope = _scope(request.values.get("scope"))
    if request.method == "GET":
        count = db.session.scalar(
            select(func.count(LiveInstance.id)).where(
                silent_condition(project, scope=scope, stale_after=stale_after())
            )
        )
        return render_template(
            "instances/forget.html",
            project=project,
            scope=scope,
            count=int(count or 0),
            stale_label=_duration(stale_after()),
            nav="projects",
            tab="instances",
        )
    if request.form.get("confirm") != "yes":
        flash("Nothing was forgotten: tick the confirmation box first.", "error")
        return redirect(url_for("instances.forget_bulk", project_id=project.id, scope=scope))
    count = forget_silent_instances(
        db.session, project, scope=scope, stale_after=stale_after(), actor=signed_in_user()
    )
    db.session.commit()
    what = "archived" if scope == "archived" else "silent"
    flash(
        f"Forgot {count} {what} instance{'' if count == 1 else 's'}."
        if count
        else f"There was no {what} instance to forget.",
        "success",
    )
    return redirect(url_for("instances.index", project_id=project.id))


def _duration(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds % 86400 == 0:
        return f"{seconds // 86400} d"
    if seconds % 3600 == 0:
        return f"{seconds // 3600} h"
    if seconds % 60 == 0:
        return f"{seconds // 60} min"
    return f"{seconds} s"


def _days(delta: timedelta) -> str:
    days = delta.total_seconds() / 86400
    return f"{days:g}"


@bp.app_template_global("channel_instances")
def channel_instances(project: Project, channel: Any) -> dict[str, Any]:
    """The instances of one channel judged against its current entry lists, problems first
    (for the publish confirmation page: ``distribution/_instances_on_channel.html``): at most
    ``SIDE_ROWS_MAX`` views and the total."""
    name = channel if isinstance(channel, str) else channel.name
    rows = list(
        db.session.scalars(
            select(LiveInstance).where(
                LiveInstance.project_id == project.id,
                LiveInstance.channel == name,
                LiveInstance.archived_at.is_(None),
            )
        )
    )
    if not rows:
        return {"views": [], "total": 0}
    targets, _ = channel_targets(project, {name})
    views, _ = _judge(project, rows, targets)
    views.sort(key=_rank)
    return {"views": views[:SIDE_ROWS_MAX], "total": len(views)}


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
    JSON endpoint serves (the page works without JavaScript). The counts cover every instance;
    the list holds at most ``STATUS_ROWS_MAX`` (errors and pending ones first).
    """
    name = channel if isinstance(channel, str) else channel.name
    target = target_of_publication(project, name, publication)
    rows = list(
        db.session.scalars(
            select(LiveInstance).where(
                LiveInstance.project_id == project.id,
                LiveInstance.channel == name,
                LiveInstance.archived_at.is_(None),
            )
        )
    )
    views, _ = _judge(project, rows, {name: target})
    latest = db.session.scalar(
        select(Publication.sequence)
        .where(Publication.channel_id == publication.channel_id)
        .order_by(Publication.sequence.desc())
        .limit(1)
    )
    instances = []
    states = []
    views.sort(key=lambda v: v.instance.last_seen_at, reverse=True)
    for view in views:
        state, note = publication_state(view, target)
        states.append(state)
        item = view.to_json()
        item.update(state=state, note=note)
        instances.append(item)
    order = {"error": 0, "pending": 1, "superseded": 2, "applied": 3}
    instances.sort(key=lambda i: (i["stale"], order[i["state"]]))  # stable: newest first
    names = views[0].names if views else target.names()
    return {
        "project_id": str(project.id),
        "channel": name,
        "publication": {
            "sequence": publication.sequence,
            "kind": publication.kind,
            "summary": publication.summary,
            "version": publication.version,
            "content_sha256": publication.content_sha256,
            "releases": [e.to_json(names) for e in target.releases],
            "previous": (
                None if target.previous is None else [e.to_json(names) for e in target.previous]
            ),
            "rollout_percent": publication.rollout_percent,
            "releases_label": ", ".join(e.label(names) for e in target.releases),
            "previous_version": (
                ", ".join(e.label(names) for e in target.previous)
                if target.previous is not None
                else None
            ),
            "published_at": publication.published_at.isoformat().replace("+00:00", "Z"),
            "current": latest == publication.sequence,
            "latest_sequence": latest,
        },
        "summary": summarise(states),
        "instances": instances[:STATUS_ROWS_MAX],
        "more": max(0, len(instances) - STATUS_ROWS_MAX),
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
