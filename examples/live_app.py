"""A tiny web application that gets its prompts from Anvil: the other end of ``make demo``.

    $ ANVIL_ACCESS_TOKEN=anvil_... python examples/live_app.py --config examples/anvil.toml
    Example app on http://127.0.0.1:5001/  (serving production from http://127.0.0.1:5000/store)

It embeds ``anvil_client`` exactly as a real service would: the prompts it needs are rendered
with ``prompt()``/``messages()`` on every request, from memory, while the client polls the
store in the background, verifies what it finds and reports to the FORGE (heartbeats). The page
refreshes itself every 2 seconds, so a publish in the FORGE shows up here within one poll
interval, without restarting anything. The channel serves several prompt sets at once (the
demo publishes *Support bot* and *Checkout helper*); the app asks for prompts of both and
lists each set it serves. Only the standard library besides ``anvil_client``.
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
#: Chat prompts (rendered with ``messages()``); the others are text prompts.
CHAT = {"support.system", "checkout.payment_failed"}
FALLBACKS = {
    "support.greeting": "Hello {{ customer_name }}! (fallback: not published yet)",
    "checkout.upsell": "You might also like our accessories. (fallback: not published)",
}

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="refresh" content="{refresh}">
<title>Example app · {version}</title>
<style>
body {{ font: 15px/1.5 system-ui, sans-serif; margin: 2rem auto; max-width: 60rem; color: #1c2330;
       padding: 0 1rem; background: #f6f7f9; }}
h1 {{ font-size: 1.4rem; }} h2 {{ font-size: 1.05rem; margin-top: 1.5rem; }}
.card {{ background: #fff; border: 1px solid #dfe3ea; border-radius: 8px; padding: .8rem 1rem;
        margin-bottom: .8rem; }}
.facts {{ display: grid; grid-template-columns: max-content 1fr; gap: .2rem 1rem; margin: 0; }}
.facts dt {{ color: #6b7587; }} .facts dd {{ margin: 0; word-break: break-all; }}
pre {{ white-space: pre-wrap; background: #f1f3f6; padding: .5rem .7rem; border-radius: 6px;
      margin: .3rem 0 0; font-size: .9rem; }}
.ok {{ color: #1c7c4a; font-weight: 600; }} .bad {{ color: #b42335; font-weight: 600; }}
.role {{ font-size: .75rem; text-transform: uppercase; color: #6b7587; font-weight: 700; }}
code {{ font-size: .88em; }}
</style></head>
<body>
<h1>Example app <span id="version">{version}</span></h1>
<p>This page is rendered by a process that embeds <code>anvil_client</code>. It refreshes every
{refresh} seconds; publish a new version in the FORGE and watch it change here.</p>
<div class="card"><dl class="facts">{facts}</dl></div>
<h2>Prompt sets served</h2>
<div class="card"><ul id="sets">{sets}</ul></div>
<h2>Prompts as this app renders them</h2>
{prompts}
</body></html>
"""


def _fact(label: str, value: Any, css: str = "") -> str:
    text = "—" if value is None or value == "" else str(value)
    cls = f' class="{css}"' if css else ""
    return f"<dt>{html.escape(label)}</dt><dd{cls}>{html.escape(text)}</dd>"


def render_page(client: AnvilClient, refresh: int = 2) -> str:
    """The whole page: status() facts, then each prompt the app uses, rendered."""
    status = client.status()
    served = "ok" if status["version"] else "bad"
    facts = "".join(
        [
            _fact("Serving", status["version"] or "nothing yet", served),
            _fact("Sequence", status["sequence"]),
            _fact("Channel", f"{status['channel']} ({status['mode'].upper()})"),
            _fact("Last sync", status["last_sync"]),
            _fact("Last check", status["last_check"]),
            _fact("Last error", status["last_error"], "bad" if status["last_error"] else ""),
            _fact("Heartbeat", status["heartbeat_error"] or status["last_heartbeat"] or "off"),
            _fact("Instance id", status["instance_id"]),
            _fact("Store", status["store"]),
        ]
    )
    releases = status.get("releases") or []
    sets = "".join(
        f'<li data-set="{html.escape(r["prompt_set_id"])}"><strong>'
        f"{html.escape(r['name'] or r['prompt_set_id'])}</strong> "
        f"<code>{html.escape(r['version'])}</code> ({r['prompts']} prompts)</li>"
        for r in releases
    )
    blocks = []
    for prompt_id, variables in USES.items():
        blocks.append(_render_prompt(client, prompt_id, variables))
    others = [p for p in client.prompt_ids() if p not in USES]
    if others:
        items = ", ".join(f"<code>{html.escape(p)}</code>" for p in others)
        blocks.append(f'<div class="card">Also served (this app does not use them): {items}</div>')
    return PAGE.format(
        refresh=refresh,
        version=html.escape(status["version"] or "(nothing served yet)"),
        facts=facts,
        sets=sets or "<li>nothing served yet</li>",
        prompts="\n".join(blocks),
    )


def _render_prompt(client: AnvilClient, prompt_id: str, variables: dict[str, Any]) -> str:
    title = f"<strong><code>{html.escape(prompt_id)}</code></strong>"
    try:
        if prompt_id in CHAT:
            body = "".join(
                f'<div class="role">{html.escape(m["role"])}</div>'
                f"<pre>{html.escape(m['content'])}</pre>"
                for m in client.messages(prompt_id, **variables)
            )
        else:
            text = client.prompt(prompt_id, fallback=FALLBACKS.get(prompt_id), **variables)
            body = f"<pre>{html.escape(text)}</pre>"
    except AnvilError as e:  # not served, a variable this app does not pass, a sandbox refusal
        body = f'<pre class="bad">{html.escape(type(e).__name__)}: {html.escape(str(e))}</pre>'
    return f'<div class="card" data-prompt="{html.escape(prompt_id)}">{title}{body}</div>'


def make_handler(client: AnvilClient) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "anvil-example/1"

        def do_GET(self) -> None:
            if self.path in ("/", "/index.html"):
                self._send(200, "text/html; charset=utf-8", render_page(client).encode())
            elif self.path == "/status.json":
                data = json.dumps(client.status(), indent=2).encode()
                self._send(200, "application/json", data)
            elif self.path.startswith("/prompt/"):
                prompt_id = self.path[len("/prompt/") :]
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
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # the page refreshes every 2 s; request logs would drown the demo's terminal

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
