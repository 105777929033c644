"""Caller compatibility (issue 11 §4): do the running applications call the new prompts right?

    >>> w = CompatWarning("support.greeting", "missing", 3, ["checkout-service"],
    ...                   ["customer_name", "product"], ["tier"], "0.4.0")
    >>> w.sentence.endswith("0.4.0 also needs tier → MissingVariable.")
    True

From the variable names LIVE instances report (``caller_variables``, recorded by
:mod:`forge_app.usage`) and the variables each prompt of a version declares, list for each
prompt whose new version needs a variable some live instances do not pass who calls it how,
and the prompts live instances call that the new version no longer has. Only instances seen
within ``LIVE_WITHIN`` and not archived count.
"""

from __future__ import annotations

import json
import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select

from anvil_client.errors import AnvilError
from anvil_client.wire import parse_bundle
from forge_app.errors import ForgeError, Kind
from forge_app.extensions import db
from forge_app.models import PromptSetVersion, Role, utcnow
from forge_app.models.distribution import Channel
from forge_app.models.instances import LiveInstance
from forge_app.models.usage import CallerVariables
from forge_app.services.channels import latest_publication

__all__ = [
    "CompatRefused",
    "CompatWarning",
    "compat_warnings",
    "confirmed_warnings",
    "prompts_warnings",
    "publish_warnings",
    "version_variables",
]

LIVE_WITHIN = timedelta(days=1)


@dataclass(frozen=True)
class CompatWarning:
    """``kind`` ``missing``: ``instances`` call ``prompt_id`` passing ``passed`` but the new
    version also needs ``needs``; ``removed``: they call a prompt the new version lacks."""

    prompt_id: str
    kind: str
    instances: int
    hosts: list[str]
    passed: list[str]
    needs: list[str]
    version: str

    @property
    def sentence(self) -> str:
        who = f"{self.instances} instance{'' if self.instances == 1 else 's'}"
        if self.hosts:
            who += " of " + ", ".join(self.hosts[:3]) + (" …" if len(self.hosts) > 3 else "")
        if self.kind == "removed":
            return (
                f"{who} call {self.prompt_id}, which {self.version} no longer has → PromptNotFound."
            )
        return (
            f"{who} call {self.prompt_id} with {{{', '.join(self.passed)}}}; {self.version} "
            f"also needs {', '.join(self.needs)} → MissingVariable."
        )


def version_variables(version: PromptSetVersion) -> dict[str, set[str]]:
    """``{prompt_id: declared variables}`` of a stored version ({} if it does not parse)."""
    try:
        bundle = parse_bundle(version.bundle_bytes, content_sha256=version.content_sha256)
    except AnvilError:
        return {}
    return {pid: set(spec.variables) for pid, spec in bundle.prompts.items()}


def _callers(
    project_id: uuid.UUID, channel: str | None, prompt_ids: set[str] | None, now: datetime
) -> dict[str, list[tuple[str, list[list[str]]]]]:
    """``{prompt_id: [(hostname, variable sets), …]}`` of live instances."""
    query = (
        select(CallerVariables, LiveInstance.hostname)
        .join(
            LiveInstance,
            (LiveInstance.project_id == CallerVariables.project_id)
            & (LiveInstance.instance_id == CallerVariables.instance_id),
        )
        .where(
            CallerVariables.project_id == project_id,
            LiveInstance.archived_at.is_(None),
            LiveInstance.last_seen_at >= now - LIVE_WITHIN,
        )
    )
    if channel is not None:
        query = query.where(CallerVariables.channel == channel, LiveInstance.channel == channel)
    if prompt_ids is not None:
        query = query.where(CallerVariables.prompt_id.in_(sorted(prompt_ids)))
    found: dict[str, list[tuple[str, list[list[str]]]]] = defaultdict(list)
    for row, hostname in db.session.execute(query.order_by(CallerVariables.prompt_id)):
        try:
            sets = json.loads(row.variables_json or "[]")
        except ValueError:
            sets = []
        found[row.prompt_id].append(
            (
                hostname,
                [list(s) for s in sets if isinstance(s, list)] if isinstance(sets, list) else [],
            )
        )
    return found


