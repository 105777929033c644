"""One service call as one database transaction, for the callers of services that leave the
commit to their caller so that they compose (the workflow transitions, the publishing moves).

    >>> version = unit_of_work(approve, db.session, prompt_set, user, role=role,
    ...                        expected_revision=revision)  # doctest: +SKIP

Views and the REST API call such services through :func:`unit_of_work` instead of committing
and rolling back themselves; a service that is a whole unit on its own commits itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ParamSpec, TypeVar

from forge_app.extensions import db

__all__ = ["unit_of_work"]

P = ParamSpec("P")
T = TypeVar("T")


def unit_of_work(action: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """``action(*args, **kwargs)``, committed when it returns; rolled back when it (or the
    commit) raises, and the exception re-raised for the caller to answer."""
    try:
        result = action(*args, **kwargs)
        db.session.commit()
    except BaseException:
        db.session.rollback()
        raise
    return result
