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
``ANVIL_TRUSTED_KEYS`` (comma-separated public keys).
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import click
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from anvil_client.errors import AnvilError, ConfigError, ValidationError
from anvil_client.stores import write_atomically
from anvil_client.wire import (
    RELEASE_NAME_MAX,
    AccessToken,
    Release,
    generate_private_key,
    key_id,
    load_private_key,
    load_private_key_file,
    public_key_text,
    write_private_key_file,
)
from publisher._bundle import BuiltBundle, build_bundle, header_problems
from publisher._files import load_prompt_files
from publisher._gc import DEFAULT_KEEP_HISTORY, GcReport, collect_garbage
from publisher._inspect import InspectedRelease, Inspection, export_bootstrap, inspect
from publisher._layout import parse_duration
from publisher._publish import Publisher, PublishResult, read_history

__all__ = ["cli", "main"]

F = TypeVar("F", bound=Callable[..., Any])
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


# ------------------------------------------------------------------ shared options


def _store_options(func: F) -> F:
    func = click.option(
        "--project-id", required=True, envvar="ANVIL_PROJECT_ID", help="Project UUID."
    )(func)
    return click.option(
        "--store",
        "store_url",
        required=True,
        envvar="ANVIL_STORE",
        help="Store URL: s3://bucket/prefix, file:///path.",
    )(func)


def _signing_options(func: F) -> F:
    return click.option(
        "--signing-key",
        "signing_key_path",
        type=click.Path(dir_okay=False),
        help="Ed25519 PEM file (or the PEM text in ANVIL_SIGNING_KEY).",
    )(func)


def _recipient_options(func: F) -> F:
    func = click.option(
        "--plaintext", is_flag=True, help="Publish unencrypted (no recipients) on purpose."
    )(func)
    func = click.option(
        "--recipients-file",
        type=click.Path(dir_okay=False),
        help="File of ACCESS_TOKENs, one per line ('#' starts a comment).",
    )(func)
    return click.option(
        "--recipient",
        "recipient_texts",
        multiple=True,
        metavar="TOKEN",
        help="ACCESS_TOKEN that may decrypt (repeatable; or ANVIL_RECIPIENTS).",
    )(func)


def _json_option(func: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")(func)


def _expiry_option(func: F) -> F:
    return click.option(
        "--expires-in", metavar="DURATION", help="Pointer lifetime, like 30d, 12h or 90m."
    )(func)


def _signing_key(path: str | None) -> Ed25519PrivateKey:
    if path:
        return load_private_key_file(path)
    pem = os.environ.get("ANVIL_SIGNING_KEY", "")
    if not pem.strip():
        raise ConfigError("no signing key: pass --signing-key KEY.pem or set ANVIL_SIGNING_KEY")
    if "-----BEGIN" not in pem:
        raise ConfigError("ANVIL_SIGNING_KEY must hold the PEM text of the key, not a path")
    return load_private_key(pem)


def _recipients(texts: Sequence[str], path: str | None, *, from_env: bool) -> list[str]:
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


def _trusted_keys(keys: Sequence[str]) -> list[str]:
    found = [k for k in keys if k.strip()]
    if not found:
        env = os.environ.get("ANVIL_TRUSTED_KEYS", "")
        found = [k.strip() for k in env.split(",") if k.strip()]
    return found


def _access_token(text: str | None) -> str | None:
    return text or os.environ.get("ANVIL_ACCESS_TOKEN") or None


def _echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False))


def _access_token_option(func: F) -> F:
    return click.option(
        "--access-token",
        help="ACCESS_TOKEN that can decrypt the channel's entries, to re-encrypt them "
        "(or ANVIL_ACCESS_TOKEN).",
    )(func)


def _listing(releases: Sequence[Release]) -> str:
    return ", ".join(f"{r.name or r.prompt_set_id} {r.version}" for r in releases)


