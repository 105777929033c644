"""The per-project webhook (issue 11 §2): a JSON POST for each automatic rollback.

    >>> valid_webhook_url("https://hooks.example.com/anvil")
    >>> valid_webhook_url("ftp://x")
    'The webhook address must start with https:// or http://.'

A notice is queued as a ``webhook`` :class:`~forge_app.models.releases.ScheduledJob` in the
same transaction as the rollback, and delivered by ``anvil-forge worker``: one POST with a
deadline (``FORGE_WEBHOOK_TIMEOUT``, default 5 s); a failure is retried later (after 10 s,
40 s, 160 s…) up to ``FORGE_WEBHOOK_ATTEMPTS`` times (default 5), then the job fails with a
note. The body is ``{"event": "anvil.guard.rollback", "project_id", "project", "channel",
"kind", "judged_sequence", "sequence", "summary", "figures", "at"}``.

Safety (see README, "Webhook safety"): the address must be https, and its host must resolve
only to public addresses (not loopback, private, link-local, multicast, reserved or
unspecified), checked when it is saved and again at each delivery, which connects to the
address just checked and follows no redirect; ``FORGE_WEBHOOK_ALLOWED_HOSTS`` (host names or
CIDRs, comma-separated) lifts both rules for the hosts it names. Each delivery is signed:
``X-Anvil-Signature-256: sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`` with the
timestamp in ``X-Anvil-Timestamp``; the per-webhook secret is made when the webhook is created
or its address changes, kept encrypted like ACCESS_TOKEN secrets, and shown once.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import ipaddress
import json
import os
import secrets
import socket
import ssl
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from flask import current_app
from sqlalchemy import select

from anvil_client.errors import ConfigError
from anvil_client.wire import AccessToken as WireToken
from forge_app.audit import record_event
from forge_app.errors import ForgeError, Kind
from forge_app.extensions import db
from forge_app.models import Project, User, utcnow
from forge_app.models.distribution import Channel
from forge_app.models.releases import GuardAction, ProjectWebhook, ScheduledJob
from forge_app.services.tokens import decrypt_secret, encrypt_secret

__all__ = [
    "ALLOWED_HOSTS_SETTING",
    "delete_webhook",
    "deliver",
    "queue_notice",
    "resolve_host",
    "save_webhook",
    "seal_secret",
    "sign",
    "unsafe_address",
    "valid_webhook_url",
    "webhook_of",
]

USER_AGENT = "anvil-forge-webhook/1"
ALLOWED_HOSTS_SETTING = "FORGE_WEBHOOK_ALLOWED_HOSTS"
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# The first matching class names the address in the sentence shown to the owner.
_CLASSES: tuple[tuple[str, Callable[[IPAddress], bool]], ...] = (
    ("an unspecified", lambda ip: ip.is_unspecified),
    ("a loopback", lambda ip: ip.is_loopback),
    ("a link-local", lambda ip: ip.is_link_local),
    ("a multicast", lambda ip: ip.is_multicast),
    ("a reserved", lambda ip: ip.is_reserved),
    ("a private", lambda ip: ip.is_private),
    ("a non-public", lambda ip: not ip.is_global),
)


def valid_webhook_url(url: str) -> str | None:
    """None for a usable address, else one sentence saying what is wrong."""
    if len(url) > 2000:
        return "The webhook address is longer than 2000 characters."
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http"):
        return "The webhook address must start with https:// or http://."
    if not parts.hostname:
        return "The webhook address has no host."
    if parts.username or parts.password:
        return "Put no user name or password in the webhook address."
    try:
        parts.port  # noqa: B018 (raises for a port that is not a number below 65536)
    except ValueError:
        return "The webhook address has an invalid port."
    return None


def resolve_host(host: str, port: int) -> list[str]:
    """The addresses ``host`` resolves to (tests replace this). Raises: OSError."""
    found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    return list(dict.fromkeys(str(info[4][0]) for info in found))


def _resolve(host: str, port: int) -> list[str]:
    """An address literal as it is, a name through :func:`resolve_host`."""
    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:
        return resolve_host(host, port)


@dataclass(frozen=True)
class _AllowList:
    names: frozenset[str]
    networks: tuple[IPNetwork, ...]

    def covers(self, ip: IPAddress) -> bool:
        return any(ip.version == net.version and ip in net for net in self.networks)


def _allow_list() -> _AllowList:
    """``FORGE_WEBHOOK_ALLOWED_HOSTS`` from the app config, else the environment."""
    text = current_app.config.get(ALLOWED_HOSTS_SETTING)
    if text is None:
        text = os.environ.get(ALLOWED_HOSTS_SETTING, "")
    items = text if isinstance(text, (list, tuple)) else str(text).split(",")
    names: set[str] = set()
    networks: list[IPNetwork] = []
    for item in (str(i).strip().lower().rstrip(".") for i in items):
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item.strip("[]"), strict=False))
        except ValueError:
            names.add(item)
    return _AllowList(frozenset(names), tuple(networks))


def _address_class(ip: IPAddress) -> str | None:
    """``"a private"``… for an address the FORGE does not call, None for a public one."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return next((name for name, test in _CLASSES if test(ip)), None)


