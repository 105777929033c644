"""WTForms forms of the simple pages (the prompt editor parses its own, dynamic form)."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import (
    BooleanField,
    DecimalField,
    EmailField,
    HiddenField,
    IntegerField,
    PasswordField,
    SelectField,
    StringField,
    TextAreaField,
)
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, EqualTo, Length, NumberRange, Optional, Regexp

from anvil_client.wire import CHANNEL_RE
from forge_app.services.invitations import EXPIRY_DAYS
from forge_app.services.users import MIN_PASSWORD_LENGTH

__all__ = [
    "AcceptInvitationForm",
    "ChannelForm",
    "CreateOrgForm",
    "CreateUserForm",
    "Form",
    "GuardForm",
    "InviteForm",
    "LoginForm",
    "NameForm",
    "PasswordForm",
    "PublishForm",
    "ScheduleForm",
    "TokenForm",
    "WebhookForm",
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


class Form(FlaskForm):  # type: ignore[misc]  # Flask-WTF has no type hints
    """The base of every form here: Flask-WTF's form (with its CSRF token), typed once."""


class LoginForm(Form):
    email = EmailField("E-mail", validators=[DataRequired(), Length(max=254)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=1024)])
    remember = BooleanField("Keep me signed in on this device")


class PasswordForm(Form):
    current = PasswordField("Current password", validators=[DataRequired()])
    new = PasswordField(
        "New password",
        validators=[DataRequired("Choose a new password."), _PASSWORD_LENGTH],
    )
    confirm = PasswordField(
        "Repeat new password", validators=[DataRequired(), EqualTo("new", "The passwords differ.")]
    )


class NameForm(Form):
    """A name and a description: the create and settings form of projects and prompt sets."""

    name = StringField("Name", validators=[DataRequired(), Length(max=120)])
    description = TextAreaField("Description", validators=[Optional(), Length(max=2000)])


class CreateOrgForm(Form):
    name = StringField("Name", validators=[DataRequired(), Length(max=120)])
    slug = StringField("Short name (in URLs)", validators=[Optional(), Length(max=64)])


class InviteForm(Form):
    role = SelectField("Role", choices=ROLE_CHOICES, default="editor")
    days = SelectField(
        "The link works for",
        choices=[SelectChoice(str(n), f"{n} day{'' if n == 1 else 's'}") for n in EXPIRY_DAYS],
        default="7",
    )
    note = StringField(
        "For whom (only you and other owners see it)", validators=[Optional(), Length(max=120)]
    )


class AcceptInvitationForm(Form):
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


class CreateUserForm(Form):
    email = EmailField("E-mail", validators=[DataRequired(), Length(max=254)])
    name = StringField("Name", validators=[Optional(), Length(max=120)])
    password = PasswordField("Initial password", validators=[DataRequired(), _PASSWORD_LENGTH])
    is_admin = BooleanField("Site administrator")


class TokenForm(Form):
    name = StringField(
        "Token name",
        validators=[DataRequired(), Length(max=120)],
        description="Where it is used, e.g. “checkout-service prod”.",
    )
    # One random id per rendered form: a reload that re-sends the POST creates no second token.
    request_id = HiddenField(validators=[Optional(), Length(max=64)])


class ChannelForm(Form):
    name = StringField(
        "Channel name",
        validators=[
            DataRequired(),
            Length(max=32),
            Regexp(CHANNEL_RE.pattern, message="Use 1-32 lowercase letters, digits and '-'."),
        ],
    )


class PublishForm(Form):
    channel = StringField("Channel", validators=[DataRequired(), Length(max=32)])
    rollout = IntegerField(
        "Gradual rollout (% of instances)",
        validators=[Optional(), NumberRange(min=1, max=100)],
    )


class GuardForm(Form):
    enabled = BooleanField("Guard on", default=True)
    max_error_rate = DecimalField(
        "Maximum error rate (%)", places=2, validators=[DataRequired(), NumberRange(0, 100)]
    )
    min_calls = IntegerField(
        "Minimum calls before judging", validators=[DataRequired(), NumberRange(1, 10_000_000)]
    )
    window_minutes = IntegerField(
        "Observation window after a publish (minutes)",
        validators=[DataRequired(), NumberRange(1, 7 * 24 * 60)],
    )
    stages = StringField(
        "Staged rollout plan (%)",
        validators=[Optional(), Length(max=60)],
        description="E.g. 10, 50, 100: a rollout advances to the next step while healthy.",
    )
    hold_minutes = IntegerField(
        "Hold between steps (minutes)", validators=[Optional(), NumberRange(0, 7 * 24 * 60)]
    )


class ScheduleForm(Form):
    kind = SelectField(
        "What",
        choices=[
            SelectChoice("publish", "Publish a version"),
            SelectChoice("rollout", "Rollout step"),
            SelectChoice("rollback", "Roll back / abort rollout"),
        ],
    )
    run_at = StringField("When (UTC)", validators=[DataRequired(), Length(max=32)])
    version = StringField("Version to publish", validators=[Optional(), Length(max=300)])
    percent = IntegerField("Percent", validators=[Optional(), NumberRange(1, 100)])
    to_sequence = IntegerField(
        "Roll back to sequence (empty: abort the rollout)", validators=[Optional(), NumberRange(1)]
    )
    compat_confirmed = BooleanField(
        "I am an owner: publish even with caller-compatibility warnings (now or when it runs; "
        "recorded in the audit log)"
    )


class WebhookForm(Form):
    url = StringField("Webhook address", validators=[Optional(), Length(max=2000)])
    enabled = BooleanField("Send notices", default=True)