def _echo_result(result: PublishResult, as_json: bool, headline: str) -> None:
    if as_json:
        _echo_json(result.to_json())
        return
    encodings = {r.object.encoding for r in result.pointer.all_releases()}
    if encodings == {"jwe"}:
        count = len(result.recipients)
        sealed = f"encrypted for {count} recipient{'s' * (count != 1)}" if count else "encrypted"
    else:
        sealed = "UNENCRYPTED" if encodings == {"json"} else "partly UNENCRYPTED"
    reused = ", reused" if result.object_path and result.reused_object else ""
    rollout = f", rollout {result.rollout_percent}%" if result.rollout_percent is not None else ""
    click.echo(f"{headline} as sequence {result.sequence} ({sealed}{rollout}{reused})")
    if result.object_path is not None:
        click.echo(f"  content_sha256 {result.content_sha256}")
        click.echo(f"  object         {result.object_path} ({result.object_size} bytes)")
    if result.expires_at:
        click.echo(f"  expires        {result.expires_at}")
    click.echo(f"  changes        {'; '.join(result.changes) or 'none'}")
    click.echo(f"  serves         {_listing(result.releases)}")
    if result.pointer.rollout is not None:
        click.echo(f"  others serve   {_listing(result.pointer.rollout.previous)}")


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
@click.option("--project-id", required=True, envvar="ANVIL_PROJECT_ID", help="Project UUID.")
@click.option("--version", "version", required=True, help="Semantic version, like 1.4.0.")
@click.option("--prompt-set-id", help="Default: a UUID5 of the project and directory name.")
@click.option("--out", required=True, help="Bundle file to write ('-' for stdout).")
@_json_option
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
        _echo_json(summary)
    else:
        click.echo(
            f"built {built.version} ({built.prompt_count} prompts, {len(built.data)} bytes) "
            f"into {out}; content_sha256 {built.content_sha256}"
        )


@cli.command()
@click.argument("source", type=click.Path())
@_store_options
@click.option("--channel", required=True, help="Channel, like production.")
@click.option("--version", "version", help="Semantic version (required for a directory).")
@click.option("--prompt-set-id", help="Default: a UUID5 of the project and directory name.")
@click.option(
    "--name",
    help="Display name of the prompt set's entry. Default: the name the channel's entry "
    "has, else the directory's name, else the file's stem.",
)
@_signing_options
@_recipient_options
@_access_token_option
@_expiry_option
@click.option("--rollout-percent", type=click.IntRange(0, 100), help="Gradual rollout share.")
@_json_option
def publish(
    source: str,
    store_url: str,
    project_id: str,
    channel: str,
    version: str | None,
    prompt_set_id: str | None,
    name: str | None,
    signing_key_path: str | None,
    recipient_texts: tuple[str, ...],
    recipients_file: str | None,
    access_token: str | None,
    plaintext: bool,
    expires_in: str | None,
    rollout_percent: int | None,
    as_json: bool,
) -> None:
    """Publish PROMPTS_DIR or BUNDLE.json as its prompt set's entry of a channel.

    The channel's other prompt sets are kept; when the recipients change they are
    re-encrypted too (reading them may need --access-token). A prompt id that another set
    of the channel has is refused.
    """
    key = _signing_key(signing_key_path)
    recipients = _recipients(recipient_texts, recipients_file, from_env=not plaintext)
    expires = parse_duration(expires_in) if expires_in else None
    path = Path(source)
    if path.is_dir():
        built = _bundle_from_directory(path, project_id, version, prompt_set_id)
        default_name = path.resolve().name
    elif path.is_file():
        built = BuiltBundle.from_bytes(path.read_bytes(), project_id=project_id)
        default_name = path.stem
        for flag, given, actual in (
            ("--version", version, built.version),
            ("--prompt-set-id", prompt_set_id, built.prompt_set_id),
        ):
            if given and given != actual:
                raise ConfigError(f"{flag} {given} differs from the bundle's {actual}")
    else:
        raise ConfigError(f"{source} is neither a prompt directory nor a bundle file")
    with Publisher(store_url, project_id=project_id, signing_key=key) as publisher:
        result = publisher.publish(
            built,
            channel,
            name=name,
            default_name=default_name[:RELEASE_NAME_MAX],
            recipients=recipients,
            plaintext=plaintext,
            expires_at=expires,
            rollout_percent=rollout_percent,
            access_token=_access_token(access_token),
        )
    _echo_result(
        result,
        as_json,
        f"published {result.name or result.prompt_set_id} {result.version} to {channel}",
    )


@cli.command()
@_store_options
@click.option("--channel", required=True)
@click.option("--prompt-set-id", required=True, help="The prompt set whose entry to drop.")
@_signing_options
@_expiry_option
@_json_option
def remove(
    store_url: str,
    project_id: str,
    channel: str,
    prompt_set_id: str,
    signing_key_path: str | None,
    expires_in: str | None,
    as_json: bool,
) -> None:
    """Stop serving one prompt set on a channel (a new sequence without its entry).

    The other entries are kept as they are; the last entry of a channel cannot be removed.
    """
    key = _signing_key(signing_key_path)
    with Publisher(store_url, project_id=project_id, signing_key=key) as publisher:
        if expires_in:
            result = publisher.remove(channel, prompt_set_id, expires_at=parse_duration(expires_in))
        else:
            result = publisher.remove(channel, prompt_set_id)
    _echo_result(result, as_json, f"removed prompt set {prompt_set_id} from {channel}")


