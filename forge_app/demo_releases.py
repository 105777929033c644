"""``make demo`` / ``anvil-forge demo``: a health guard on production and a worker beside the
server (issue 11), so a bad release of the example app is rolled back by itself.

:func:`seed_demo_guard` is a :data:`forge_app.demo.DEMO_HOOKS` hook (registered on import);
:func:`start_demo_worker` runs :func:`forge_app.worker.run_worker` in a thread and returns the
function that stops it.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable

from flask import Flask

from forge_app.demo import DEMO_HOOKS, DemoInfo
from forge_app.extensions import db

__all__ = ["DEMO_GUARD", "seed_demo_guard", "start_demo_worker"]

#: The demo's guard on production: the example page renders five Support bot prompts every
#: two seconds, so a release breaking one of them (20 % errors) is judged after 20 renders.
DEMO_GUARD = {"max_error_rate": 0.1, "min_calls": 20, "window_minutes": 30}


def seed_demo_guard(app: Flask, info: DemoInfo) -> None:
    """Give production a guard (once; an owner may change it afterwards)."""
    from forge_app.guards import guard_of
    from forge_app.models.releases import GuardPolicy
    from forge_app.services import publishing

    publishing.ensure_default_channels(info.project)
    channel = publishing.get_channel(info.project, "production")
    if channel is None or guard_of(channel) is not None:
        return
    db.session.add(
        GuardPolicy(
            project_id=info.project.id,
            channel_id=channel.id,
            stages_json=json.dumps([]),
            hold_minutes=5,
            **DEMO_GUARD,
        )
    )
    db.session.commit()


DEMO_HOOKS.append(seed_demo_guard)


def start_demo_worker(app: Flask, interval: float = 5.0) -> Callable[[], None]:
    """Run the worker (due jobs, guards) in a daemon thread; returns ``stop()``."""
    from forge_app.worker import run_worker

    stop = threading.Event()
    thread = threading.Thread(
        target=run_worker,
        args=(app,),
        kwargs={"interval": interval, "stop": stop},
        name="forge-worker",
        daemon=True,
    )
    thread.start()

    def halt() -> None:
        stop.set()
        thread.join(timeout=10)

    return halt
