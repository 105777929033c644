"""The project's encryption keys (its active ACCESS_TOKENs) and the plaintext of bundles: from the
FORGE's versions, or decrypted from the store for an entry published elsewhere.

One part of the publishing services; :mod:`forge_app.services.publishing` gathers their API.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select

from anvil_client.errors import (
    AnvilError,
    ConfigError,
    DecryptionError,
    NotFound,
    ValidationError,
)
from anvil_client.wire import (
    Release,
    fetch_object,
    open_object,
    recipient_ids,
)
from forge_app.errors import ForgeError, Kind
from forge_app.extensions import db
from forge_app.models import (
    Project,
    PromptSet,
    PromptSetVersion,
)
from forge_app.models.distribution import (
    AccessToken,
)
from forge_app.services.channels import (
    project_channels,
)
from forge_app.services.tokens import active_tokens, wire_token
from publisher import (
    BuiltBundle,
    BundleSource,
    Publisher,
)


def _keks(project: Project, *, excluding: AccessToken | None = None) -> dict[str, bytes]:
    tokens = [t for t in active_tokens(project.id) if excluding is None or t.id != excluding.id]
    try:
        return {t.token_id: wire_token(t).kek() for t in tokens}
    except ConfigError as e:
        raise ForgeError(str(e), kind=Kind.UNAVAILABLE) from e


def _require_keks(project: Project) -> dict[str, bytes]:
    keks = _keks(project)
    if not keks:
        raise ForgeError(
            "This project has no ACCESS_TOKEN yet, and every release is encrypted for the "
            "project's tokens: generate one in Tokens first.",
        )
    return keks


def _version_for(project: Project, content_sha256: str) -> PromptSetVersion | None:
    return db.session.scalar(
        select(PromptSetVersion)
        .join(PromptSet, PromptSet.id == PromptSetVersion.prompt_set_id)
        .where(
            PromptSet.project_id == project.id,
            PromptSetVersion.content_sha256 == content_sha256,
        )
        .order_by(PromptSetVersion.id.desc())
        .limit(1)
    )


def _bundle_of(version: PromptSetVersion) -> BuiltBundle:
    try:
        return BuiltBundle.from_bytes(
            version.bundle_bytes, project_id=str(version.prompt_set.project_id)
        )
    except ValidationError as e:
        raise ForgeError(
            f"Version {version.version} does not validate, so it cannot be published.",
            problems=list(e.problems),
        ) from e


def _project_tokens(project: Project) -> list[AccessToken]:
    return list(db.session.scalars(select(AccessToken).where(AccessToken.project_id == project.id)))


def _decrypt_from_store(project: Project, pub: Publisher, release: Release) -> bytes:
    """The exact bundle bytes of an entry the FORGE has no version of (published by CI): the
    object, fetched and checked with :func:`anvil_client.wire.fetch_object`, opened with one of
    the project's tokens (revoked ones too: the FORGE keeps their secrets).

    Raises:
        ForgeError: if no token of the project opens it, or it does not check out.
    """
    try:
        data = fetch_object(pub.store, release)
        if release.object.encoding == "json":
            return open_object(release, data, None)
        readers = set(recipient_ids(data))
        for token in _project_tokens(project):
            if token.token_id in readers:
                return open_object(release, data, wire_token(token))
        raise DecryptionError("no token of this project can decrypt it")
    except AnvilError as e:
        raise ForgeError(
            f"The FORGE cannot recover the content of {release.describe()} "
            f"({release.content_sha256[:12]}): {e}",
        ) from e


def _bundle_source(
    project: Project, pub: Publisher, releases: Iterable[Release] = ()
) -> BundleSource:
    """Plaintext by ``content_sha256`` for the publisher: from the FORGE's versions, else (for
    an entry published outside the FORGE) decrypted from the store. ``releases`` are entries
    that may need the latter; the channel's current entries are looked up when needed."""
    candidates = {r.content_sha256: r for r in releases}
    found: dict[str, bytes] = {}
    channels_read: list[bool] = []

    def source(content_sha256: str) -> bytes:
        if content_sha256 in found:
            return found[content_sha256]
        version = _version_for(project, content_sha256)
        if version is not None:
            data = version.bundle_bytes
        else:
            if content_sha256 not in candidates and not channels_read:
                channels_read.append(True)
                for channel in project_channels(project):
                    pointer = pub.current(channel.name)
                    if pointer is not None:
                        for entry in pointer.all_releases():
                            candidates.setdefault(entry.content_sha256, entry)
            release = candidates.get(content_sha256)
            if release is None:
                raise NotFound(f"the FORGE has no bundle with content {content_sha256[:12]}")
            data = _decrypt_from_store(project, pub, release)
        found[content_sha256] = data
        return data

    return source