@cli.command()
@_store_options
@click.option("--channel", required=True)
@click.option("--to-sequence", required=True, type=click.IntRange(min=1))
@_signing_options
@click.option("--access-token", help="Token that can decrypt the old entries (or env).")
@_recipient_options
@_expiry_option
@_json_option
def rollback(
    store_url: str,
    project_id: str,
    channel: str,
    to_sequence: int,
    signing_key_path: str | None,
    access_token: str | None,
    recipient_texts: tuple[str, ...],
    recipients_file: str | None,
    plaintext: bool,
    expires_in: str | None,
    as_json: bool,
) -> None:
    """Serve the whole list of history entry N again, re-encrypted, as a new sequence."""
    key = _signing_key(signing_key_path)
    recipients = _recipients(recipient_texts, recipients_file, from_env=not plaintext)
    expires = parse_duration(expires_in) if expires_in else None
    with Publisher(store_url, project_id=project_id, signing_key=key) as publisher:
        result = publisher.rollback(
            channel,
            to_sequence=to_sequence,
            recipients=recipients,
            plaintext=plaintext,
            access_token=_access_token(access_token),
            expires_at=expires,
        )
    _echo_result(result, as_json, f"rolled {channel} back to the list of sequence {to_sequence}")


@cli.command()
@_store_options
@click.option("--from", "from_channel", required=True, help="Source channel, like staging.")
@click.option("--to", "to_channel", required=True, help="Target channel, like production.")
@click.option(
    "--prompt-set-id",
    help="Copy only this set's entry into the target's list (default: the whole list).",
)
@_signing_options
@click.option(
    "--access-token",
    help="Token that can decrypt the entries: to re-encrypt them, or (with --prompt-set-id) "
    "to check prompt ids against the target's other sets (or ANVIL_ACCESS_TOKEN).",
)
@_recipient_options
@_expiry_option
@_json_option
def promote(
    store_url: str,
    project_id: str,
    from_channel: str,
    to_channel: str,
    prompt_set_id: str | None,
    signing_key_path: str | None,
    access_token: str | None,
    recipient_texts: tuple[str, ...],
    recipients_file: str | None,
    plaintext: bool,
    expires_in: str | None,
    as_json: bool,
) -> None:
    """Copy what one channel serves to another, signed anew.

    The whole list replaces the target's; with --prompt-set-id only that set's entry is
    copied and the target's other sets are kept.
    """
    key = _signing_key(signing_key_path)
    # Without recipients the very object is promoted; ANVIL_RECIPIENTS does not apply here.
    recipients = _recipients(recipient_texts, recipients_file, from_env=False)
    expires = parse_duration(expires_in) if expires_in else None
    with Publisher(store_url, project_id=project_id, signing_key=key) as publisher:
        result = publisher.promote(
            from_channel,
            to_channel,
            prompt_set_id=prompt_set_id,
            recipients=recipients or None,
            plaintext=plaintext,
            access_token=_access_token(access_token),
            expires_at=expires,
        )
    what = "the list" if prompt_set_id is None else f"prompt set {prompt_set_id}"
    _echo_result(result, as_json, f"promoted {what} from {from_channel} to {to_channel}")


@cli.command()
@_store_options
@click.option("--channel", required=True)
@click.option("--trusted-key", "trusted", multiple=True, help="Verify with this public key.")
@_json_option
def history(
    store_url: str, project_id: str, channel: str, trusted: tuple[str, ...], as_json: bool
) -> None:
    """List a channel's published sequences, oldest first."""
    keys = _trusted_keys(trusted)
    entries = read_history(store_url, project_id, channel, keys or None)
    if as_json:
        _echo_json(
            {
                "project_id": project_id,
                "channel": channel,
                "entries": [e.to_json() for e in entries],
            }
        )
        return
    if not entries:
        click.echo(f"channel {channel} has no history")
        return
    click.echo(f"{'SEQ':>6}  {'PUBLISHED':20}  {'CHECK':10}  NOTE")
    for entry in entries:
        pointer = entry.pointer
        check = {True: "verified", False: "INVALID", None: "unchecked"}[entry.verified]
        note = entry.error or ""
        if pointer is not None and pointer.rollout is not None:
            note = f"rollout {pointer.rollout.percent}% {note}".strip()
        published = "?" if pointer is None else pointer.published_at
        click.echo(f"{entry.sequence:>6}  {published:20}  {check:10}  {note}".rstrip())
        for release in entry.releases:
            plain = "  unencrypted" if release.object.encoding == "json" else ""
            click.echo(
                f"{'':8}{release.name or '-'}  {release.version}  "
                f"{release.content_sha256[:12]}  (set {release.prompt_set_id}){plain}"
            )


