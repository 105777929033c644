"""The options ``anvil-publish`` commands share, declared once and resolved in one place.

    >>> @cli.command()  # doctest: +SKIP
    ... @store_options
    ... @click.option("--channel", required=True)
    ... @reencrypting_options("Token that can decrypt the old entries (or env).")
    ... def rollback(move: Move, channel: str) -> None: ...

Secrets may come from the environment: ``ANVIL_SIGNING_KEY`` (the PEM text),
``ANVIL_RECIPIENTS`` (comma-separated ACCESS_TOKENs), ``ANVIL_ACCESS_TOKEN`` and
``ANVIL_TRUSTED_KEYS`` (comma-separated public keys); this module is the one place that reads
them.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import click
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from anvil_client.errors import ConfigError
from anvil_client.wire import AccessToken, load_private_key, load_private_key_file
from publisher._cli_output import echo_result
from publisher._publish import Publisher
from publisher._results import PublishResult
from publisher._time import parse_duration

__all__ = [
    "Move",
    "Reading",
    "access_token_from",
    "access_token_option",
    "compose",
    "expiry_option",
    "json_option",
    "pass_move",
    "project_id_option",
    "reading_options",
    "recipient_options",
    "recipients_from",
    "reencrypting_options",
    "signing_key_from",
    "signing_options",
    "store_options",
    "trusted_key_option",
    "trusted_keys_from",
]

F = TypeVar("F", bound=Callable[..., Any])
Command = Callable[..., None]


def store_options(func: F) -> F:
    return compose(_store_url_option, project_id_option)(func)


def _store_url_option(func: F) -> F:
    return click.option(
        "--store",
        "store_url",
        required=True,
        envvar="ANVIL_STORE",
        help="Store URL: s3://bucket/prefix, file:///path.",
    )(func)


def project_id_option(func: F) -> F:
    return click.option(
        "--project-id", required=True, envvar="ANVIL_PROJECT_ID", help="Project UUID."
    )(func)


def signing_options(func: F) -> F:
    return click.option(
        "--signing-key",
        "signing_key_path",
        type=click.Path(dir_okay=False),
        help="Ed25519 PEM file (or the PEM text in ANVIL_SIGNING_KEY).",
    )(func)


def recipient_options(func: F) -> F:
    return compose(
        click.option(
            "--recipient",
            "recipient_texts",
            multiple=True,
            metavar="TOKEN",
            help="ACCESS_TOKEN that may decrypt (repeatable; or ANVIL_RECIPIENTS).",
        ),
        click.option(
            "--recipients-file",
            type=click.Path(dir_okay=False),
            help="File of ACCESS_TOKENs, one per line ('#' starts a comment).",
        ),
        click.option(
            "--plaintext", is_flag=True, help="Publish unencrypted (no recipients) on purpose."
        ),
    )(func)


def json_option(func: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")(func)


def expiry_option(func: F) -> F:
    return click.option(
        "--expires-in", metavar="DURATION", help="Pointer lifetime, like 30d, 12h or 90m."
    )(func)


def access_token_option(help_text: str) -> Callable[[F], F]:
    return click.option("--access-token", help=help_text)


def compose(*decorators: Callable[[F], F]) -> Callable[[F], F]:
    """The decorators as one, applied as if stacked in this order above a function."""

    def decorate(func: F) -> F:
        for decorator in reversed(decorators):
            func = decorator(func)
        return func

    return decorate


@dataclass(frozen=True)
class Move:
    """The options of a command that moves a channel, resolved in one place."""

    store_url: str
    project_id: str
    signing_key: Ed25519PrivateKey
    recipients: list[str]
    plaintext: bool
    access_token: str | None
    expires: timedelta | None
    as_json: bool

    def publisher(self) -> Publisher:
        return Publisher(self.store_url, project_id=self.project_id, signing_key=self.signing_key)

    def echo(self, result: PublishResult, headline: str) -> None:
        echo_result(result, self.as_json, headline)


def pass_move(*, recipients_from_env: bool = True) -> Callable[[Command], Any]:
    """Hand the command one :class:`Move` instead of the options it is made of (store,
    signing, recipient, access token, expiry and ``--json`` options, as far as it has them).

    ``ANVIL_RECIPIENTS`` applies when ``recipients_from_env`` and not ``--plaintext``.
    """

    def decorate(command: Command) -> Command:
        @functools.wraps(command)
        def resolved(**options: Any) -> None:
            key = signing_key_from(options.pop("signing_key_path"))
            plaintext = bool(options.pop("plaintext", False))
            recipients: list[str] = []
            if "recipient_texts" in options:  # a command without recipients ignores the env
                recipients = recipients_from(
                    options.pop("recipient_texts"),
                    options.pop("recipients_file"),
                    from_env=recipients_from_env and not plaintext,
                )
            expires_in = options.pop("expires_in")
            move = Move(
                store_url=options.pop("store_url"),
                project_id=options.pop("project_id"),
                signing_key=key,
                recipients=recipients,
                plaintext=plaintext,
                access_token=access_token_from(options.pop("access_token", None)),
                expires=parse_duration(expires_in) if expires_in else None,
                as_json=options.pop("as_json"),
            )
            command(move, **options)

        return resolved

    return decorate


def reencrypting_options(
    access_token_help: str, *, recipients_from_env: bool = True
) -> Callable[[Command], Any]:
    """The options of rollback and promote after their own, resolved into a :class:`Move`."""
    return compose(
        signing_options,
        access_token_option(access_token_help),
        recipient_options,
        expiry_option,
        json_option,
        pass_move(recipients_from_env=recipients_from_env),
    )


def signing_key_from(path: str | None) -> Ed25519PrivateKey:
    if path:
        return load_private_key_file(path)
    pem = os.environ.get("ANVIL_SIGNING_KEY", "")
    if not pem.strip():
        raise ConfigError("no signing key: pass --signing-key KEY.pem or set ANVIL_SIGNING_KEY")
    if "-----BEGIN" not in pem:
        raise ConfigError("ANVIL_SIGNING_KEY must hold the PEM text of the key, not a path")
    return load_private_key(pem)


def recipients_from(texts: Sequence[str], path: str | None, *, from_env: bool) -> list[str]:
    tokens = [t.strip() for t in texts if t.strip()]
    if path:
        for line in Path(path).read_text(encoding="utf-8").splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                tokens.append(line)
    if not tokens and not path and from_env:
        env = os.environ.get("ANVIL_RECIPIENTS", "")
        tokens = [t.strip() for t in env.split(",") if t.strip()]
    for index, text in enumerate(tokens):
        try:
            AccessToken.parse(text)
        except ConfigError as e:
            raise ConfigError(f"recipient {index + 1} is not an ACCESS_TOKEN: {e}") from None
    return tokens


def trusted_keys_from(keys: Sequence[str]) -> list[str]:
    found = [k for k in keys if k.strip()]
    if not found:
        env = os.environ.get("ANVIL_TRUSTED_KEYS", "")
        found = [k.strip() for k in env.split(",") if k.strip()]
    return found


def access_token_from(text: str | None) -> str | None:
    return text or os.environ.get("ANVIL_ACCESS_TOKEN") or None


def trusted_key_option(help_text: str = "Public key (ed25519:… or PEM).") -> Callable[[F], F]:
    return click.option("--trusted-key", "trusted", multiple=True, help=help_text)


@dataclass(frozen=True)
class Reading:
    """The options of a command that reads a channel verified (inspect, export)."""

    store_url: str
    project_id: str
    channel: str
    trusted_keys: list[str]
    access_token: str | None

    @property
    def arguments(self) -> tuple[str, str, str, list[str], str | None]:
        """The arguments of ``inspect`` and ``export_bootstrap``, in their order."""
        return (self.store_url, self.project_id, self.channel, self.trusted_keys, self.access_token)


def reading_options(command_name: str, access_token_help: str) -> Callable[[Command], Any]:
    """Store, ``--channel``, ``--trusted-key`` (at least one) and ``--access-token``, handed to
    the command as one :class:`Reading`."""

    def pass_reading(command: Command) -> Command:
        @functools.wraps(command)
        def resolved(**options: Any) -> None:
            keys = trusted_keys_from(options.pop("trusted"))
            if not keys:
                raise ConfigError(f"{command_name} needs --trusted-key (or ANVIL_TRUSTED_KEYS)")
            reading = Reading(
                store_url=options.pop("store_url"),
                project_id=options.pop("project_id"),
                channel=options.pop("channel"),
                trusted_keys=keys,
                access_token=access_token_from(options.pop("access_token")),
            )
            command(reading, **options)

        return resolved

    return compose(
        store_options,
        click.option("--channel", required=True),
        trusted_key_option(),
        access_token_option(access_token_help),
        pass_reading,
    )
