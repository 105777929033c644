"""Releasing a new LOCKED version of a prompt set, as the FORGE's services do it.

Shared by the integration tests and the fleet benchmark (``benchmarks/fleet_setup.py``), which
already import test helpers (``tests.servers``).
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from forge_app.models import PromptSet, Role, SetStatus, User
from forge_app.services.drafts import replace_prompts
from forge_app.services.workflow import approve, submit, unlock


def release_locked_version(
    session: Session,
    prompt_set: PromptSet,
    owner: User,
    reviewer: User,
    template: str,
    *,
    changelog: str = "change",
) -> None:
    """Unlock the set if it is LOCKED, make ``welcome.message`` say ``template`` (as the
    owner), submit a minor version and approve it (as the reviewer), then commit."""
    if prompt_set.status == SetStatus.LOCKED.value:
        unlock(session, prompt_set, owner, role=Role.OWNER, expected_revision=prompt_set.revision)
    replace_prompts(
        session, prompt_set, {"welcome.message": {"template": template}}, owner, remove_missing=True
    )
    submit(
        session,
        prompt_set,
        owner,
        role=Role.OWNER,
        bump="minor",
        changelog=changelog,
        expected_revision=prompt_set.revision,
    )
    approve(
        session, prompt_set, reviewer, role=Role.REVIEWER, expected_revision=prompt_set.revision
    )
    session.commit()
