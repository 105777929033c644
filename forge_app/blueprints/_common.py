"""What the FORGE's views share (the HTML pages and the REST API alike)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from flask import abort, flash, g, render_template, request
from flask_wtf import FlaskForm
from sqlalchemy import ScalarSelect, func, select

from forge_app.authz import signed_in_user
from forge_app.extensions import db
from forge_app.models import Project, PromptSet, Role
from forge_app.services.naming import NameTaken
from forge_app.services.transaction import unit_of_work

__all__ = [
    "count_per",
    "created",
    "flash_form_errors",
    "found_or_404",
    "posted_by",
    "project_page",
    "saved",
    "transition",
]

T = TypeVar("T")


def transition(action: Callable[..., T], prompt_set: PromptSet, **fields: Any) -> T:
    """Run a workflow transition of :mod:`forge_app.services.workflow` on ``prompt_set`` as
    the signed-in user with their role in the project, as one unit of work (committed, or
    rolled back when it raises)."""
    return unit_of_work(action, db.session, prompt_set, signed_in_user(), role=g.role, **fields)


def project_page(template: str, project: Project, tab: str | None = None, **context: Any) -> str:
    """Render a page of ``project``: the sidebar shows Projects as the current place and the
    project's tabs show ``tab`` (none: the page is not one of the tabs)."""
    if tab is not None:
        context["tab"] = tab
    return render_template(template, project=project, nav="projects", **context)


def found_or_404(found: T | None) -> T:
    """``found``, or a 404 page when there is nothing."""
    if found is None:
        abort(404)
    return found


def count_per(counted: Any, condition: Any, outer: Any) -> ScalarSelect[int]:
    """How many ``counted`` rows meet ``condition`` for each row of ``outer`` (a correlated
    subquery for a list page's column)."""
    return select(func.count(counted)).where(condition).correlate(outer).scalar_subquery()


def saved(form: FlaskForm, save: Callable[..., object], *args: Any) -> bool:
    """Whether a submitted and valid name form was saved by ``save(*args, name,
    description)``; False when the form is to be shown (again), with a taken name as the
    error of its ``name`` field."""
    if not form.validate_on_submit():
        return False
    try:
        save(*args, form.name.data or "", form.description.data or "")
    except NameTaken as e:
        form.name.errors = [str(e)]
        return False
    return True


def created(form: FlaskForm, create: Callable[..., T], *args: Any, **kwargs: Any) -> T | None:
    """The object ``create(*args, name, description, **kwargs)`` made from a name form, as
    :func:`saved` (None when the form is to be shown again)."""
    made: list[T] = []
    if saved(form, lambda name, text: made.append(create(*args, name, text, **kwargs))):
        return made[0]
    return None


def posted_by(minimum: Role, refusal: str | None = None) -> bool:
    """Whether this request sends the page's form; a 403 page (saying ``refusal``) when the
    user's role in the project is below ``minimum``, the page itself being open to others."""
    if request.method != "POST":
        return False
    if g.role < minimum:
        abort(403, refusal)
    return True


def flash_form_errors(form: FlaskForm) -> None:
    """Flash each error of a form posted from a page that shows no form fields."""
    for errors in form.errors.values():
        for error in errors:
            flash(str(error), "error")
