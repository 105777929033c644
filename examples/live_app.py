"""A tiny web application that gets its prompts from Anvil: the other end of ``make demo``.

    $ ANVIL_ACCESS_TOKEN=anvil_... python examples/live_app.py --config examples/anvil.toml
    Example app on http://127.0.0.1:5001/  (serving production from http://127.0.0.1:5000/store)

It embeds ``anvil_client`` exactly as a real service would: the prompts it needs are rendered
with ``prompt()``/``messages()`` on every request, from memory, while the client polls the
store in the background, verifies what it finds and reports to the FORGE (heartbeats). The
page updates itself in place every 2 seconds (``static/live_app.js`` reads ``/state.json``; no
reload), so a publish in the FORGE shows up here within one poll interval, without restarting
anything. The channel serves several prompt sets at once (the demo publishes *Support bot* and
*Checkout helper*); the page has a heading per set and a labelled figure per prompt. Only the
standard library besides ``anvil_client``; it logs no requests (the page polls every 2 s).

    GET /              the page (complete without JavaScript)
    GET /state.json    what the page shows, as JSON (the script renders it)
    GET /status.json   anvil_client.status()
    GET /prompt/<id>   one text prompt, rendered
"""

from __future__ import annotations

import argparse
import html
import json
import os
import signal
import sys
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import anvil_client
from anvil_client import AnvilClient, AnvilError, ClientConfig

