"""What ``anvil init`` and ``anvil connect`` need besides their options: questions and files.

``asker`` and ``ask_token`` prompt for what the options did not give; ``check_partial``
validates the settings before anything is written; ``prepare_cache_dir`` creates the cache
dir and keeps it out of git.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from anvil_client._config import ClientConfig, parse_mode
from anvil_client.errors import ConfigError
from anvil_client.wire import generate_private_key, public_key_text


def asker(existing: dict[str, Any], *, no_input: bool) -> Callable[..., str]:
    """``ask(value, name, text, **click_prompt_options)``: the value given, else a prompt that
    defaults to the existing file's value (with ``no_input``: that value or an error)."""

    def ask(value: str | None, name: str, text: str, **options: Any) -> str:
        if value:
            return value
        default = existing.get(name)
        if isinstance(default, list):
            default = default[0] if default else None
        if no_input:
            if default is not None or "default" in options:
                return str(default if default is not None else options["default"])
            raise ConfigError(f"--{name.replace('_', '-')} is required with --no-input")
        if default is not None:
            options["default"] = str(default)
        return str(click.prompt(text, **options))

    return ask


def ask_token(access_token: str | None, token_env: str, *, no_input: bool) -> str | None:
    token = access_token or os.environ.get(token_env) or None
    if token is None and not no_input:
        token = (
            click.prompt(
                "ACCESS_TOKEN (input hidden; empty for an unencrypted channel)",
                hide_input=True,
                default="",
                show_default=False,
            )
            or None
        )
    return token


def check_partial(settings: dict[str, Any]) -> None:
    """Validate what ``anvil init`` was given, with placeholders for what it was not."""
    probe = {k: v for k, v in settings.items() if v is not None}
    probe.setdefault("store", "file:///placeholder")
    probe.setdefault("project_id", "placeholder")
    probe.setdefault("trusted_keys", [public_key_text(generate_private_key().public_key())])
    probe.pop("access_token_env", None)
    ClientConfig(**{**probe, "mode": parse_mode(probe.get("mode", "accepting"))})


def prepare_cache_dir(base: Path, cache_dir: str) -> None:
    (base / cache_dir).mkdir(parents=True, exist_ok=True, mode=0o700)
    if Path(cache_dir).is_absolute():
        return
    gitignore = base / ".gitignore"
    entry = "/" + Path(cache_dir).as_posix().strip("/") + "/"
    existing = gitignore.read_text(encoding="utf-8") if gitignore.exists() else ""
    known = {line.strip() for line in existing.splitlines()}
    if entry in known or entry.strip("/") in known or entry.lstrip("/") in known:
        return
    prefix = "" if not existing or existing.endswith("\n") else "\n"
    with gitignore.open("a", encoding="utf-8") as f:
        f.write(f"{prefix}# Anvil's local prompt cache\n{entry}\n")