def _checked_addresses(url: str) -> tuple[list[str], str | None]:
    """The addresses to connect to for ``url``, or a sentence saying why not to call it."""
    problem = valid_webhook_url(url)
    if problem:
        return [], problem
    parts = urlsplit(url)
    host = (parts.hostname or "").rstrip(".")
    allowed = _allow_list()
    named = host in allowed.names
    try:
        addresses = _resolve(host, parts.port or (443 if parts.scheme == "https" else 80))
    except (OSError, UnicodeError):
        return [], f"The webhook host {host} could not be found."
    if not addresses:
        return [], f"The webhook host {host} could not be found."
    ips = [ipaddress.ip_address(text.split("%")[0]) for text in addresses]
    for text, ip in zip(addresses, ips, strict=True):
        kind = _address_class(ip)
        if kind is None or named or allowed.covers(ip):
            continue
        where = host if host == text else f"{host} ({text})"
        return [], (
            f"The webhook address {where} is {kind} address; the FORGE does not call "
            f"{kind.split(' ', 1)[1]} addresses unless {ALLOWED_HOSTS_SETTING} allows them."
        )
    if parts.scheme != "https" and not (named or all(allowed.covers(ip) for ip in ips)):
        return [], (
            f"The webhook address must start with https:// unless {ALLOWED_HOSTS_SETTING} "
            f"allows the host {host}."
        )
    return addresses, None


def unsafe_address(url: str) -> str | None:
    """None when the FORGE may call ``url`` now, else one sentence saying why not."""
    return _checked_addresses(url)[1]


def _aad_id(project_id: Any) -> str:
    return f"webhook-{project_id}"


def seal_secret(project_id: Any, secret: str) -> str:
    """``secret`` encrypted at rest like ACCESS_TOKEN secrets, bound to the project."""
    return encrypt_secret(WireToken(token_id=_aad_id(project_id), secret=secret.encode()))


def _open_secret(hook: ProjectWebhook) -> str | None:
    if not hook.secret_encrypted:
        return None
    try:
        return decrypt_secret(_aad_id(hook.project_id), hook.secret_encrypted).secret.decode()
    except (ConfigError, UnicodeDecodeError):
        return None


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The ``X-Anvil-Signature-256`` value: ``sha256=`` + HMAC-SHA256 of ``<timestamp>.<body>``."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def webhook_of(project_id: Any) -> ProjectWebhook | None:
    return db.session.scalar(select(ProjectWebhook).where(ProjectWebhook.project_id == project_id))


def save_webhook(
    project: Project, url: str, *, enabled: bool, user: User
) -> tuple[ProjectWebhook, str | None]:
    """Set the project's webhook (made when it has none), audit ``webhook.update``, commit.

    A new signing secret is made when the webhook is created, its address changes or it has
    none; it is returned (to show once), else None. The audit event never holds it.

    Raises:
        ForgeError: the address is not usable or not safe to call (one sentence).
    """
    problem = unsafe_address(url)
    if problem:
        raise ForgeError(problem, kind=Kind.INVALID)
    hook = webhook_of(project.id)
    if hook is None:
        hook = ProjectWebhook(project_id=project.id, url=url)
        db.session.add(hook)
    secret = None
    if hook.url != url or not hook.secret_encrypted:
        secret = secrets.token_urlsafe(32)
        hook.secret_encrypted = seal_secret(project.id, secret)
    hook.url = url
    hook.enabled = enabled
    hook.updated_at = utcnow()
    details = {"enabled": enabled, "new_secret": secret is not None}
    record_event("webhook.update", project, project=project, actor=user, details=details)
    db.session.commit()
    return hook, secret


