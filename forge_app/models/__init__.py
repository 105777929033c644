"""FORGE database models (SQLAlchemy 2). Importing this package registers every table.

>>> from forge_app.models import Base
>>> sorted(Base.metadata.tables)[:2]
['api_tokens', 'audit_events']
"""

from __future__ import annotations

from forge_app.models import api_tokens as api_tokens
from forge_app.models import distribution as distribution
from forge_app.models import instances as instances
from forge_app.models import invitations as invitations
from forge_app.models import peering as peering
from forge_app.models import releases as releases
from forge_app.models import usage as usage
from forge_app.models._base import Base, BigIntId, JSONType, UTCDateTime, utcnow
from forge_app.models.accounts import LoginAttempt, Membership, Organisation, Role, User
from forge_app.models.audit import AuditEvent
from forge_app.models.projects import Project, Prompt, PromptSet, PromptSetVersion, SetStatus

__all__ = [
    "AuditEvent",
    "Base",
    "BigIntId",
    "JSONType",
    "LoginAttempt",
    "Membership",
    "Organisation",
    "Project",
    "Prompt",
    "PromptSet",
    "PromptSetVersion",
    "Role",
    "SetStatus",
    "UTCDateTime",
    "User",
    "utcnow",
]