def compat_warnings(
    version: PromptSetVersion,
    *,
    channel: str | None = None,
    previous: PromptSetVersion | None = None,
    now: datetime | None = None,
) -> list[CompatWarning]:
    """Warnings for serving ``version`` to the live instances (of ``channel``, or of every
    channel). ``previous``: the set's version served before, whose prompts the callers may
    still use (prompts of it the new version lacks are reported as removed)."""
    old = version_variables(previous) if previous is not None else {}
    return prompts_warnings(
        version.prompt_set.project_id,
        version_variables(version),
        version.version,
        channel=channel,
        previous=set(old),
        now=now,
    )


def prompts_warnings(
    project_id: uuid.UUID,
    new: dict[str, set[str]],
    label: str,
    *,
    channel: str | None = None,
    previous: set[str] | None = None,
    now: datetime | None = None,
) -> list[CompatWarning]:
    """Warnings for serving prompts ``new`` (``{prompt_id: variables}``, called ``label``)."""
    now = now or utcnow()
    removed = set(previous or ()) - set(new)
    callers = _callers(project_id, channel, set(new) | removed, now)
    warnings: list[CompatWarning] = []
    for prompt_id in sorted(callers):
        rows = callers[prompt_id]
        if prompt_id in removed:
            warnings.append(
                CompatWarning(
                    prompt_id, "removed", len(rows), sorted({h for h, _ in rows}), [], [], label
                )
            )
            continue
        needed = new.get(prompt_id)
        if not needed:
            continue
        by_passed: dict[tuple[str, ...], tuple[set[str], int]] = {}
        for hostname, sets in rows:
            for names in sets:
                if not needed - set(names):
                    continue
                key = tuple(sorted(names))
                hosts, count = by_passed.get(key, (set(), 0))
                hosts.add(hostname)
                by_passed[key] = (hosts, count + 1)
        for passed in sorted(by_passed):
            hosts, count = by_passed[passed]
            warnings.append(
                CompatWarning(
                    prompt_id,
                    "missing",
                    count,
                    sorted(hosts),
                    list(passed),
                    sorted(needed - set(passed)),
                    label,
                )
            )
    return warnings


def served_version(project_id: uuid.UUID, content_sha256: str | None) -> PromptSetVersion | None:
    """The FORGE's version with this content, if any."""
    if not content_sha256:
        return None
    return db.session.scalar(
        select(PromptSetVersion).where(PromptSetVersion.content_sha256 == content_sha256).limit(1)
    )


def publish_warnings(
    version: PromptSetVersion | None, channel: Channel | None = None
) -> list[CompatWarning]:
    """Warnings for publishing ``version`` (None: nothing to check) to ``channel`` (None: any
    channel's callers), the set's version the channel serves now being the previous one."""
    if version is None:
        return []
    if channel is None:
        return compat_warnings(version)
    latest = latest_publication(channel)
    set_id = str(version.prompt_set_id)
    entries = latest.releases if latest is not None else []
    entry = next((e for e in entries if e.get("prompt_set_id") == set_id), None)
    previous = None
    if entry is not None:
        previous = served_version(channel.project_id, str(entry.get("content_sha256") or ""))
    return compat_warnings(version, channel=channel.name, previous=previous)


class CompatRefused(ForgeError):
    """A publish refused for caller-compatibility warnings that no owner confirmed; the
    warnings' sentences are its problems."""


def confirmed_warnings(
    version: PromptSetVersion | None, channel: Channel, role: Role | None, confirmed: bool
) -> list[CompatWarning]:
    """The warnings a publish of ``version`` to ``channel`` goes ahead despite (to audit with
    it): publishing despite warnings needs an owner's explicit confirmation, wherever the
    publish comes from (the publish page, the REST API, a scheduled job).

    Raises:
        CompatRefused: (conflict, the warnings as its problems) when there are warnings and
            no confirmation; (forbidden) when someone below owner confirmed them.
    """
    warnings = publish_warnings(version, channel)
    if not warnings:
        return []
    problems = [w.sentence for w in warnings]
    if not confirmed:
        raise CompatRefused(
            "Live instances call prompts of this version in a way it does not support; an owner "
            "must confirm the compatibility warnings to publish.",
            kind=Kind.CONFLICT,
            problems=problems,
        )
    if role is None or role < Role.OWNER:
        raise CompatRefused(
            "Only an owner can confirm the compatibility warnings.",
            kind=Kind.FORBIDDEN,
            problems=problems,
        )
    return warnings
