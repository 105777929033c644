"""``anvil-publish``: build, publish, remove, roll back, promote, inspect and gc prompt bundles.

    $ anvil-publish keygen --out signing.pem
    $ anvil-publish publish prompts/ --store s3://bucket/anvil --project-id P --channel staging \\
          --version 1.4.0 --signing-key signing.pem --recipients-file tokens.txt --json

A channel serves every prompt set of the project (one entry per set); publishing one set
keeps the others, ``remove`` drops one.

Thin commands over the library: they parse, call it and print. Every failure ends as one
clear sentence on stderr and a non-zero exit (1 for errors, 2 for usage), never a traceback.
Secrets may come from the environment: ``ANVIL_SIGNING_KEY`` (the PEM text),
``ANVIL_RECIPIENTS`` (comma-separated ACCESS_TOKENs), ``ANVIL_ACCESS_TOKEN`` and
``ANVIL_TRUSTED_KEYS`` (comma-separated public keys). The options commands share are declared
and resolved (secrets included) in ``_cli_options``; what they print is in ``_cli_output``.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import click

from anvil_client.errors import AnvilError, ConfigError, ValidationError
from anvil_client.stores import write_atomically
from anvil_client.wire import (
    RELEASE_NAME_MAX,
    AccessToken,
    generate_private_key,
    key_id,
    public_key_text,
    write_private_key_file,
)
from publisher._bundle import BuiltBundle, build_bundle, header_problems
from publisher._cli_options import (
    Move,
    Reading,
    access_token_option,
    expiry_option,
    json_option,
    pass_move,
    project_id_option,
    reading_options,
    recipient_options,
    reencrypting_options,
    signing_options,
    store_options,
    trusted_key_option,
    trusted_keys_from,
)
from publisher._cli_output import echo_json, gc_lines, history_lines, inspection_lines
from publisher._files import load_prompt_files
from publisher._gc import DEFAULT_KEEP_HISTORY, collect_garbage
from publisher._history import read_history
from publisher._inspect import export_bootstrap, inspect
from publisher._time import parse_duration

__all__ = ["cli", "main"]

_MAX_PROBLEMS_SHOWN = 50


class _Group(click.Group):
    """Maps every error to one sentence on stderr: the only ``except`` of the CLI."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except ValidationError as e:
            raise click.ClickException(_problems_text(e)) from None
        except AnvilError as e:
            raise click.ClickException(_sentence(str(e))) from None
        except OSError as e:
            raise click.ClickException(_sentence(_os_error_text(e))) from None
        except KeyboardInterrupt:
            raise click.exceptions.Abort() from None
        except Exception as e:  # the CLI boundary: no traceback, ever
            raise click.ClickException(
                _sentence(f"unexpected error ({type(e).__name__}): {e}")
            ) from None


def _sentence(text: str) -> str:
    text = text.strip()
    return text if text.endswith((".", "!", "?")) else text + "."


def _problems_text(error: ValidationError) -> str:
    if len(error.problems) == 1:
        return _sentence(error.problems[0])
    lines = [f"{len(error.problems)} problems found; nothing was written:"]
    lines += [f"  - {problem}" for problem in error.problems[:_MAX_PROBLEMS_SHOWN]]
    if len(error.problems) > _MAX_PROBLEMS_SHOWN:
        lines.append(f"  ... and {len(error.problems) - _MAX_PROBLEMS_SHOWN} more")
    return "\n".join(lines)


