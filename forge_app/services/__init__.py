"""Services shared by the FORGE's views, CLI and demo: ACCESS_TOKENs and publishing.

    >>> from forge_app.services.tokens import authenticate_bearer
    >>> from forge_app.services.publishing import publish_version

They run inside an app context (``db.session``, ``current_app.config``) and leave committing
to the caller, except where a docstring says the store was written (then the database row
describing the write is added only after the write succeeded).
"""
