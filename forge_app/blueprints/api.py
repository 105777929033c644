"""The bearer-token API for LIVE instances (heartbeats): issue 5.

Placeholder: an empty blueprint, registered by the app factory and exempt from CSRF (it uses
no cookies). Its views are marked ``@public`` for the session check and authenticate with
``Authorization: Bearer <ACCESS_TOKEN>`` themselves.
"""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("api", __name__, url_prefix="/api/v1")