#: What this application asks its prompts for: prompt id → the variables it renders them with.
#: A real service has such calls spread through its code; unknown ids get a fallback.
USES: dict[str, dict[str, Any]] = {
    "support.greeting": {"customer_name": "Ada", "product": "Acme Cloud"},
    "support.system": {
        "product": "Acme Cloud",
        "language": "English",
        "question": "How do I rotate my API key?",
    },
    "support.escalation": {"vip": True, "ticket_id": "T-1042"},
    "support.closing": {"customer_name": "Ada"},
    "support.summary": {"max_sentences": 3, "transcript": "Customer: my key leaked.\nBot: …"},
    "checkout.upsell": {
        "cart_items": "a laptop",
        "catalogue": "Acme accessories",
        "declined_before": False,
    },
    "checkout.payment_failed": {"error_code": "card_declined"},
}
#: The prompt set each group of prompts comes from (by name, as the FORGE calls it): one
#: heading per set on the page.
SETS: dict[str, tuple[str, ...]] = {
    "Support bot": tuple(p for p in USES if p.startswith("support.")),
    "Checkout helper": tuple(p for p in USES if p.startswith("checkout.")),
}
#: Chat prompts (rendered with ``messages()``); the others are text prompts.
CHAT = {"support.system", "checkout.payment_failed"}
FALLBACKS = {
    "support.greeting": "Hello {{ customer_name }}! (fallback: not published yet)",
    "checkout.upsell": "You might also like our accessories. (fallback: not published)",
}
REFRESH_SECONDS = 2
STATIC = Path(__file__).resolve().parent / "static"
#: The static files served, by URL path (nothing else is read from disk).
STATIC_FILES = {
    "/static/live_app.js": ("live_app.js", "text/javascript; charset=utf-8"),
    "/static/live_app.css": ("live_app.css", "text/css; charset=utf-8"),
}

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Example app · {version}</title>
<link rel="stylesheet" href="/static/live_app.css">
<script src="/static/live_app.js" defer></script>
</head>
<body data-refresh="{refresh}">
<main>
<h1>Example app</h1>
<p>This page is rendered by a process that embeds <code>anvil_client</code>. It updates itself
every {refresh} seconds; publish a new version in the FORGE and watch it change here.</p>
<p class="serving" role="status">Serving <strong id="version">{version}</strong>
<span id="connection"></span></p>
<section aria-labelledby="status-heading">
<h2 id="status-heading">Client status</h2>
<div class="card"><dl class="facts" id="facts">{facts}</dl></div>
</section>
<section aria-labelledby="sets-heading">
<h2 id="sets-heading">Prompt sets served</h2>
<div class="card"><ul id="sets">{sets}</ul></div>
</section>
<section aria-labelledby="prompts-heading">
<h2 id="prompts-heading">Prompts as this app renders them</h2>
<div id="groups">{groups}</div>
<p id="others">{others}</p>
</section>
</main>
</body></html>
"""


# --- what the page shows (one dict, rendered here and by static/live_app.js) -------------


def page_state(client: AnvilClient) -> dict[str, Any]:
    """Everything the page shows: status() facts, the sets served, each prompt rendered."""
    status = client.status()
    heartbeat = status["heartbeat_error"] or status["last_heartbeat"] or "off"
    facts = [
        _fact("Serving", status["version"] or "nothing yet", "ok" if status["version"] else "bad"),
        _fact("Sequence", status["sequence"]),
        _fact("Channel", f"{status['channel']} ({status['mode'].upper()})"),
        _fact("Last sync", status["last_sync"]),
        _fact("Last check", status["last_check"]),
        _fact("Last error", status["last_error"], "bad" if status["last_error"] else ""),
        _fact("Heartbeat", heartbeat, "bad" if status["heartbeat_error"] else ""),
        _fact("Instance id", status["instance_id"]),
        _fact("Store", status["store"]),
    ]
    releases = status.get("releases") or []
    sets = [
        {
            "id": r["prompt_set_id"],
            "name": r["name"] or r["prompt_set_id"],
            "version": r["version"],
            "prompts": r["prompts"],
        }
        for r in releases
    ]
    served = {r["name"]: r["version"] for r in releases if r["name"]}
    groups = [
        {
            "name": name,
            "version": served.get(name),
            "prompts": [_render_prompt(client, prompt_id) for prompt_id in prompt_ids],
        }
        for name, prompt_ids in SETS.items()
    ]
    return {
        "version": status["version"],
        "facts": facts,
        "sets": sets,
        "groups": groups,
        "others": [p for p in client.prompt_ids() if p not in USES],
    }


def _fact(label: str, value: Any, css: str = "") -> dict[str, str]:
    return {
        "label": label,
        "value": "—" if value is None or value == "" else str(value),
        "css": css,
    }


def _render_prompt(client: AnvilClient, prompt_id: str) -> dict[str, Any]:
    variables = USES[prompt_id]
    shown: dict[str, Any] = {"id": prompt_id, "kind": "chat" if prompt_id in CHAT else "text"}
    try:
        if prompt_id in CHAT:
            shown["messages"] = [
                {"role": m["role"], "content": m["content"]}
                for m in client.messages(prompt_id, **variables)
            ]
        else:
            shown["text"] = client.prompt(prompt_id, fallback=FALLBACKS.get(prompt_id), **variables)
    except AnvilError as e:  # not served, a variable this app does not pass, a sandbox refusal
        shown["error"] = f"{type(e).__name__}: {e}"
    return shown


# --- HTML (the same structure the script builds) -----------------------------------------


def render_page(client: AnvilClient, refresh: int = REFRESH_SECONDS) -> str:
    state = page_state(client)
    esc = html.escape
    facts = "".join(
        f"<dt>{esc(f['label'])}</dt><dd{_class(f['css'])}>{esc(f['value'])}</dd>"
        for f in state["facts"]
    )
    sets = "".join(
        f'<li data-set="{esc(s["id"])}"><strong>{esc(s["name"])}</strong> '
        f"<code>{esc(s['version'])}</code> ({s['prompts']} prompts)</li>"
        for s in state["sets"]
    )
    groups = "".join(_render_group(group) for group in state["groups"])
    others = ""
    if state["others"]:
        items = ", ".join(f"<code>{esc(p)}</code>" for p in state["others"])
        others = f"Also served (this app does not use them): {items}"
    return PAGE.format(
        refresh=refresh,
        version=esc(state["version"] or "nothing yet"),
        facts=facts,
        sets=sets or "<li>nothing served yet</li>",
        groups=groups,
        others=others,
    )


def _class(css: str) -> str:
    return f' class="{css}"' if css else ""


def _render_group(group: dict[str, Any]) -> str:
    esc = html.escape
    version = (
        f"<code>{esc(group['version'])}</code>"
        if group["version"]
        else '<span class="muted">not served</span>'
    )
    figures = "".join(_render_figure(prompt) for prompt in group["prompts"])
    return (
        f'<section class="set" data-set-name="{esc(group["name"])}">'
        f"<h3>{esc(group['name'])} {version}</h3>{figures}</section>"
    )


def _render_figure(prompt: dict[str, Any]) -> str:
    esc = html.escape
    caption = (
        f"<figcaption><code>{esc(prompt['id'])}</code> "
        f'<span class="kind">{"chat prompt" if prompt["kind"] == "chat" else "text prompt"}'
        "</span></figcaption>"
    )
    if "error" in prompt:
        body = f'<pre class="bad">{esc(prompt["error"])}</pre>'
    elif "messages" in prompt:
        body = "".join(
            f'<div class="role">{esc(m["role"])}</div><pre>{esc(m["content"])}</pre>'
            for m in prompt["messages"]
        )
    else:
        body = f"<pre>{esc(prompt['text'])}</pre>"
    return f'<figure class="card" data-prompt="{esc(prompt["id"])}">{caption}{body}</figure>'


# --- the server ---------------------------------------------------------------------------


def make_handler(client: AnvilClient) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "anvil-example/1"

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path in ("/", "/index.html"):
                self._send(200, "text/html; charset=utf-8", render_page(client).encode())
            elif path == "/state.json":
                data = json.dumps(page_state(client), ensure_ascii=False).encode()
                self._send(200, "application/json", data)
            elif path == "/status.json":
                data = json.dumps(client.status(), indent=2).encode()
                self._send(200, "application/json", data)
            elif path in STATIC_FILES:
                name, content_type = STATIC_FILES[path]
                self._send(200, content_type, (STATIC / name).read_bytes())
            elif path.startswith("/prompt/"):
                prompt_id = path[len("/prompt/") :]
                variables = USES.get(prompt_id, {})
                try:
                    text = client.prompt(prompt_id, **variables)
                except AnvilError as e:
                    self._send(404, "text/plain; charset=utf-8", str(e).encode())
                    return
                self._send(200, "text/plain; charset=utf-8", text.encode())
            else:
                self._send(404, "text/plain; charset=utf-8", b"not found\n")

        def _send(self, code: int, content_type: str, data: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header(
                "Content-Security-Policy",
                "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
                "base-uri 'none'; frame-ancestors 'none'",
            )
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # the page polls every 2 s; request logs would drown the demo's terminal

    return Handler


def _watch_parent(parent: int, stop: Callable[[], None]) -> None:
    """Stop when the process that started us is gone (the demo was killed, not Ctrl-C'd)."""
    event = threading.Event()
    while not event.wait(1.0):
        if os.getppid() != parent:
            stop()
            return


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="an anvil.toml (default: ANVIL_* env vars, ./anvil.toml)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5001)
    parser.add_argument(
        "--exit-with-parent", action="store_true", help="stop when the parent process exits"
    )
    args = parser.parse_args(argv)
    parent = os.getppid()
    try:
        config = ClientConfig.from_file(args.config) if args.config else ClientConfig.from_env()
        client = anvil_client.configure(config=config)
    except AnvilError as e:
        print(f"live_app: {e}", file=sys.stderr)
        return 2
    try:
        server = ThreadingHTTPServer((args.host, args.port), make_handler(client))
    except OSError as e:
        print(f"live_app: cannot listen on {args.host}:{args.port}: {e.strerror}", file=sys.stderr)
        client.close()
        return 2
    server.daemon_threads = True

    def stop(*_: object) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    if args.exit_with_parent:
        threading.Thread(target=_watch_parent, args=(parent, stop), daemon=True).start()
    host, port = str(server.server_address[0]), int(server.server_address[1])
    print(
        f"Example app on http://{host}:{port}/  (serving {config.channel} from {config.store_url})",
        flush=True,
    )
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
