"""Readable differences between two prompt sets: per prompt, per field, per line (difflib).

    >>> d = diff_prompt_sets({"a": {"template": "Hi\\nthere"}}, {"a": {"template": "Hi\\nyou"}})
    >>> [p.key for p in d.changed], d.changed[0].sections[0].rows[1].kind
    (['a'], 'del')

Both sides are prompt-file shaped mappings (``template`` | ``messages``, ``metadata``). Text
prompts have one section, ``template``; chat prompts one section per message; metadata is
compared as ``key: json`` lines.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["DiffRow", "PromptDiff", "Section", "SetDiff", "diff_prompt_sets"]

CONTEXT_LINES = 3
# Words, runs of spaces and single punctuation marks: a change is shown a whole word at a time.
_TOKEN_RE = re.compile(r"\w+|\s+|[^\w\s]", re.UNICODE)


@dataclass(frozen=True)
class DiffRow:
    """One line of a diff. ``kind``: ``ctx``, ``add``, ``del`` or ``skip`` (hidden equal lines).

    ``parts`` splits the text into ``(text, changed)`` runs for in-line highlighting.
    """

    kind: str
    old_no: int | None
    new_no: int | None
    parts: tuple[tuple[str, bool], ...]

    @property
    def text(self) -> str:
        return "".join(text for text, _ in self.parts)


@dataclass
class Section:
    label: str
    rows: list[DiffRow]
    added: int = 0
    removed: int = 0


@dataclass
class PromptDiff:
    key: str
    status: str  # "added", "removed" or "changed"
    sections: list[Section] = field(default_factory=list)

    @property
    def added(self) -> int:
        return sum(s.added for s in self.sections)

    @property
    def removed(self) -> int:
        return sum(s.removed for s in self.sections)


@dataclass
class SetDiff:
    prompts: list[PromptDiff]
    unchanged: int

    @property
    def added(self) -> list[PromptDiff]:
        return [p for p in self.prompts if p.status == "added"]

    @property
    def removed(self) -> list[PromptDiff]:
        return [p for p in self.prompts if p.status == "removed"]

    @property
    def changed(self) -> list[PromptDiff]:
        return [p for p in self.prompts if p.status == "changed"]

    @property
    def empty(self) -> bool:
        return not self.prompts


def diff_prompt_sets(
    old: Mapping[str, Mapping[str, Any]], new: Mapping[str, Mapping[str, Any]]
) -> SetDiff:
    """Every added, removed and changed prompt, ordered by id."""
    prompts: list[PromptDiff] = []
    unchanged = 0
    for key in sorted(set(old) | set(new)):
        before, after = old.get(key), new.get(key)
        if before is not None and after is not None and _same(before, after):
            unchanged += 1
            continue
        status = "added" if before is None else "removed" if after is None else "changed"
        prompts.append(PromptDiff(key, status, _sections(before, after)))
    return SetDiff(prompts, unchanged)


def _same(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    def strip(p: Mapping[str, Any]) -> dict[str, Any]:
        out = {k: v for k, v in p.items() if k != "variables"}
        out["metadata"] = out.get("metadata") or {}
        return out

    return strip(a) == strip(b)


def _parts(prompt: Mapping[str, Any] | None) -> list[tuple[str, str]]:
    """``(label, text)`` sections of a prompt."""
    if prompt is None:
        return []
    if prompt.get("messages") is not None:
        return [
            (f"message {i + 1} · {m.get('role', '?')}", str(m.get("template", "")))
            for i, m in enumerate(prompt["messages"])
        ]
    return [("template", str(prompt.get("template") or ""))]


def _metadata_text(prompt: Mapping[str, Any] | None) -> str:
    metadata = (prompt or {}).get("metadata") or {}
    return "\n".join(
        f"{key}: {json.dumps(metadata[key], ensure_ascii=False, sort_keys=True)}"
        for key in sorted(metadata)
    )


def _sections(before: Mapping[str, Any] | None, after: Mapping[str, Any] | None) -> list[Section]:
    old_parts, new_parts = _parts(before), _parts(after)
    sections: list[Section] = []
    for index in range(max(len(old_parts), len(new_parts))):
        old_label, old_text = old_parts[index] if index < len(old_parts) else ("", None)
        new_label, new_text = new_parts[index] if index < len(new_parts) else ("", None)
        if old_text == new_text and old_label == new_label:
            continue
        if old_label and new_label and old_label != new_label:
            label = f"{old_label} → {new_label.split(' · ')[-1]}"
        else:
            label = new_label or old_label
        sections.append(_section(label, old_text, new_text))
    old_meta, new_meta = _metadata_text(before), _metadata_text(after)
    if old_meta != new_meta:
        sections.append(
            _section("metadata", old_meta if before else None, new_meta if after else None)
        )
    return sections


def _section(label: str, old: str | None, new: str | None) -> Section:
    old_lines = old.split("\n") if old else []
    new_lines = new.split("\n") if new else []
    rows: list[DiffRow] = []
    added = removed = 0
    matcher = difflib.SequenceMatcher(a=old_lines, b=new_lines, autojunk=False)
    groups = list(matcher.get_grouped_opcodes(CONTEXT_LINES))
    for group in groups:
        first = group[0]
        if first[1] > 0 or first[3] > 0:  # equal lines hidden before this group
            rows.append(DiffRow("skip", None, None, (("", False),)))
        for tag, i1, i2, j1, j2 in group:
            if tag == "equal":
                for k in range(i2 - i1):
                    rows.append(
                        DiffRow("ctx", i1 + k + 1, j1 + k + 1, ((old_lines[i1 + k], False),))
                    )
                continue
            deleted = old_lines[i1:i2] if tag in ("replace", "delete") else []
            inserted = new_lines[j1:j2] if tag in ("replace", "insert") else []
            pairs = _inline(deleted, inserted)
            for k, line in enumerate(deleted):
                rows.append(
                    DiffRow("del", i1 + k + 1, None, pairs[0][k] if pairs else ((line, True),))
                )
            for k, line in enumerate(inserted):
                rows.append(
                    DiffRow("add", None, j1 + k + 1, pairs[1][k] if pairs else ((line, True),))
                )
            removed += len(deleted)
            added += len(inserted)
    last = groups[-1][-1] if groups else None
    if last is not None and (last[2] < len(old_lines) or last[4] < len(new_lines)):
        rows.append(DiffRow("skip", None, None, (("", False),)))
    return Section(label, rows, added, removed)


def _inline(
    deleted: list[str], inserted: list[str]
) -> tuple[list[tuple[tuple[str, bool], ...]], list[tuple[tuple[str, bool], ...]]] | None:
    """Word-level highlighting when lines were edited one for one (and are alike)."""
    if len(deleted) != len(inserted) or not deleted:
        return None
    old_out: list[tuple[tuple[str, bool], ...]] = []
    new_out: list[tuple[tuple[str, bool], ...]] = []
    for a, b in zip(deleted, inserted, strict=True):
        old_words, new_words = _TOKEN_RE.findall(a), _TOKEN_RE.findall(b)
        matcher = difflib.SequenceMatcher(a=old_words, b=new_words, autojunk=False)
        if matcher.ratio() < 0.4:
            old_out.append(((a, True),))
            new_out.append(((b, True),))
            continue
        old_out.append(_merged(old_words, matcher, old=True))
        new_out.append(_merged(new_words, matcher, old=False))
    return old_out, new_out


def _merged(
    words: list[str], matcher: difflib.SequenceMatcher[str], *, old: bool
) -> tuple[tuple[str, bool], ...]:
    """The words of one side as ``(text, changed)`` runs, neighbours of one kind joined.

    Spaces between two changed words join the change, so "reaching out" → "contacting" is one
    highlighted run rather than two with an unmarked space between.
    """
    runs: list[tuple[str, bool]] = []
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        start, end = (i1, i2) if old else (j1, j2)
        if end > start:
            runs.append(("".join(words[start:end]), tag != "equal"))
    merged: list[tuple[str, bool]] = []
    for index, (text, changed) in enumerate(runs):
        between = (
            not changed
            and text.isspace()
            and 0 < index < len(runs) - 1
            and runs[index - 1][1]
            and runs[index + 1][1]
        )
        if between:
            changed = True
        if merged and merged[-1][1] == changed:
            merged[-1] = (merged[-1][0] + text, changed)
        else:
            merged.append((text, changed))
    return tuple(merged) or (("", False),)
