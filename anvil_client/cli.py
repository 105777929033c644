"""The ``anvil`` command: set up, sync, freeze and inspect a LIVE client from the shell.

    $ anvil connect          # wizard: store, project, channel, ACCESS_TOKEN, key, mode
    $ anvil status --json

Thin by design: commands parse, call the library, print. Every error is one sentence on
stderr with exit code 1 (2 for usage errors); the ACCESS_TOKEN is never written to a file.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable, Iterable
from keyword import iskeyword
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import click

from anvil_client._cache import DiskCache
from anvil_client._cli_setup import ask_token, asker, check_partial, prepare_cache_dir
from anvil_client._client import AnvilClient, Status
from anvil_client._config import (
    CONFIG_FILE,
    DEFAULT_CACHE_DIR,
    DEFAULT_TOKEN_ENV,
    MODES,
    ClientConfig,
    parse_mode,
    read_config_file,
)
from anvil_client._settings_file import write_config
from anvil_client.errors import AnvilError, ConfigError

P = ParamSpec("P")
R = TypeVar("R")

APP_LINES = (
    "import anvil_client",
    "anvil_client.configure()  # reads anvil.toml and ANVIL_* env vars, starts polling",
    'text = anvil_client.prompt("welcome.message", name="Ada")',
)


def _friendly(command: Callable[P, R]) -> Callable[P, R]:
    """Turn the library's errors (and OS errors) into one clear sentence and exit code 1."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except AnvilError as e:
            raise click.ClickException(str(e)) from e
        except OSError as e:
            where = f" ({e.filename})" if e.filename else ""
            raise click.ClickException(f"{e.strerror or e}{where}") from e

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="anvil.toml or pyproject.toml to read (default: ./anvil.toml, then ./pyproject.toml).",
)
@click.pass_context
def cli(ctx: click.Context, config_path: Path | None) -> None:
    """Anvil's LIVE client: signed, encrypted prompts pulled from object storage."""
    ctx.obj = config_path


def _config(ctx: click.Context) -> ClientConfig:
    path: Path | None = ctx.obj
    if path is not None and not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    return ClientConfig.load(path)


def _client(ctx: click.Context) -> AnvilClient:
    return AnvilClient(config=_config(ctx), start=False)


# --- init and connect ---------------------------------------------------------------------

# The options init and connect share.
_STORE_OPTION = click.option(
    "--store", help="Store URL: s3://bucket/prefix, https://host/prefix or file:///dir."
)
_PROJECT_OPTION = click.option("--project-id", help="The project's UUID.")
_TRUSTED_KEY_OPTION = click.option(
    "--trusted-key", "trusted_keys", multiple=True, help="ed25519:… public key."
)
_FORGE_URL_OPTION = click.option(
    "--forge-url", default=None, help="FORGE URL for heartbeats (optional)."
)


