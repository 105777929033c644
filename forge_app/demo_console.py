"""What ``anvil-forge demo`` shows on the terminal: the instructions, the ``--json`` line and a
readable request log (:mod:`forge_app.demo_live` runs the demo itself).
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from forge_app.demo import DemoInfo

if TYPE_CHECKING:
    from forge_app.demo_live import LiveDemo

__all__ = ["LABELS", "QUIET_PATHS", "DemoLogFilter", "demo_summary", "print_instructions"]

CHANNEL = "production"
POLL_INTERVAL = 2


def demo_summary(info: DemoInfo, forge_url: str, example_url: str | None) -> dict[str, Any]:
    """What ``anvil-forge demo --json`` prints (one line): URLs, accounts, what is served.
    Never the ACCESS_TOKEN (it is in the example's environment only)."""
    live: LiveDemo | None = info.extra.get("live")
    project_url = f"{forge_url}/projects/{info.project.id}"
    return {
        "forge_url": forge_url,
        "login_url": f"{forge_url}/login",
        "project_url": project_url,
        "channel_url": f"{project_url}/channels/{CHANNEL}",
        "project_id": str(info.project.id),
        "example_url": example_url,
        "channel": CHANNEL,
        "published": live.published if live is not None else [],
        "problem": live.problem if live is not None else None,
        "password": info.password,
        "accounts": [{"email": login.email, "role": login.role} for login in info.logins],
        "seeded": info.created,
    }


def echo_json(info: DemoInfo, forge_url: str, example_url: str | None) -> None:
    click.echo(json.dumps(demo_summary(info, forge_url, example_url), ensure_ascii=False))
    sys.stdout.flush()


def stderr_fd() -> int | None:
    try:
        return sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # a captured stream without a descriptor
        return None


#: Request lines the demo's log leaves out when they succeed: static files, the store (the
#: example's polls) and the LIVE API (its heartbeats and hint stream). Failures stay.
QUIET_PATHS = ("/static/", "/store/", "/api/v1/live/")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_REQUEST_LINE = re.compile(r'"[A-Z]+ (/[^ ?"]*)[^ "]* HTTP/[0-9.]+" (\d{3}) ')


class DemoLogFilter(logging.Filter):
    """Keep the demo's terminal readable (for the ``werkzeug`` logger): no line for a
    successful request of :data:`QUIET_PATHS`, and no colour codes unless ``colour`` (by
    default: standard error is a terminal and ``NO_COLOR`` is unset)."""

    def __init__(self, colour: bool | None = None) -> None:
        super().__init__()
        if colour is None:
            colour = sys.stderr.isatty() and not os.environ.get("NO_COLOR")
        self.colour = colour

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        plain = _ANSI.sub("", message)
        request = _REQUEST_LINE.search(plain)
        if request and request[1].startswith(QUIET_PATHS) and int(request[2]) < 400:
            return False
        if not self.colour and plain != message:
            record.msg, record.args = plain, ()
        return True


#: The FORGE's labels the instructions name, exactly as its pages show them (a test checks
#: each one against the templates).
LABELS = {
    "unlock": "Unlock for editing",
    "save": "Save",
    "submit": "Submit for review…",
    "review": "Open the review",
    "approve": "Approve and lock",
    "publish": "Publish to LIVE instances…",
    "remove": "Remove…",
    "rollback": "Roll back to this…",
}


def print_instructions(
    info: DemoInfo, live: LiveDemo, forge_url: str, example_url: str, config: Path
) -> None:
    project_url = f"{forge_url}/projects/{live.project_id}"
    label = LABELS
    lines = [
        "LIVE demo",
        f"  Example application: {example_url}  (started once the FORGE listens)",
        f"    embeds anvil_client with {config}",
        f"    polling {forge_url}/store every {POLL_INTERVAL} s, reporting to the FORGE",
    ]
    if live.published:
        lines.append(f"  Production serves {' and '.join(live.published)}.")
    if live.problem:
        lines.append(f"  Nothing is published yet: {live.problem}")
    lines += [
        "",
        "Try it:",
        f"  1. Open {example_url} : it shows the prompts it renders from both sets and the",
        "     versions it serves, and updates itself.",
        f"  2. Sign in at {forge_url}/login as {_login(info, 'Editor')}, open Support bot,",
        f"     choose “{label['unlock']}”, change support.greeting and “{label['save']}”.",
        f"  3. “{label['submit']}”, then sign out, sign in as {_login(info, 'Reviewer')},",
        f"     “{label['review']}” and “{label['approve']}” it.",
        f"  4. Sign in as {_login(info, 'Owner')}, open the new version, “{label['publish']}”,",
        "     channel production: the confirmation shows Support bot 0.2.0 → 0.3.0 and",
        "     Checkout helper unchanged. The status page shows the example app as applied,",
        f"     and {example_url} shows the new greeting within {POLL_INTERVAL} seconds.",
        f"  5. Channel production ({project_url}/channels/production) lists both sets:",
        f"     “{label['remove']}” one, or “{label['rollback']}” an earlier entry.",
        f"  6. Instances: {project_url}/instances",
        "",
        "Ctrl+C stops the FORGE and the example application.",
        "",
    ]
    click.echo("\n".join(lines))


def _login(info: DemoInfo, role: str) -> str:
    for login in info.logins:
        if login.role.lower() == role.lower():
            return login.email
    return info.logins[0].email