def _os_error_text(error: OSError) -> str:
    where = f"{error.filename}: " if error.filename else ""
    return f"{where}{error.strerror or error}"


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="anvil-prompts", prog_name="anvil-publish")
def cli() -> None:
    """Publish prompt bundles to an Anvil store: signed pointers, encrypted bundles."""


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``anvil-publish``."""
    cli.main(args=list(argv) if argv is not None else None, prog_name="anvil-publish")


# ----------------------------------------------------------------------- commands


@cli.command()
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="PEM file to write.")
def keygen(out: str) -> None:
    """Create an Ed25519 signing key (PEM, mode 0600); print its public key last."""
    key = generate_private_key()
    write_private_key_file(key, out)
    public = key.public_key()
    click.echo(f"wrote signing key {out} (mode 0600, keep it secret); keyid {key_id(public)}")
    click.echo("public key for the clients' trusted_keys:")
    click.echo(public_key_text(public))


@cli.group()
def token() -> None:
    """ACCESS_TOKENs."""


@token.command("new")
def token_new() -> None:
    """Print a new random ACCESS_TOKEN (give it to the application and to --recipient)."""
    click.echo(AccessToken.generate().text)


def _prompt_set_id(project_id: str, directory: Path) -> str:
    """A UUID5 of the project and the directory name, stable across CI runs."""
    try:
        namespace = uuid.UUID(project_id)
    except ValueError:
        namespace = uuid.uuid5(uuid.NAMESPACE_URL, f"anvil:project:{project_id}")
    return str(uuid.uuid5(namespace, directory.resolve().name))


def _bundle_from_directory(
    directory: Path, project_id: str, version: str | None, prompt_set_id: str | None
) -> BuiltBundle:
    if not version:
        raise ConfigError("--version is required when publishing a prompt directory")
    prompt_set_id = prompt_set_id or _prompt_set_id(project_id, directory)
    try:
        prompts = load_prompt_files(directory)
    except ValidationError as e:
        header = header_problems(
            project_id=project_id, version=version, prompt_set_id=prompt_set_id
        )
        raise ValidationError(header + e.problems) from None
    return build_bundle(
        prompts, project_id=project_id, version=version, prompt_set_id=prompt_set_id
    )


@cli.command()
@click.argument("prompts_dir", type=click.Path(file_okay=False))
@project_id_option
@click.option("--version", "version", required=True, help="Semantic version, like 1.4.0.")
@click.option("--prompt-set-id", help="Default: a UUID5 of the project and directory name.")
@click.option("--out", required=True, help="Bundle file to write ('-' for stdout).")
@json_option
def build(
    prompts_dir: str,
    project_id: str,
    version: str,
    prompt_set_id: str | None,
    out: str,
    as_json: bool,
) -> None:
    """Validate a prompt directory and write its canonical bundle JSON."""
    built = _bundle_from_directory(Path(prompts_dir), project_id, version, prompt_set_id)
    if out == "-":
        sys.stdout.buffer.write(built.data)
        sys.stdout.buffer.flush()
        return
    write_atomically(Path(out).resolve(), built.data)
    summary = {
        "out": out,
        "version": built.version,
        "prompt_set_id": built.prompt_set_id,
        "content_sha256": built.content_sha256,
        "prompt_count": built.prompt_count,
        "size": len(built.data),
    }
    if as_json:
        echo_json(summary)
    else:
        click.echo(
            f"built {built.version} ({built.prompt_count} prompts, {len(built.data)} bytes) "
            f"into {out}; content_sha256 {built.content_sha256}"
        )


@cli.command()
@click.argument("source", type=click.Path())
@store_options
@click.option("--channel", required=True, help="Channel, like production.")
@click.option("--version", "version", help="Semantic version (required for a directory).")
@click.option("--prompt-set-id", help="Default: a UUID5 of the project and directory name.")
@click.option(
    "--name",
    help="Display name of the prompt set's entry. Default: the name the channel's entry "
    "has, else the directory's name, else the file's stem.",
)
@signing_options
@recipient_options
@access_token_option(
    "ACCESS_TOKEN that can decrypt the channel's entries, to re-encrypt them "
    "(or ANVIL_ACCESS_TOKEN)."
)
@expiry_option
@click.option("--rollout-percent", type=click.IntRange(0, 100), help="Gradual rollout share.")
@json_option
@pass_move()
def publish(
    move: Move,
    source: str,
    channel: str,
    version: str | None,
    prompt_set_id: str | None,
    name: str | None,
    rollout_percent: int | None,
) -> None:
    """Publish PROMPTS_DIR or BUNDLE.json as its prompt set's entry of a channel.

    The channel's other prompt sets are kept; when the recipients change they are
    re-encrypted too (reading them may need --access-token). A prompt id that another set
    of the channel has is refused.
    """
    built, default_name = _bundle_from_source(source, move.project_id, version, prompt_set_id)
    with move.publisher() as publisher:
        result = publisher.publish(
            built,
            channel,
            name=name,
            default_name=default_name[:RELEASE_NAME_MAX],
            recipients=move.recipients,
            plaintext=move.plaintext,
            expires_at=move.expires,
            rollout_percent=rollout_percent,
            access_token=move.access_token,
        )
    move.echo(
        result, f"published {result.name or result.prompt_set_id} {result.version} to {channel}"
    )


def _bundle_from_source(
    source: str, project_id: str, version: str | None, prompt_set_id: str | None
) -> tuple[BuiltBundle, str]:
    """The bundle of a prompt directory or bundle file, and the entry's default name."""
    path = Path(source)
    if path.is_dir():
        built = _bundle_from_directory(path, project_id, version, prompt_set_id)
        return built, path.resolve().name
    if not path.is_file():
        raise ConfigError(f"{source} is neither a prompt directory nor a bundle file")
    built = BuiltBundle.from_bytes(path.read_bytes(), project_id=project_id)
    for flag, given, actual in (
        ("--version", version, built.version),
        ("--prompt-set-id", prompt_set_id, built.prompt_set_id),
    ):
        if given and given != actual:
            raise ConfigError(f"{flag} {given} differs from the bundle's {actual}")
    return built, path.stem


