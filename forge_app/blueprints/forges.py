"""Forges: other FORGE instances this one peers with (peering is a later issue)."""

from __future__ import annotations

from flask import Blueprint, render_template
from flask.typing import ResponseReturnValue

bp = Blueprint("forges", __name__, url_prefix="/forges")


@bp.get("/")
def index() -> ResponseReturnValue:
    return render_template("forges/index.html", forges=[], nav="forges")
