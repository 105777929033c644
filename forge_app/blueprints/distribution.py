"""Distribution pages (ACCESS_TOKENs, channels, Publish to LIVE, instances): issue 5.

Placeholder: an empty blueprint registered by the app factory.
"""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("distribution", __name__)