@cli.command()
@store_options
@click.option("--channel", required=True)
@click.option("--prompt-set-id", required=True, help="The prompt set whose entry to drop.")
@signing_options
@expiry_option
@json_option
@pass_move()
def remove(move: Move, channel: str, prompt_set_id: str) -> None:
    """Stop serving one prompt set on a channel (a new sequence without its entry).

    The other entries are kept as they are; the last entry of a channel cannot be removed.
    """
    with move.publisher() as publisher:
        if move.expires is not None:
            result = publisher.remove(channel, prompt_set_id, expires_at=move.expires)
        else:
            result = publisher.remove(channel, prompt_set_id)
    move.echo(result, f"removed prompt set {prompt_set_id} from {channel}")


@cli.command()
@store_options
@click.option("--channel", required=True)
@click.option("--to-sequence", required=True, type=click.IntRange(min=1))
@reencrypting_options("Token that can decrypt the old entries (or env).")
def rollback(move: Move, channel: str, to_sequence: int) -> None:
    """Serve the whole list of history entry N again, re-encrypted, as a new sequence."""
    with move.publisher() as publisher:
        result = publisher.rollback(
            channel,
            to_sequence=to_sequence,
            recipients=move.recipients,
            plaintext=move.plaintext,
            access_token=move.access_token,
            expires_at=move.expires,
        )
    move.echo(result, f"rolled {channel} back to the list of sequence {to_sequence}")


