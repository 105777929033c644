"""Demo data: an organisation, one user per role, and a project with realistic prompt sets.

Two sets have LOCKED versions (*Support bot* 0.2.0, *Checkout helper* 0.1.0), which the LIVE
demo publishes together to ``production``; *Checkout helper* 0.2.0 waits in review and
*Onboarding e-mails* is being edited.

    >>> info = seed_demo(db.session)          # doctest: +SKIP
    >>> [login.email for login in info.logins][:1]
    ['owner@demo.anvil']

Idempotent: a second run finds the demo organisation and changes nothing. Other parts of the
FORGE can extend ``anvil-forge demo`` by appending a callable to ``DEMO_HOOKS``; each is called
as ``hook(app, info)`` after seeding, before the server starts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from flask import Flask
from sqlalchemy import select
from sqlalchemy.orm import Session

from forge_app.audit import record_event
from forge_app.models import Organisation, Project, PromptSet, Role, SetStatus, User
from forge_app.services.drafts import replace_prompts
from forge_app.services.users import add_member, create_org, create_user, hash_password
from forge_app.services.workflow import approve, submit, unlock

__all__ = ["DEMO_HOOKS", "DEMO_PASSWORD", "DemoInfo", "DemoLogin", "seed_demo"]

DEMO_PASSWORD = "anvil-demo-password"  # noqa: S105 - printed for the local demo on purpose
DEMO_ORG = "demo"


@dataclass(frozen=True)
class DemoLogin:
    email: str
    role: str


@dataclass
class DemoInfo:
    org: Organisation
    project: Project
    prompt_sets: dict[str, PromptSet]
    logins: list[DemoLogin]
    password: str = DEMO_PASSWORD
    created: bool = True
    extra: dict[str, Any] = field(default_factory=dict)


DEMO_HOOKS: list[Callable[[Flask, DemoInfo], None]] = []

_USERS = (
    ("owner@demo.anvil", "Olivia Owner", Role.OWNER, True),
    ("reviewer@demo.anvil", "Rafael Reviewer", Role.REVIEWER, False),
    ("editor@demo.anvil", "Erin Editor", Role.EDITOR, False),
    ("viewer@demo.anvil", "Victor Viewer", Role.VIEWER, False),
)

SUPPORT_V1: dict[str, dict[str, Any]] = {
    "support.system": {
        "messages": [
            {
                "role": "system",
                "template": (
                    "You are the support assistant of {{ product }}. Answer in {{ language }}.\n"
                    "Be concise, friendly and precise. If you do not know, say so and offer a "
                    "human agent."
                ),
            },
            {"role": "user", "template": "{{ question }}"},
        ],
        "metadata": {
            "description": "Main support chat",
            "model": "gpt-4o-mini",
            "temperature": 0.2,
            "max_tokens": 600,
            "tags": ["support", "chat"],
        },
    },
    "support.greeting": {
        "template": "Hi {{ customer_name }}, thanks for reaching out to {{ product }} support!",
        "metadata": {"description": "First message in a new conversation", "tags": ["support"]},
    },
    "support.escalation": {
        "template": (
            "I'm handing this over to a colleague{% if vip %} right away{% endif %}. "
            "Your ticket number is {{ ticket_id }}."
        ),
        "metadata": {"description": "When the bot hands over to a human"},
    },
    "support.summary": {
        "template": (
            "Summarise this conversation for the next agent in at most {{ max_sentences }} "
            "sentences.\n\n{{ transcript }}\n"
        ),
        "metadata": {"description": "Hand-over summary", "model": "gpt-4o", "temperature": 0},
    },
}

SUPPORT_V2_CHANGES: dict[str, dict[str, Any]] = {
    "support.greeting": {
        "template": (
            "Hi {{ customer_name }} 👋 Thanks for contacting {{ product }} support. "
            "How can I help today?"
        ),
        "metadata": {"description": "First message in a new conversation", "tags": ["support"]},
    },
    "support.closing": {
        "template": "Glad I could help, {{ customer_name }}. Have a great day!",
        "metadata": {"description": "End of a solved conversation"},
    },
}

ONBOARDING: dict[str, dict[str, Any]] = {
    "onboarding.welcome_subject": {
        "template": "Welcome to {{ product }}, {{ first_name }}!",
        "metadata": {"description": "Subject of the welcome e-mail", "max_tokens": 30},
    },
    "onboarding.welcome_body": {
        "template": (
            "Write a warm, short welcome e-mail for {{ first_name }}, who just signed up for "
            "the {{ plan }} plan.\n"
            "{% if team_size > 1 %}Mention inviting their {{ team_size }} teammates.{% endif %}\n"
            "Close with a link to {{ docs_url }}."
        ),
        "metadata": {"description": "Generates the welcome e-mail body", "temperature": 0.7},
    },
    "onboarding.tip_of_the_day": {
        "template": "Give one practical tip about {{ feature }} in under 40 words.",
        "metadata": {"tags": ["onboarding", "tips"]},
    },
}

CHECKOUT: dict[str, dict[str, Any]] = {
    "checkout.upsell": {
        "template": (
            "The customer has {{ cart_items }} in their cart. Suggest one complementary product "
            "from {{ catalogue }} in one sentence. Never push if {{ declined_before }} is true."
        ),
        "metadata": {"description": "Upsell suggestion", "model": "gpt-4o-mini"},
    },
    "checkout.payment_failed": {
        "messages": [
            {"role": "system", "template": "You explain payment problems calmly and briefly."},
            {
                "role": "user",
                "template": "My payment failed with code {{ error_code }}. What can I do?",
            },
        ],
        "metadata": {"description": "Explains a failed payment", "temperature": 0.1},
    },
}

CHECKOUT_V2_CHANGES: dict[str, dict[str, Any]] = {
    "checkout.cart_reminder": {
        "template": (
            "Hi {{ first_name }}, you left {{ cart_items }} in your cart. It is kept for you "
            "until {{ expires_on }}."
        ),
        "metadata": {"description": "Reminder e-mail for an abandoned cart"},
    },
}


def seed_demo(session: Session) -> DemoInfo:
    """Create the demo organisation, users and project unless they exist; commit."""
    org = session.scalar(select(Organisation).where(Organisation.slug == DEMO_ORG))
    logins = [DemoLogin(email, role.label) for email, _, role, _ in _USERS]
    if org is not None:
        project = session.scalars(select(Project).where(Project.org_id == org.id)).first()
        if project is not None:
            sets = {
                s.name: s
                for s in session.scalars(
                    select(PromptSet).where(PromptSet.project_id == project.id)
                )
            }
            return DemoInfo(org, project, sets, logins, created=False)
    org = org or create_org(session, "Demo Company", DEMO_ORG)
    password_hash = hash_password(DEMO_PASSWORD)  # hashed once: scrypt is slow on purpose
    users: dict[Role, User] = {}
    for email, name, role, is_admin in _USERS:
        user = session.scalar(select(User).where(User.email == email)) or create_user(
            session, email, name=name, is_admin=is_admin, password_hash=password_hash
        )
        add_member(session, org, user, role)
        users[role] = user
    record_event("org.create", org, org_id=org.id, actor=users[Role.OWNER], session=session)
    project = Project(
        org_id=org.id,
        name="Acme Support Assistant",
        description="Prompts of the support chat, onboarding e-mails and checkout helper.",
        created_by_id=users[Role.OWNER].id,
    )
    session.add(project)
    session.flush()
    record_event(
        "project.create", project, project=project, actor=users[Role.OWNER], session=session
    )

    editor, reviewer = users[Role.EDITOR], users[Role.REVIEWER]
    support = _new_set(session, project, "Support bot", "The support chat assistant.", editor)
    replace_prompts(session, support, SUPPORT_V1, editor, remove_missing=True)
    _lock(session, support, editor, reviewer, "minor", "First version of the support bot.")
    unlock(session, support, editor, role=Role.EDITOR, expected_revision=support.revision)
    replace_prompts(session, support, SUPPORT_V2_CHANGES, editor, remove_missing=False)
    _lock(session, support, editor, reviewer, "minor", "Friendlier greeting; closing message.")

    onboarding = _new_set(session, project, "Onboarding e-mails", "Welcome series.", editor)
    replace_prompts(session, onboarding, ONBOARDING, editor, remove_missing=True)

    # Checkout helper 0.1.0 is LOCKED (production serves it beside the Support bot), and its
    # next version waits in review.
    checkout = _new_set(session, project, "Checkout helper", "Upsell and payment help.", editor)
    replace_prompts(session, checkout, CHECKOUT, editor, remove_missing=True)
    _lock(session, checkout, editor, reviewer, "minor", "Upsell suggestion and payment help.")
    unlock(session, checkout, editor, role=Role.EDITOR, expected_revision=checkout.revision)
    replace_prompts(session, checkout, CHECKOUT_V2_CHANGES, editor, remove_missing=False)
    submit(
        session,
        checkout,
        editor,
        role=Role.EDITOR,
        bump="minor",
        changelog="A reminder for abandoned carts, ready for review.",
        expected_revision=checkout.revision,
    )
    session.commit()
    sets = {s.name: s for s in (support, onboarding, checkout)}
    return DemoInfo(org, project, sets, logins)


def _new_set(
    session: Session, project: Project, name: str, description: str, user: User
) -> PromptSet:
    prompt_set = PromptSet(
        project_id=project.id,
        name=name,
        description=description,
        status=SetStatus.LIVE.value,
        revision=1,
        updated_by_id=user.id,
    )
    session.add(prompt_set)
    session.flush()
    record_event("prompt_set.create", prompt_set, project=project, actor=user, session=session)
    return prompt_set


def _lock(
    session: Session,
    prompt_set: PromptSet,
    editor: User,
    reviewer: User,
    bump: str,
    changelog: str,
) -> None:
    submit(
        session,
        prompt_set,
        editor,
        role=Role.EDITOR,
        bump=bump,
        changelog=changelog,
        expected_revision=prompt_set.revision,
    )
    approve(
        session, prompt_set, reviewer, role=Role.REVIEWER, expected_revision=prompt_set.revision
    )


# ------------------------------------------------------------------ the demo's own peer

DEMO_PEER_NAME = "Demo peer"
DEMO_PEER_TOKEN_ENV = "FORGE_DEMO_PEER_TOKEN"  # noqa: S105 - the variable's name, not a token


def configure_demo_peer(app: Flask, info: DemoInfo) -> None:
    """Demo hook: this FORGE is its own known peer, "Demo peer", so the Forges menu has
    something to browse. It reads through a 7-day ``read`` API token of the demo owner that
    lives only in this process's environment (``FORGE_DEMO_PEER_TOKEN``); each run revokes the
    previous one and makes a new one. The URL is the demo's own ``--host``/``--port``.
    """
    import os

    import click

    from forge_app.config import KnownForge
    from forge_app.extensions import db
    from forge_app.models.api_tokens import ApiToken
    from forge_app.peering import add_known_forge
    from forge_app.services.api_tokens import create_api_token, revoke_api_token

    owner = db.session.scalar(select(User).where(User.email == info.logins[0].email))
    if owner is None:
        return
    previous = db.session.scalars(
        select(ApiToken.token_id).where(
            ApiToken.user_id == owner.id,
            ApiToken.name == DEMO_PEER_NAME,
            ApiToken.revoked_at.is_(None),
        )
    ).all()
    for token_id in previous:
        revoke_api_token(db.session, owner, token_id)
    _, text = create_api_token(db.session, owner, DEMO_PEER_NAME, scope="read", days=7)
    db.session.commit()
    os.environ[DEMO_PEER_TOKEN_ENV] = text
    context = click.get_current_context(silent=True)
    params = context.params if context is not None else {}
    url = f"http://{params.get('host') or '127.0.0.1'}:{params.get('port') or 5000}"
    add_known_forge(app, KnownForge(DEMO_PEER_NAME, url, DEMO_PEER_TOKEN_ENV))


DEMO_HOOKS.append(configure_demo_peer)