def _entry_lines(entry: InspectedRelease) -> list[str]:
    lines = [
        f"  {entry.name or entry.prompt_set_id} {entry.version} (prompt set {entry.prompt_set_id})",
        f"    content_sha256 {entry.content_sha256}",
        f"    object         {entry.object_path} ({entry.object_size} bytes, "
        f"{entry.encoding}, sha256 verified)",
    ]
    if entry.recipients is not None:
        lines.append(f"    recipients     {', '.join(entry.recipients)}")
    if entry.prompt_count is not None:
        lines.append(f"    prompts        {entry.prompt_count} (decrypted and hash-checked)")
    return lines


def _inspection_lines(result: Inspection) -> list[str]:
    count = len(result.releases)
    lines = [
        f"channel {result.channel}: sequence {result.sequence}, {count} prompt "
        f"set{'s' * (count != 1)}",
        f"  signature      verified with key {result.keyid}",
        f"  published      {result.published_at}",
        f"  expires        {result.expires_at or 'never'}"
        + ("  (EXPIRED: clients reject this pointer)" if result.expired else ""),
    ]
    for entry in result.releases:
        lines += _entry_lines(entry)
    if result.previous is not None:
        lines.append(f"  rollout {result.rollout_percent}%; the other instances serve:")
        for entry in result.previous:
            lines += _entry_lines(entry)
    return lines


@cli.command("inspect")
@_store_options
@click.option("--channel", required=True)
@click.option("--trusted-key", "trusted", multiple=True, help="Public key (ed25519:… or PEM).")
@click.option("--access-token", help="Decrypt and summarise the bundle (or env).")
@_json_option
def inspect_command(
    store_url: str,
    project_id: str,
    channel: str,
    trusted: tuple[str, ...],
    access_token: str | None,
    as_json: bool,
) -> None:
    """Verify what a channel serves: signature, hashes, and with a token the bundle."""
    keys = _trusted_keys(trusted)
    if not keys:
        raise ConfigError("inspect needs --trusted-key (or ANVIL_TRUSTED_KEYS)")
    result = inspect(store_url, project_id, channel, keys, _access_token(access_token))
    if as_json:
        _echo_json(result.to_json())
    else:
        click.echo("\n".join(_inspection_lines(result)))


@cli.command("export")
@_store_options
@click.option("--channel", required=True)
@click.option("--trusted-key", "trusted", multiple=True, help="Public key (ed25519:… or PEM).")
@click.option("--access-token", help="Token that can decrypt the bundle (or env).")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="File to write.")
def export_command(
    store_url: str,
    project_id: str,
    channel: str,
    trusted: tuple[str, ...],
    access_token: str | None,
    out: str,
) -> None:
    """Write a verified bootstrap file (pointer + every plaintext bundle) to ship with an app."""
    keys = _trusted_keys(trusted)
    if not keys:
        raise ConfigError("export needs --trusted-key (or ANVIL_TRUSTED_KEYS)")
    data = export_bootstrap(store_url, project_id, channel, keys, _access_token(access_token))
    write_atomically(Path(out).resolve(), data)
    click.echo(f"wrote bootstrap {out} ({len(data)} bytes; it holds plaintext prompts)")


def _gc_lines(report: GcReport, min_age: str) -> list[str]:
    count = len(report.unreferenced)
    objects = f"{count} bundle object{'s' * (count != 1)} ({report.reclaimable_bytes} bytes)"
    verb = "would delete" if report.dry_run else "deleted"
    lines = [
        f"{'dry run: ' if report.dry_run else ''}{verb} {objects} of project "
        f"{report.project_id} in {report.store_url}"
    ]
    for obj in report.unreferenced:
        lines.append(f"  {obj.path}  ({'?' if obj.size is None else obj.size} bytes)")
    channels = ", ".join(report.channels) or "none"
    lines.append(
        f"kept {len(report.kept)} named by the pointers of channels {channels} and their last "
        f"{report.keep_history} history entries"
    )
    if report.too_recent:
        lines.append(f"kept {len(report.too_recent)} unnamed object(s) younger than {min_age}")
    if report.ignored:
        lines.append(f"ignored {len(report.ignored)} key(s) that are not bundle objects")
    if report.dry_run and report.unreferenced:
        lines.append("run again with --delete to delete them")
    return lines


@cli.command("gc")
@_store_options
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
@click.option("--trusted-key", "trusted", multiple=True, help="Public key (ed25519:… or PEM).")
@click.option("--delete", is_flag=True, help="Delete; without it gc only reports (dry run).")
@_json_option
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
    keys = _trusted_keys(trusted)
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
        _echo_json(report.to_json())
    else:
        click.echo("\n".join(_gc_lines(report, min_age)))