@cli.command()
@store_options
@click.option("--from", "from_channel", required=True, help="Source channel, like staging.")
@click.option("--to", "to_channel", required=True, help="Target channel, like production.")
@click.option(
    "--prompt-set-id",
    help="Copy only this set's entry into the target's list (default: the whole list).",
)
# Without recipients the very object is promoted; ANVIL_RECIPIENTS does not apply here.
@reencrypting_options(
    "Token that can decrypt the entries: to re-encrypt them, or (with --prompt-set-id) "
    "to check prompt ids against the target's other sets (or ANVIL_ACCESS_TOKEN).",
    recipients_from_env=False,
)
def promote(move: Move, from_channel: str, to_channel: str, prompt_set_id: str | None) -> None:
    """Copy what one channel serves to another, signed anew.

    The whole list replaces the target's; with --prompt-set-id only that set's entry is
    copied and the target's other sets are kept.
    """
    with move.publisher() as publisher:
        result = publisher.promote(
            from_channel,
            to_channel,
            prompt_set_id=prompt_set_id,
            recipients=move.recipients or None,
            plaintext=move.plaintext,
            access_token=move.access_token,
            expires_at=move.expires,
        )
    what = "the list" if prompt_set_id is None else f"prompt set {prompt_set_id}"
    move.echo(result, f"promoted {what} from {from_channel} to {to_channel}")


@cli.command()
@store_options
@click.option("--channel", required=True)
@trusted_key_option("Verify with this public key.")
@json_option
def history(
    store_url: str, project_id: str, channel: str, trusted: tuple[str, ...], as_json: bool
) -> None:
    """List a channel's published sequences, oldest first."""
    keys = trusted_keys_from(trusted)
    entries = read_history(store_url, project_id, channel, keys or None)
    if as_json:
        echo_json(
            {
                "project_id": project_id,
                "channel": channel,
                "entries": [e.to_json() for e in entries],
            }
        )
        return
    click.echo("\n".join(history_lines(channel, entries)))


@cli.command("inspect")
@reading_options("inspect", "Decrypt and summarise the bundle (or env).")
@json_option
def inspect_command(reading: Reading, as_json: bool) -> None:
    """Verify what a channel serves: signature, hashes, and with a token the bundle."""
    result = inspect(*reading.arguments)
    if as_json:
        echo_json(result.to_json())
    else:
        click.echo("\n".join(inspection_lines(result)))


@cli.command("export")
@reading_options("export", "Token that can decrypt the bundle (or env).")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="File to write.")
def export_command(reading: Reading, out: str) -> None:
    """Write a verified bootstrap file (pointer + every plaintext bundle) to ship with an app."""
    data = export_bootstrap(*reading.arguments)
    write_atomically(Path(out).resolve(), data)
    click.echo(f"wrote bootstrap {out} ({len(data)} bytes; it holds plaintext prompts)")


@cli.command("gc")
@store_options
@click.option(
    "--channel",
    "channels",
    multiple=True,
    help="A channel that must have a pointer (repeatable); every channel found counts anyway.",
)
@click.option(
    "--keep-history",
    type=click.IntRange(min=0),
    default=DEFAULT_KEEP_HISTORY,
    show_default=True,
    help="Keep the bundles of each channel's last N history entries (rollback targets).",
)
@click.option(
    "--min-age",
    default="1h",
    show_default=True,
    metavar="DURATION",
    help="Keep unnamed objects younger than this (a publish writes its object first); 0 for none.",
)
@trusted_key_option()
@click.option("--delete", is_flag=True, help="Delete; without it gc only reports (dry run).")
@json_option
def gc_command(
    store_url: str,
    project_id: str,
    channels: tuple[str, ...],
    keep_history: int,
    min_age: str,
    trusted: tuple[str, ...],
    delete: bool,
    as_json: bool,
) -> None:
    """Delete bundle objects that no pointer and no kept history entry names (dry run by default).

    Every pointer and kept history entry is verified with the trusted keys first; if one does
    not verify, nothing is deleted.
    """
    keys = trusted_keys_from(trusted)
    if not keys:
        raise ConfigError("gc needs --trusted-key (or ANVIL_TRUSTED_KEYS)")
    age = timedelta(0) if min_age.strip() == "0" else parse_duration(min_age)
    report = collect_garbage(
        store_url,
        project_id,
        keys,
        channels=channels,
        keep_history=keep_history,
        min_age=age,
        delete=delete,
    )
    if as_json:
        echo_json(report.to_json())
    else:
        click.echo("\n".join(gc_lines(report, min_age)))