def delete_webhook(project: Project, *, user: User) -> None:
    """Remove the project's webhook (if any), audit ``webhook.delete``, commit."""
    hook = webhook_of(project.id)
    if hook is not None:
        db.session.delete(hook)
    record_event("webhook.delete", project, project=project, actor=user)
    db.session.commit()


def queue_notice(channel: Channel, action: GuardAction, *, now: datetime) -> ScheduledJob | None:
    """Add (not commit) a webhook job for ``action`` when the project has an enabled webhook."""
    hook = webhook_of(channel.project_id)
    if hook is None or not hook.enabled:
        return None
    body = {
        "event": f"anvil.guard.{action.kind}",
        "project_id": str(channel.project_id),
        "project": channel.project.name,
        "channel": channel.name,
        "kind": action.kind,
        "judged_sequence": action.judged_sequence,
        "sequence": action.result_sequence,
        "summary": action.summary,
        "figures": action.figures,
        "at": now.isoformat().replace("+00:00", "Z"),
    }
    job = ScheduledJob(
        project_id=channel.project_id,
        channel_id=channel.id,
        kind="webhook",
        payload_json=json.dumps({"url": hook.url, "body": body}, sort_keys=True),
        run_at=now,
        status="pending",
        note="",
    )
    db.session.add(job)
    return job


class _PinnedHTTP(http.client.HTTPConnection):
    """HTTP to the address already checked (a second DNS answer is never used)."""

    def __init__(self, host: str, port: int | None, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self.address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self.address, self.port), self.timeout)


class _PinnedHTTPS(http.client.HTTPSConnection):
    """HTTPS to the address already checked, verifying the certificate for ``host``."""

    def __init__(self, host: str, port: int | None, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self.address = address
        self.tls = ssl.create_default_context()

    def connect(self) -> None:
        raw = socket.create_connection((self.address, self.port), self.timeout)
        self.sock = self.tls.wrap_socket(raw, server_hostname=self.host)


def _post(url: str, address: str, data: bytes, headers: dict[str, str], timeout: float) -> int:
    """The status of one POST to ``url`` at ``address`` (no redirect is followed)."""
    parts = urlsplit(url)
    pinned = _PinnedHTTPS if parts.scheme == "https" else _PinnedHTTP
    connection = pinned(parts.hostname or "", parts.port, address, timeout)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        connection.request("POST", path, body=data, headers=headers)
        return int(connection.getresponse().status)
    finally:
        connection.close()


def deliver(url: str, body: dict[str, Any], *, timeout: float | None = None) -> str | None:
    """POST ``body`` to ``url``, signed; None on a 2xx answer, else one sentence (never the body).

    The address is checked again first (DNS may have changed since it was saved); the
    signing secret is the project's current webhook's (``body["project_id"]``).
    """
    if timeout is None:
        timeout = float(current_app.config.get("FORGE_WEBHOOK_TIMEOUT", 5.0))
    addresses, problem = _checked_addresses(url)
    if problem:
        return problem[0].lower() + problem[1:].rstrip(".")
    try:
        hook = webhook_of(uuid.UUID(str(body.get("project_id"))))
    except ValueError:
        hook = None
    secret = _open_secret(hook) if hook is not None else None
    if secret is None:
        return "the webhook has no usable signing secret; save the webhook again to make one"
    data = json.dumps(body, sort_keys=True).encode()
    timestamp = str(int(time.time()))
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "X-Anvil-Timestamp": timestamp,
        "X-Anvil-Signature-256": sign(secret, timestamp, data),
    }
    try:
        status = _post(url, addresses[0], data, headers, timeout)
    except TimeoutError:
        return f"the webhook did not answer within {timeout:g} s"
    except (OSError, http.client.HTTPException) as e:
        return f"the webhook could not be reached ({type(e).__name__})"
    if 200 <= status < 300:
        return None
    return f"the webhook answered HTTP {status}"
