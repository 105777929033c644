"""The FORGE: the Flask web app where Context Engineers edit, review and lock prompts.

    >>> from forge_app import create_app
    >>> app = create_app({"FORGE_INSTANCE_PATH": "/tmp/forge"})  # doctest: +SKIP

Run it with ``anvil-forge run`` (after ``anvil-forge db upgrade``) or try it with
``anvil-forge demo``.
"""

from __future__ import annotations

from forge_app.app import create_app

__all__ = ["create_app"]
