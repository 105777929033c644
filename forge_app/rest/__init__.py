"""REST API v1 under ``/api/v1/``: personal API tokens, JSON only, OpenAPI 3.1.

    $ curl -H "Authorization: Bearer $FORGE_TOKEN" http://127.0.0.1:5000/api/v1/orgs
    $ curl http://127.0.0.1:5000/api/v1/openapi.json

The app factory registers :data:`bp` and exempts it from CSRF: its views never look at session
cookies, only at ``Authorization: Bearer forge_pat_…``. The LIVE heartbeat
(``/api/v1/live/heartbeat``, ACCESS_TOKENs, DESIGN §7) is a separate blueprint and is not part
of this document.
"""

from __future__ import annotations

from flask import jsonify
from flask.typing import ResponseReturnValue

from forge_app.authz import public
from forge_app.rest import _schemas as schemas
from forge_app.rest._openapi import build_openapi
from forge_app.rest._registry import OPERATIONS, ApiError, bp

# isort: off
# The operations, registered in this order (the OpenAPI document lists them so).
from forge_app.rest import _projects as _projects
from forge_app.rest import _prompts as _prompts
from forge_app.rest import _distribution as _distribution
from forge_app.rest import _workflow as _workflow

# isort: on

__all__ = ["OPERATIONS", "ApiError", "bp", "build_openapi", "schemas"]


@bp.get("/openapi.json")
@public
def openapi() -> ResponseReturnValue:
    """The OpenAPI 3.1 document of this API (public: it holds no data)."""
    response = jsonify(build_openapi())
    response.headers["Cache-Control"] = "public, max-age=300"
    return response
