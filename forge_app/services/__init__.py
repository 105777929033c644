"""Services shared by the FORGE's views, CLI and demo: the work behind a page, with its audit
events, so that views only parse the request, call one service and render.

    >>> from forge_app.services.tokens import authenticate_bearer
    >>> from forge_app.services.publishing import publish_version

They run inside an app context (``db.session``, ``current_app.config``) and raise
:class:`forge_app.errors.ForgeError` (a kind, never an HTTP status). Publishing services leave
committing to the caller, and add the database row describing a store write only after the
write succeeded; :mod:`~forge_app.services.naming` and ``tokens.generate_token`` commit
themselves (a uniqueness race is decided by the commit).
"""
