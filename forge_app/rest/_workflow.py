"""REST API v1: a prompt set's review workflow (submit, approve, request changes).

One table, one view each: every operation loads the set, reads its body and runs the same
service transition as the review pages (:mod:`forge_app.services.workflow`) as the token's user
with their role in the project: the body's fields are the transition's keywords (its
``revision`` is the ``expected_revision``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from sqlalchemy.exc import IntegrityError

from forge_app.blueprints._common import transition
from forge_app.models import Project, PromptSet, Role
from forge_app.rest import _schemas as s
from forge_app.rest._projects import set_model, version_model
from forge_app.rest._registry import ApiError, Resource, committed, read_body, require_set_role
from forge_app.services.workflow import approve, request_changes, submit

__all__: list[str] = []

WORKFLOW = Resource("workflow", "/projects/<project_id>/sets/<set_id>")


def _the_set(project: Project, prompt_set: PromptSet, _: object) -> BaseModel:
    return set_model(project, prompt_set)


def _the_version(_: Project, __: PromptSet, version: Any) -> BaseModel:
    return version_model(version)


@dataclass(frozen=True)
class _Transition:
    endpoint: str  #: the operationId
    path: str
    role: Role
    body: type[BaseModel]
    response: type[BaseModel]
    summary: str
    action: Callable[..., Any]
    answer: Callable[[Project, PromptSet, Any], BaseModel] = _the_set
    race: tuple[type[Exception], ApiError] | None = None
    doc: str = ""


_TRANSITIONS = (
    _Transition(
        "submit_set",
        "submit",
        Role.EDITOR,
        s.SubmitRequest,
        s.PromptSet,
        "Submit a LIVE set for review",
        submit,
    ),
    _Transition(
        "approve_set",
        "approve",
        Role.REVIEWER,
        s.ApproveRequest,
        s.Version,
        "Approve a set in review (four-eyes: not your own submission)",
        approve,
        answer=_the_version,
        race=(
            IntegrityError,
            ApiError(409, "Someone approved this prompt set at the same moment."),
        ),
        doc="Locks the set and creates its version; the submitter cannot approve their own change.",
    ),
    _Transition(
        "request_changes_set",
        "request-changes",
        Role.REVIEWER,
        s.RequestChangesRequest,
        s.PromptSet,
        "Send a set in review back to its editors",
        request_changes,
    ),
)


def _register(spec: _Transition) -> None:
    def view(project: Project, prompt_set: PromptSet) -> BaseModel:
        body = read_body(spec.body)
        fields = dict(body)  # the action's keywords; the body's revision is the expected one
        fields["expected_revision"] = fields.pop("revision")
        result = committed(lambda: transition(spec.action, prompt_set, **fields), race=spec.race)
        return spec.answer(project, prompt_set, result)

    view.__name__ = view.__qualname__ = spec.endpoint
    view.__doc__ = spec.doc or None
    declare = WORKFLOW.post(f"/{spec.path}", spec.response, spec.summary, body=spec.body)
    declare(require_set_role(spec.role)(view))


for _spec in _TRANSITIONS:
    _register(_spec)