def _token_env_option(help_text: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    return click.option("--token-env", default=DEFAULT_TOKEN_ENV, show_default=True, help=help_text)


@cli.command()
@_STORE_OPTION
@_PROJECT_OPTION
@click.option("--channel", default="production", show_default=True)
@_token_env_option("Environment variable that will hold the ACCESS_TOKEN.")
@_TRUSTED_KEY_OPTION
@click.option("--cache-dir", default=DEFAULT_CACHE_DIR, show_default=True)
@click.option("--mode", type=click.Choice(MODES), default="accepting", show_default=True)
@_FORGE_URL_OPTION
@click.option("--force", is_flag=True, help="Overwrite an existing anvil.toml.")
@_friendly
def init(
    store: str | None,
    project_id: str | None,
    channel: str,
    token_env: str,
    trusted_keys: tuple[str, ...],
    cache_dir: str,
    mode: str,
    forge_url: str | None,
    force: bool,
) -> None:
    """Write ./anvil.toml, create the cache dir and keep it out of git."""
    path = Path.cwd() / CONFIG_FILE
    if path.exists() and not force:
        raise ConfigError(f"{path} already exists; use --force to overwrite it")
    settings: dict[str, Any] = {
        "store": store,
        "project_id": project_id,
        "channel": channel,
        "access_token_env": token_env,
        "trusted_keys": list(trusted_keys) or None,
        "cache_dir": cache_dir,
        "mode": mode,
        "forge_url": forge_url,
    }
    check_partial(settings)
    write_config(path, settings)
    prepare_cache_dir(Path.cwd(), cache_dir)
    missing = [name for name in ("store", "project_id", "trusted_keys") if not settings[name]]
    click.echo(f"Wrote {path.name} and created {cache_dir}/ (ignored by git).")
    if missing:
        click.echo(f"Fill in {', '.join(missing)} in {path.name} (or run `anvil connect`).")
    click.echo(
        f"Put the ACCESS_TOKEN in the environment variable {token_env}, then add to your app:"
    )
    click.echo("")
    for line in APP_LINES:
        click.echo(f"    {line}")


@cli.command()
@_STORE_OPTION
@_PROJECT_OPTION
@click.option("--channel", help="Channel to follow (default production).")
@click.option(
    "--access-token",
    help="The ACCESS_TOKEN (prefer the env var or the hidden prompt: flags show up in ps).",
)
@_token_env_option("Environment variable your app will read the ACCESS_TOKEN from.")
@_TRUSTED_KEY_OPTION
@click.option("--mode", type=click.Choice(MODES), default=None)
@click.option("--cache-dir", default=None, help=f"Default {DEFAULT_CACHE_DIR}.")
@_FORGE_URL_OPTION
@click.option("--yes", "-y", is_flag=True, help="Overwrite an existing anvil.toml without asking.")
@click.option("--no-input", is_flag=True, help="Never prompt; fail if something is missing.")
@_friendly
def connect(
    store: str | None,
    project_id: str | None,
    channel: str | None,
    access_token: str | None,
    token_env: str,
    trusted_keys: tuple[str, ...],
    mode: str | None,
    cache_dir: str | None,
    forge_url: str | None,
    yes: bool,
    no_input: bool,
) -> None:
    """Connect this app to a channel: ask, check with a first sync, write anvil.toml."""
    path = Path.cwd() / CONFIG_FILE
    existing: dict[str, Any] = read_config_file(path) if path.is_file() else {}
    if path.is_file() and not yes:
        if no_input:
            raise ConfigError(f"{path} already exists; pass --yes to overwrite it")
        click.confirm(f"{path.name} exists; overwrite it?", abort=True)

    ask = asker(existing, no_input=no_input)
    store = ask(store, "store", "Store URL (s3://bucket/prefix, https://host/prefix, file:///dir)")
    project_id = ask(project_id, "project_id", "Project id")
    channel = ask(channel, "channel", "Channel", default="production")
    token = ask_token(access_token, token_env, no_input=no_input)
    keys = list(trusted_keys) or [ask(None, "trusted_keys", "Trusted public key (ed25519:…)")]
    mode = ask(mode, "mode", "Mode", default="accepting", type=click.Choice(MODES))
    cache_dir = cache_dir or str(existing.get("cache_dir") or DEFAULT_CACHE_DIR)
    if forge_url is None and existing.get("forge_url"):
        forge_url = str(existing["forge_url"])
    config = ClientConfig(
        store=store,
        project_id=project_id,
        channel=channel,
        access_token=token,
        trusted_keys=tuple(keys),
        cache_dir=Path(cache_dir),
        mode=parse_mode(mode),
        forge_url=forge_url,
        access_token_env=token_env,
    )
    with AnvilClient(config=config, start=False) as client:
        status = client.sync()
        usage = _usage_line(client)
    write_config(
        path,
        {
            "store": config.store_url,
            "project_id": config.project_id,
            "channel": config.channel,
            "access_token_env": token_env,
            "trusted_keys": list(config.trusted_keys),
            "cache_dir": cache_dir,
            "mode": config.mode,
            "forge_url": forge_url,
        },
    )
    prepare_cache_dir(Path.cwd(), cache_dir)
    click.echo(
        f"Connected: {config.channel} serves version {status['version']} "
        f"(sequence {status['sequence']}, {status['prompts']} prompts)."
    )
    click.echo(f"Wrote {path.name} (without the token).")
    if token and os.environ.get(token_env) != token:
        click.echo(f"Your app reads the ACCESS_TOKEN from {token_env}: set it in its environment.")
    click.echo("Add to your app:")
    for line in (*APP_LINES[:-1], usage):
        click.echo(f"    {line}")


def _usage_line(client: AnvilClient) -> str:
    """A call of one prompt the channel really serves, with its variables: the first text
    prompt by id (``prompt()``), else the first chat prompt (``messages()``)."""
    specs = [(prompt_id, client._spec(prompt_id)) for prompt_id in client.prompt_ids()]
    if not specs:
        return APP_LINES[-1]
    prompt_id, spec = next(((p, s) for p, s in specs if s.template is not None), specs[0])
    target, function = ("text", "prompt") if spec.template is not None else ("chat", "messages")
    arguments = "".join(
        f', {name}="…"' for name in spec.variables if name.isidentifier() and not iskeyword(name)
    )
    return f"{target} = anvil_client.{function}({json.dumps(prompt_id)}{arguments})"


# --- sync, mode, status, render -----------------------------------------------------------


@cli.command()
@click.pass_context
@_friendly
def sync(ctx: click.Context) -> None:
    """Fetch, verify and cache the channel's current entries now (in any mode)."""
    with _client(ctx) as client:
        before = client.status()
        after = client.sync()
    channel = after["channel"]
    if _served(before) == _served(after) and before["version"] is not None:
        click.echo(
            f"{channel} is up to date: version {after['version']} (sequence {after['sequence']})."
        )
    else:
        click.echo(
            f"{channel} now serves version {after['version']} (sequence {after['sequence']}, "
            f"{after['prompts']} prompts); running processes pick it up from the cache."
        )


def _served(report: Status) -> list[tuple[str, str]]:
    return [(r["prompt_set_id"], r["content_sha256"]) for r in report["releases"]]


@cli.command(name="mode")
@click.argument("mode", required=False, type=click.Choice(MODES))
@click.option("--reset", is_flag=True, help="Remove the override; the configured mode applies.")
@click.pass_context
@_friendly
def mode_command(ctx: click.Context, mode: str | None, reset: bool) -> None:
    """Set ACCEPTING or FROZEN for every process using this cache dir (persisted).

    Without arguments, show the mode in force and where it comes from.
    """
    if mode is not None and reset:
        raise click.UsageError("give a mode (accepting or frozen) or --reset, not both")
    config = _config(ctx)
    cache = DiskCache(config.cache_dir, config.project_id, config.channel)
    if mode is None and not reset:
        override = cache.read_mode()
        source = "override" if override else config.mode_source
        click.echo(f"{config.channel} is {(override or config.mode).upper()} ({source}).")
        return
    if reset:
        removed = cache.clear_mode()
        state = "removed" if removed else "there was none"
        click.echo(
            f"Mode override {state}; {config.channel} runs in its configured mode ({config.mode})."
        )
        return
    assert mode is not None
    cache.write_mode(parse_mode(mode))
    click.echo(
        f"{config.channel} is now {mode.upper()} for every process using {cache.dir}"
        + (" (no store reads; `anvil sync` updates it)." if mode == "frozen" else ".")
    )


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print status() as JSON.")
@click.pass_context
@_friendly
def status(ctx: click.Context, as_json: bool) -> None:
    """Show what is served, the mode and its source, and the last sync and error."""
    with _client(ctx) as client:
        report = client.status()
    if as_json:
        click.echo(json.dumps(report, indent=2, sort_keys=True))
        return
    for label, value in _status_lines(report):
        click.echo(f"{label:<12}{value}")


def _status_lines(report: Status) -> Iterable[tuple[str, str]]:
    def show(value: object) -> str:
        return "-" if value is None else str(value)

    yield "project", report["project_id"]
    yield "channel", report["channel"]
    yield "mode", f"{report['mode']} ({report['mode_source']})"
    if report["version"] is None:
        yield "version", "- (nothing served yet)"
    else:
        yield (
            "version",
            f"{report['version']} (sequence {report['sequence']}, {report['prompts']} prompts, "
            f"from {report['source']})",
        )
        for entry in report["releases"]:
            yield (
                "set",
                f"{entry['name'] or entry['prompt_set_id']} {entry['version']} "
                f"({entry['prompts']} prompts, id {entry['prompt_set_id']}, "
                f"content {entry['content_sha256'][:12]})",
            )
    yield "published", show(report["published_at"])
    yield "expires", show(report["expires_at"])
    yield "last sync", show(report["last_sync"])
    yield "last check", show(report["last_check"])
    yield "stale", "yes" if report["stale"] else "no"
    yield "last error", show(report["last_error"])
    yield "instance", report["instance_id"]
    yield "store", report["store"]
    yield "cache", report["cache_dir"]


@cli.command()
@click.argument("prompt_id")
@click.option("-v", "--var", "variables", multiple=True, metavar="KEY=VALUE", help="A string.")
@click.option(
    "-j", "--json-var", "json_variables", multiple=True, metavar="KEY=JSON", help="A JSON value."
)
@click.option("--messages", "as_messages", is_flag=True, help="Print chat messages as JSON.")
@click.pass_context
@_friendly
def render(
    ctx: click.Context,
    prompt_id: str,
    variables: tuple[str, ...],
    json_variables: tuple[str, ...],
    as_messages: bool,
) -> None:
    """Render a prompt from the local cache (no network)."""
    values: dict[str, Any] = {}
    for item in variables:
        key, value = _split_assignment(item, "-v")
        values[key] = value
    for item in json_variables:
        key, raw = _split_assignment(item, "-j")
        try:
            values[key] = json.loads(raw)
        except ValueError:
            raise click.BadParameter(f"{key}: {raw[:60]!r} is not JSON", param_hint="-j") from None
    with _client(ctx) as client:
        if as_messages:
            click.echo(json.dumps(client.messages(prompt_id, **values), indent=2))
        else:
            click.echo(client.prompt(prompt_id, **values), nl=False)
            click.echo("")


def _split_assignment(item: str, flag: str) -> tuple[str, str]:
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise click.BadParameter(f"{item[:60]!r} is not KEY=VALUE", param_hint=flag)
    return key, value


def main() -> None:
    """Entry point of the ``anvil`` command."""
    cli(prog_name="anvil")


__all__ = ["cli", "main"]
