"""Disk sync: what the disk cache and the bootstrap file hold becomes what is served.

Every process of an instance reads the disk cache (``_cache``) that the one poller writes; a
reload verifies everything again. ``_assemble`` builds the snapshot of a verified pointer from
what is served, the disk cache or (for the poller) the store.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from anvil_client._core import ClientCore, log
from anvil_client._snapshot import Snapshot, Source
from anvil_client._timing import gc_paused
from anvil_client._verify import check_sequence, check_served
from anvil_client.errors import AnvilError, SizeLimitError
from anvil_client.stores._file import NotARegularFile, read_regular_file
from anvil_client.wire import Bundle, Pointer, ReadableStore, Release, select_releases


class DiskSync(ClientCore):
    """Reload the disk cache when it changes; load the bootstrap file once."""

    # --- the disk cache and the bootstrap file -------------------------------------------

    def _load_disk_cache(self) -> None:
        """Create the cache dir if needed, read what it holds, then the bootstrap file.

        Raises:
            ConfigError: if the cache dir cannot be created or used.
        """
        self._cache.prepare()
        state = self._cache.ensure_state()
        self._instance_id = state.instance_id
        self._floor = state.sequence
        self._etag = state.etag
        self._etag_sequence = state.etag_sequence
        self._shared = state
        self._mode_override = self._cache.read_mode()
        self._disk_sig = self._cache.signature()
        self._load_from_disk()
        if self.config.bootstrap is not None:
            self._load_bootstrap(self.config.bootstrap)

    def _check_disk(self, *, full: bool = False) -> None:
        """Pick up what another process (or ``anvil sync``/``anvil mode``) wrote."""
        signature = self._cache.signature()
        if signature == self._disk_sig and not full:
            return
        with self._lock:
            self._disk_sig = signature
            mode = self._cache.read_mode()
            if mode != self._mode_override:
                before = self.mode
                self._mode_override = mode
                if self.mode != before:
                    log.info("anvil: mode is now %s", self.mode)
                    self._next_poll = self._clock()
                    self._want_heartbeat()
                    if self._hints is not None:
                        self._hints.nudge()
                        self._hints.drop()
            state = self._cache.read_state()
            if state is not None:
                self._shared = state
                self._floor = max(self._floor, state.sequence)
            self._load_from_disk()
            snapshot = self._snapshot
            if (
                state is not None
                and snapshot is not None
                and state.etag
                and state.etag_sequence == snapshot.sequence
            ):
                self._etag, self._etag_sequence = state.etag, state.etag_sequence

    def _load_from_disk(self) -> None:
        current = self._snapshot
        try:
            envelope = self._cache.read_pointer(strict=True)
            if envelope is None or (current is not None and envelope == current.envelope):
                return
            pointer = self._verifier.verify_pointer(envelope)
            if current is not None and pointer.sequence < current.sequence:
                return  # an older cache than what is served (e.g. a newer bootstrap)
            # state.json remembers a higher sequence: an older pointer was put back.
            check_sequence(pointer, applied=None, floor=self._floor)
            releases = select_releases(pointer, self._instance_id)
            new, _ = self._assemble(envelope, pointer, releases, current, None)
        except AnvilError as e:
            self._disk_sig = None  # look again next time
            self._set_error(f"the disk cache in {self._cache.dir} was not loaded: {e}")
            return
        self._floor = max(self._floor, new.sequence)
        changed = current is None or current.content_key != new.content_key
        self._snapshot = new
        if self._last_error and self._last_error.startswith("the disk cache"):
            self._set_error(None)
        if changed:
            self._announce(new)

    def _load_bootstrap(self, path: Path) -> None:
        try:
            data = read_regular_file(path, self._verifier.bootstrap_max_size)
        except SizeLimitError:
            limit = self._verifier.bootstrap_max_size
            self._set_error(
                f"the bootstrap file {path} was not used: it is larger than {limit} bytes"
            )
            return
        except (IsADirectoryError, NotARegularFile):
            self._set_error(f"the bootstrap file {path} was not used: it is not a regular file")
            return
        except OSError as e:
            self._set_error(f"cannot read the bootstrap file {path}: {e.strerror or e}")
            return
        current = self._snapshot
        try:
            with gc_paused():
                envelope, verified = self._verifier.verify_bootstrap(data, self._instance_id)
            if current is not None and current.sequence >= verified.pointer.sequence:
                return  # the disk cache is newer: the usual case once the app has run
            check_sequence(verified.pointer, applied=None, floor=self._floor)
        except AnvilError as e:
            self._set_error(f"the bootstrap file {path} was not used: {e}")
            return
        self._snapshot = Snapshot(
            envelope=envelope,
            pointer=verified.pointer,
            releases=verified.releases,
            bundles=verified.bundles,
            source="bootstrap",
        )
        self._floor = max(self._floor, verified.pointer.sequence)

    def _assemble(
        self,
        envelope: bytes,
        pointer: Pointer,
        releases: Sequence[Release],
        current: Snapshot | None,
        store: ReadableStore | None,
    ) -> tuple[Snapshot, dict[str, bytes]]:
        """The snapshot of a verified pointer's selected entries: all of them or an error.

        Each entry's bundle comes from the snapshot served (when its file is still in the disk
        cache), else from the disk cache (re-verified), else — only with a ``store`` — from
        the store. Returns the snapshot and the plaintexts downloaded (to be cached).

        Raises:
            AnvilError: for the first entry that fails (nothing is applied), or when two
                entries share a prompt id.
        """
        cache, max_size = self._cache, self._verifier.max_bundle_size
        bundles: list[Bundle] = []
        downloaded: dict[str, bytes] = {}
        reused = 0
        for release in releases:
            content = release.content_sha256
            bundle = current.bundle_of(content) if current is not None else None
            if bundle is not None and (store is None or cache.has_bundle(content, max_size)):
                reused += 1
            else:
                plaintext = cache.read_bundle(content, max_size)
                from_disk = plaintext is not None
                if plaintext is None:
                    if store is None:
                        raise AnvilError(
                            f"the disk cache has no bundle {content[:12]}… of "
                            f"{release.describe()} for sequence {pointer.sequence}"
                        )
                    plaintext = self._verifier.fetch_entry(store, release)
                with gc_paused():
                    try:
                        bundle = self._verifier.verify_cached(release, pointer, plaintext)
                    except AnvilError:
                        if not from_disk or store is None:
                            raise
                        # A damaged cached copy: the store has the signed original.
                        plaintext = self._verifier.fetch_entry(store, release)
                        bundle = self._verifier.verify_cached(release, pointer, plaintext)
                        from_disk = False
                if not from_disk:
                    downloaded[content] = plaintext
                del plaintext
            bundles.append(bundle)
        check_served(releases, bundles)
        if (
            current is not None
            and reused == len(releases)
            and [r.content_sha256 for r in releases] == [b.content_sha256 for b in current.bundles]
        ):
            return current.with_pointer(envelope, pointer, releases), downloaded
        source: Source = "store" if store is not None else "disk"
        new = Snapshot(
            envelope=envelope, pointer=pointer, releases=releases, bundles=bundles, source=source
        )
        if current is not None:
            _carry_compiled(current, new)
        return new, downloaded


def _carry_compiled(old: Snapshot, new: Snapshot) -> None:
    """Keep the compiled prompts of bundles that stay served (same spec object)."""
    for prompt_id, compiled in list(old.compiled.items()):
        spec = new.prompts.get(prompt_id)
        if spec is not None and spec is old.prompts.get(prompt_id):
            new.compiled[prompt_id] = compiled
