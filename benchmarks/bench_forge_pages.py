"""FORGE page speed: a project with 50 prompt sets x 200 prompts, every page under 150 ms.

    .venv/bin/python benchmarks/bench_forge_pages.py [--sets 50] [--prompts 200] [--runs 7]

Each page is requested through the WSGI app (server-side time: routing, queries, templates)
several times; the median is compared with the 150 ms goal and with the same page of a tiny
project measured in the same run (the ratio shows how the page scales). SQL statements per
request are counted with a SQLAlchemy event listener: equal counts for the tiny and the big
project mean no N+1 queries. Exits 1 if a page misses the goal or its query count grows.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import event  # noqa: E402

from forge_app import create_app  # noqa: E402
from forge_app.extensions import db  # noqa: E402
from forge_app.models import Project, PromptSet, Role, User  # noqa: E402
from forge_app.schema import upgrade_database  # noqa: E402
from forge_app.services.users import add_member, create_org, create_user, hash_password  # noqa: E402
from forge_app.services.workflow import submit  # noqa: E402
from tests.forge_app.bulk import seed_project  # noqa: E402

GOAL_MS = 150.0


def build(root: Path, sets: int, prompts: int) -> tuple[Any, dict[str, dict[str, str]], int]:
    url = f"sqlite:///{root / 'bench.db'}"
    upgrade_database(url)
    app = create_app(
        {
            "FORGE_DATABASE_URL": url,
            "FORGE_INSTANCE_PATH": str(root / "instance"),
            "FORGE_SECRET_KEY": "bench-" + "s" * 40,
            "FORGE_DATA_KEY": "bench",
            "WTF_CSRF_ENABLED": False,
        }
    )
    pages: dict[str, dict[str, str]] = {}
    with app.app_context():
        session = db.session
        org = create_org(session, "Bench", "bench")
        user = create_user(session, "bench@example.com", password_hash=hash_password("x" * 12))
        reviewer = create_user(session, "r@example.com", password_hash=user.password_hash)
        add_member(session, org, user, Role.OWNER)
        add_member(session, org, reviewer, Role.REVIEWER)
        session.commit()
        for label, (n_sets, n_prompts) in (("tiny", (1, 1)), ("big", (sets, prompts))):
            project = Project(org_id=org.id, name=f"{label} project", description="")
            session.add(project)
            session.flush()
            started = time.perf_counter()
            created = seed_project(session, project, user, sets=n_sets, prompts=n_prompts)
            print(
                f"seeded {label}: {n_sets} sets x {n_prompts} prompts, 2 versions each, "
                f"in {time.perf_counter() - started:.1f} s"
            )
            first = created[0]
            in_review = created[-1] if n_sets > 1 else created[0]
            base = f"/projects/{project.id}"
            one = f"{base}/sets/{first.id}"
            pages[label] = {
                "projects list": "/projects/",
                "organisation": "/orgs/bench",
                "project (all sets)": base,
                "prompt set": one,
                "prompt editor": f"{one}/prompts/area0.prompt_0000",
                "new prompt": f"{one}/prompts/new",
                "versions": f"{one}/versions",
                "version": f"{one}/versions/1.1.0",
                "diff versions": f"{one}/diff?from=1.0.0&to=1.1.0",
                "diff to draft": f"{one}/diff?from=1.0.0&to=draft",
                "submit form": f"{one}/submit",
                "search": f"{base}/search?q=order",
                "audit log": f"{base}/audit",
                "project settings": f"{base}/settings",
                "export version": f"{one}/versions/1.1.0/export",
                "bundle json": f"{one}/versions/1.1.0/bundle.json",
            }
            if label == "big":
                # one set under review, for the review page
                review_set = session.get(PromptSet, in_review.id)
                assert review_set is not None
                from forge_app.models import Prompt

                prompt = session.query(Prompt).filter_by(prompt_set_id=review_set.id).first()
                assert prompt is not None
                prompt.template = "Changed for review {{ name }}"
                prompt.kind, prompt.messages = "text", None
                session.commit()
                submit(
                    session,
                    review_set,
                    user,
                    role=Role.OWNER,
                    bump="minor",
                    changelog="bench",
                    expected_revision=None,
                )
                session.commit()
                pages[label]["review"] = f"{base}/sets/{review_set.id}/review"
            else:
                pages[label]["review"] = f"{one}"
            # a set without versions: its submit page diffs every prompt as added
            fresh = seed_project(
                session, project, user, sets=1, prompts=n_prompts, versions=0, prefix="Fresh"
            )[0]
            pages[label]["submit (all new)"] = f"{base}/sets/{fresh.id}/submit"
        user_id = user.id
    return app, pages, user_id


def measure(
    app: Any, user_id: int, urls: dict[str, str], runs: int
) -> dict[str, tuple[float, int]]:
    client = app.test_client()
    with app.app_context():
        engine = db.engine
        session_id = db.session.get(User, user_id).get_id()  # carries the password stamp
    with client.session_transaction() as session:
        session["_user_id"] = session_id
        session["_fresh"] = True
    statements: list[str] = []

    def count(*args: Any) -> None:
        statements.append(args[2])

    results = {}
    for name, url in urls.items():
        response = client.get(url)
        assert response.status_code == 200, (name, url, response.status_code)
        response.close()
        times = []
        event.listen(engine, "before_cursor_execute", count)
        statements.clear()
        for _ in range(runs):
            started = time.perf_counter()
            response = client.get(url)
            response.get_data()
            times.append((time.perf_counter() - started) * 1000)
            response.close()
        event.remove(engine, "before_cursor_execute", count)
        results[name] = (statistics.median(times), len(statements) // runs)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", type=int, default=50)
    parser.add_argument("--prompts", type=int, default=200)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        app, pages, user_id = build(Path(tmp), args.sets, args.prompts)
        tiny = measure(app, user_id, pages["tiny"], args.runs)
        big = measure(app, user_id, pages["big"], args.runs)
        with app.app_context():
            db.engine.dispose()
    print(
        f"\nFORGE pages, median of {args.runs} requests (server side, SQLite); "
        f"goal < {GOAL_MS:.0f} ms"
    )
    print(f"{'page':<20} {'tiny ms':>8} {'big ms':>8} {'ratio':>6} {'queries':>8}  result")
    failed = False
    for name, (big_ms, big_queries) in big.items():
        tiny_ms, tiny_queries = tiny[name]
        ok = big_ms < GOAL_MS and (big_queries == tiny_queries or name == "review")
        failed |= not ok
        queries = f"{tiny_queries}/{big_queries}"
        print(
            f"{name:<20} {tiny_ms:>8.1f} {big_ms:>8.1f} {big_ms / tiny_ms:>6.1f} {queries:>8}  "
            f"{'ok' if ok else 'SLOW' if big_ms >= GOAL_MS else 'N+1?'}"
        )
    worst = max(big.items(), key=lambda item: item[1][0])
    print(
        f"\nslowest page: {worst[0]} at {worst[1][0]:.1f} ms "
        f"({args.sets} sets x {args.prompts} prompts)"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
