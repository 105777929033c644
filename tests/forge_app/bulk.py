"""Bulk test data: a project with many prompt sets, prompts, versions and audit events."""

from __future__ import annotations

from typing import Any

from sqlalchemy import insert
from sqlalchemy.orm import Session

from forge_app.audit import record_event
from forge_app.models import Project, Prompt, PromptSet, PromptSetVersion, User, utcnow
from forge_app.services.drafts import draft_prompts
from forge_app.services.editing import search_text_of


def prompt_entry(set_index: int, index: int) -> dict[str, Any]:
    if index % 5 == 0:
        return {
            "messages": [
                {
                    "role": "system",
                    "template": f"You are assistant {set_index}. Tone: {{{{ tone }}}}.",
                },
                {"role": "user", "template": "{{ question }}\n\nContext:\n{{ context }}"},
            ],
            "metadata": {"description": f"Chat prompt {index}", "temperature": 0.2},
        }
    return {
        "template": (
            f"Prompt {index} of set {set_index}.\nHello {{{{ name }}}}, your order "
            "{{ order_id }} is {{ status }}.\n{% if vip %}Thanks for being a VIP.{% endif %}\n"
        ),
        "metadata": {
            "description": f"Text prompt {index}",
            "model": "gpt-4o-mini",
            "tags": ["bulk", f"set{set_index}"],
        },
    }


def seed_project(
    session: Session,
    project: Project,
    user: User,
    *,
    sets: int,
    prompts: int,
    versions: int = 2,
    prefix: str = "Set",
) -> list[PromptSet]:
    """``sets`` LIVE prompt sets of ``prompts`` prompts, each with ``versions`` versions and a
    few audit events."""
    project_id = project.id
    from publisher import build_bundle

    now = utcnow()
    created = []
    for s in range(sets):
        prompt_set = PromptSet(
            project_id=project_id,
            name=f"{prefix} {s:03d}",
            description=f"Bulk set {s}",
            status="LIVE",
            updated_by_id=user.id,
        )
        session.add(prompt_set)
        session.flush()
        rows = []
        for p in range(prompts):
            key = f"area{p % 7}.prompt_{p:04d}"
            entry = prompt_entry(s, p)
            rows.append(
                {
                    "prompt_set_id": prompt_set.id,
                    "key": key,
                    "kind": "chat" if "messages" in entry else "text",
                    "template": entry.get("template"),
                    "messages": entry.get("messages"),
                    "meta": entry["metadata"],
                    "variables": ["context", "question", "tone"]
                    if "messages" in entry
                    else ["name", "order_id", "status", "vip"],
                    "samples": {},
                    "search_text": search_text_of(key, entry),
                    "revision": 1,
                    "created_at": now,
                    "updated_at": now,
                    "updated_by_id": user.id,
                }
            )
        if rows:
            session.execute(insert(Prompt), rows)
        snapshot = draft_prompts(session, prompt_set)
        for v in range(versions):
            if v == versions - 1 and snapshot:
                first = next(iter(snapshot))
                snapshot[first] = {**snapshot[first], "metadata": {"description": f"v{v}"}}
            built = build_bundle(
                snapshot,
                project_id=str(project_id),
                version=f"1.{v}.0",
                prompt_set_id=str(prompt_set.id),
                created_at=now,
            )
            session.add(
                PromptSetVersion(
                    prompt_set_id=prompt_set.id,
                    version=f"1.{v}.0",
                    bundle_json=built.data.decode(),
                    content_sha256=built.content_sha256,
                    prompt_count=built.prompt_count,
                    changelog=f"Version 1.{v}.0",
                    created_at=now,
                    submitted_by_id=user.id,
                    approved_by_id=user.id,
                )
            )
        for action in (
            "prompt_set.create",
            "prompt_set.import",
            "prompt_set.submit",
            "prompt_set.approve",
        ):
            record_event(
                action,
                prompt_set,
                project=project,
                actor=user,
                session=session,
                details={"bulk": True},
            )
        created.append(prompt_set)
    session.commit()
    return created
