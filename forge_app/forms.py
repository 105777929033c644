"""WTForms forms of the simple pages (the prompt editor parses its own, dynamic form)."""

from __future__ import annotations

from typing import Any

from flask_wtf import FlaskForm
from sqlalchemy.exc import IntegrityError
from wtforms import (
    BooleanField,
    EmailField,
    PasswordField,
    SelectField,
    StringField,
    TextAreaField,
)
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, EqualTo, Length, Optional

from forge_app.users import MIN_PASSWORD_LENGTH

__all__ = [
    "AcceptInvitationForm",
    "CreateOrgForm",
    "CreateUserForm",
    "InviteForm",
    "LoginForm",
    "PasswordForm",
    "ProjectForm",
    "PromptSetForm",
]

ROLE_CHOICES = [
    SelectChoice("viewer", "Viewer — can read everything"),
    SelectChoice("editor", "Editor — edits prompts and submits them for review"),
    SelectChoice("reviewer", "Reviewer — approves or sends back submissions"),
    SelectChoice("owner", "Owner — manages members and settings"),
]


_PASSWORD_LENGTH = Length(
    min=MIN_PASSWORD_LENGTH,
    max=1024,
    message=f"Passwords need at least {MIN_PASSWORD_LENGTH} characters (and at most 1,024).",
)


class LoginForm(FlaskForm):  # type: ignore[misc]
    email = EmailField("E-mail", validators=[DataRequired(), Length(max=254)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=1024)])
    remember = BooleanField("Keep me signed in on this device")


class PasswordForm(FlaskForm):  # type: ignore[misc]
    current = PasswordField("Current password", validators=[DataRequired()])
    new = PasswordField(
        "New password",
        validators=[DataRequired("Choose a new password."), _PASSWORD_LENGTH],
    )
    confirm = PasswordField(
        "Repeat new password", validators=[DataRequired(), EqualTo("new", "The passwords differ.")]
    )


class ProjectForm(FlaskForm):  # type: ignore[misc]
    name = StringField("Name", validators=[DataRequired(), Length(max=120)])
    description = TextAreaField("Description", validators=[Optional(), Length(max=2000)])


class PromptSetForm(FlaskForm):  # type: ignore[misc]
    name = StringField("Name", validators=[DataRequired(), Length(max=120)])
    description = TextAreaField("Description", validators=[Optional(), Length(max=2000)])


class CreateOrgForm(FlaskForm):  # type: ignore[misc]
    name = StringField("Name", validators=[DataRequired(), Length(max=120)])
    slug = StringField("Short name (in URLs)", validators=[Optional(), Length(max=64)])


class InviteForm(FlaskForm):  # type: ignore[misc]
    role = SelectField("Role", choices=ROLE_CHOICES, default="editor")
    days = SelectField(
        "The link works for",
        choices=[
            SelectChoice("1", "1 day"),
            SelectChoice("7", "7 days"),
            SelectChoice("14", "14 days"),
        ],
        default="7",
    )
    note = StringField(
        "For whom (only you and other owners see it)", validators=[Optional(), Length(max=120)]
    )


class AcceptInvitationForm(FlaskForm):  # type: ignore[misc]
    email = EmailField(
        "Your e-mail", validators=[DataRequired("Give your e-mail address."), Length(max=254)]
    )
    name = StringField("Your name", validators=[Optional(), Length(max=120)])
    password = PasswordField(
        "Choose a password", validators=[DataRequired("Choose a password."), _PASSWORD_LENGTH]
    )
    confirm = PasswordField(
        "Repeat the password",
        validators=[
            DataRequired("Repeat the password."),
            EqualTo("password", "The passwords differ."),
        ],
    )


class CreateUserForm(FlaskForm):  # type: ignore[misc]
    email = EmailField("E-mail", validators=[DataRequired(), Length(max=254)])
    name = StringField("Name", validators=[Optional(), Length(max=120)])
    password = PasswordField("Initial password", validators=[DataRequired(), _PASSWORD_LENGTH])
    is_admin = BooleanField("Site administrator")


def save_name_and_description(
    obj: Any, form: Any, *, action: str, project: Any, taken: str
) -> bool:
    """Apply a name/description form to ``obj``, audit what changed, and commit.

    Returns False (with the error on ``form.name``) when the name is already taken, which the
    database's unique constraint decides, so two concurrent renames cannot both win.
    """
    from forge_app.audit import record_event
    from forge_app.extensions import db

    name = (form.name.data or "").strip()
    description = (form.description.data or "").strip()
    changes: dict[str, Any] = {}
    if name != obj.name:
        changes["name"] = {"from": obj.name, "to": name}
    if description != obj.description:
        changes["description"] = "changed"
    obj.name, obj.description = name, description
    if changes:
        record_event(action, obj, project=project, details=changes)
    try:
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
        form.name.errors = [taken.format(name=name)]
        return False
    return True
