"""What ``anvil-publish`` prints: one JSON object with ``--json``, else lines for people.

>>> from publisher._cli_output import echo_json
>>> echo_json({"sequence": 3})
{
  "sequence": 3
}
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import click

from anvil_client.wire import Release
from publisher._gc import GcReport
from publisher._inspect import InspectedRelease, Inspection
from publisher._results import HistoryEntry, PublishResult

__all__ = ["echo_json", "echo_result", "gc_lines", "history_lines", "inspection_lines"]


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False))


def _listing(releases: Sequence[Release]) -> str:
    return ", ".join(f"{r.name or r.prompt_set_id} {r.version}" for r in releases)


def echo_result(result: PublishResult, as_json: bool, headline: str) -> None:
    if as_json:
        echo_json(result.to_json())
        return
    encodings = {r.object.encoding for r in result.pointer.all_releases()}
    if encodings == {"jwe"}:
        count = len(result.recipients)
        sealed = f"encrypted for {count} recipient{'s' * (count != 1)}" if count else "encrypted"
    else:
        sealed = "UNENCRYPTED" if encodings == {"json"} else "partly UNENCRYPTED"
    reused = ", reused" if result.object_path and result.reused_object else ""
    rollout = f", rollout {result.rollout_percent}%" if result.rollout_percent is not None else ""
    click.echo(f"{headline} as sequence {result.sequence} ({sealed}{rollout}{reused})")
    if result.object_path is not None:
        click.echo(f"  content_sha256 {result.content_sha256}")
        click.echo(f"  object         {result.object_path} ({result.object_size} bytes)")
    if result.expires_at:
        click.echo(f"  expires        {result.expires_at}")
    click.echo(f"  changes        {'; '.join(result.changes) or 'none'}")
    click.echo(f"  serves         {_listing(result.releases)}")
    if result.pointer.rollout is not None:
        click.echo(f"  others serve   {_listing(result.pointer.rollout.previous)}")


def history_lines(channel: str, entries: Sequence[HistoryEntry]) -> list[str]:
    """The ``history`` table: one line per sequence, one indented line per entry it served."""
    if not entries:
        return [f"channel {channel} has no history"]
    lines = [f"{'SEQ':>6}  {'PUBLISHED':20}  {'CHECK':10}  NOTE"]
    for entry in entries:
        pointer = entry.pointer
        check = {True: "verified", False: "INVALID", None: "unchecked"}[entry.verified]
        note = entry.error or ""
        if pointer is not None and pointer.rollout is not None:
            note = f"rollout {pointer.rollout.percent}% {note}".strip()
        published = "?" if pointer is None else pointer.published_at
        lines.append(f"{entry.sequence:>6}  {published:20}  {check:10}  {note}".rstrip())
        for release in entry.releases:
            plain = "  unencrypted" if release.object.encoding == "json" else ""
            lines.append(
                f"{'':8}{release.name or '-'}  {release.version}  "
                f"{release.content_sha256[:12]}  (set {release.prompt_set_id}){plain}"
            )
    return lines


def _entry_lines(entry: InspectedRelease) -> list[str]:
    lines = [
        f"  {entry.name or entry.prompt_set_id} {entry.version} (prompt set {entry.prompt_set_id})",
        f"    content_sha256 {entry.content_sha256}",
        f"    object         {entry.object_path} ({entry.object_size} bytes, "
        f"{entry.encoding}, sha256 verified)",
    ]
    if entry.recipients is not None:
        lines.append(f"    recipients     {', '.join(entry.recipients)}")
    if entry.prompt_count is not None:
        lines.append(f"    prompts        {entry.prompt_count} (decrypted and hash-checked)")
    return lines


def inspection_lines(result: Inspection) -> list[str]:
    count = len(result.releases)
    lines = [
        f"channel {result.channel}: sequence {result.sequence}, {count} prompt "
        f"set{'s' * (count != 1)}",
        f"  signature      verified with key {result.keyid}",
        f"  published      {result.published_at}",
        f"  expires        {result.expires_at or 'never'}"
        + ("  (EXPIRED: clients reject this pointer)" if result.expired else ""),
    ]
    for entry in result.releases:
        lines += _entry_lines(entry)
    if result.previous is not None:
        lines.append(f"  rollout {result.rollout_percent}%; the other instances serve:")
        for entry in result.previous:
            lines += _entry_lines(entry)
    return lines


def gc_lines(report: GcReport, min_age: str) -> list[str]:
    count = len(report.unreferenced)
    objects = f"{count} bundle object{'s' * (count != 1)} ({report.reclaimable_bytes} bytes)"
    verb = "would delete" if report.dry_run else "deleted"
    lines = [
        f"{'dry run: ' if report.dry_run else ''}{verb} {objects} of project "
        f"{report.project_id} in {report.store_url}"
    ]
    for obj in report.unreferenced:
        lines.append(f"  {obj.path}  ({'?' if obj.size is None else obj.size} bytes)")
    channels = ", ".join(report.channels) or "none"
    lines.append(
        f"kept {len(report.kept)} named by the pointers of channels {channels} and their last "
        f"{report.keep_history} history entries"
    )
    if report.too_recent:
        lines.append(f"kept {len(report.too_recent)} unnamed object(s) younger than {min_age}")
    if report.ignored:
        lines.append(f"ignored {len(report.ignored)} key(s) that are not bundle objects")
    if report.dry_run and report.unreferenced:
        lines.append("run again with --delete to delete them")
    return lines
