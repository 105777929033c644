"""No N+1 queries: the number of SQL statements per page does not grow with the number of
prompt sets or prompts (counted with a SQLAlchemy event listener)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from flask import Flask
from sqlalchemy import event

from forge_app.extensions import db
from forge_app.models import Project, User
from tests.forge_app.bulk import seed_project
from tests.forge_app.conftest import World


@contextmanager
def count_queries(app: Flask) -> Iterator[list[str]]:
    with app.app_context():
        engine = db.engine
    statements: list[str] = []

    def listener(*args: Any) -> None:
        statements.append(args[2])

    event.listen(engine, "before_cursor_execute", listener)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", listener)


def _pages(app: Flask, world: World, sets: int, prompts: int) -> dict[str, str]:
    with app.app_context():
        owner = db.session.get(User, world.users["owner"])
        project = Project(org_id=world.org_id, name=f"Big {sets}x{prompts}", description="")
        db.session.add(project)
        db.session.flush()
        created = seed_project(db.session, project, owner, sets=sets, prompts=prompts)  # type: ignore[arg-type]
        base = f"/projects/{project.id}"
        one = f"{base}/sets/{created[0].id}"
    return {
        "projects": "/projects/",
        "project": base,
        "set": one,
        "versions": f"{one}/versions",
        "version": f"{one}/versions/1.1.0",
        "diff": f"{one}/diff?from=1.0.0&to=1.1.0",
        "diff-draft": f"{one}/diff?from=1.0.0&to=draft",
        "search": f"{base}/search?q=order",
        "audit": f"{base}/audit",
        "editor": f"{one}/prompts/area0.prompt_0000",
        "export": f"{one}/versions/1.1.0/export",
    }


def test_query_counts_do_not_grow_with_sets_or_prompts(
    app: Flask, world: World, client_as: Any
) -> None:
    client = client_as("owner")
    counts: dict[str, list[int]] = {}
    for sets, prompts in ((2, 3), (8, 30)):
        for name, url in _pages(app, world, sets, prompts).items():
            client.get(url)  # warm-up (first-use queries such as the user load are the same)
            with count_queries(app) as statements:
                response = client.get(url)
            assert response.status_code == 200, (name, url)
            counts.setdefault(name, []).append(len(statements))
    for name, (small, large) in counts.items():
        assert large == small, (
            f"{name}: {small} queries for the small project, {large} for the big one"
        )
        assert small <= 12, f"{name}: {small} queries"
