"""The poller: one conditional GET of the pointer, verify, fetch what changed, apply.

DESIGN §7's poll. What it applies is written to the disk cache first (bundles, pointer,
state), under the cache's write lock, then swapped in with one reference assignment.
"""

from __future__ import annotations

from collections.abc import Mapping

from anvil_client import _timing
from anvil_client._cache import CacheState
from anvil_client._core import log
from anvil_client._disk_sync import DiskSync
from anvil_client._snapshot import Snapshot
from anvil_client._timing import backoff_delay, format_time, poll_delay
from anvil_client._verify import is_expired
from anvil_client.errors import AnvilError, ExpiredError
from anvil_client.stores import ObjectStore, open_store
from anvil_client.wire import POINTER_MAX_SIZE


class Poller(DiskSync):
    """Poll the store (in the background, or now with :meth:`sync`) and apply what is new."""

    def _poll(self, *, conditional: bool, disk_checked: bool = False) -> bool:
        """Run DESIGN §7's poll once; ``True`` when a new snapshot is served.

        ``disk_checked``: the background loop looked at the disk cache's signature just now,
        so only an explicit ``sync()`` re-reads the cache files in full first.

        Raises:
            AnvilError: for the first failure (also recorded for ``status()``).
        """
        with self._lock:
            if not disk_checked:
                self._check_disk(full=not conditional)
            snapshot = self._snapshot
            etag = None
            if conditional and snapshot is not None and self._etag_sequence == snapshot.sequence:
                etag = self._etag
            self._last_check = _timing.utcnow()
            try:
                changed = self._fetch_and_apply(snapshot, etag)
            except AnvilError as e:
                self._record_failure(e)
                raise
            except OSError as e:
                error = AnvilError(f"cannot write the disk cache in {self._cache.dir}: {e}")
                self._record_failure(error)
                raise error from e
            self._record_success(share=not changed)
            return changed

    def _fetch_and_apply(self, snapshot: Snapshot | None, etag: str | None) -> bool:
        store = self._open_store()
        result = store.get(self._pointer_key, if_none_match=etag, max_size=POINTER_MAX_SIZE)
        if not result.modified:
            if snapshot is not None:
                self._check_still_valid(snapshot)
            return False
        accepted = self._verifier.accept_pointer(
            result.data,
            applied=snapshot.pointer if snapshot is not None else None,
            floor=self._floor,
            instance_id=self._instance_id,
            now=_timing.utcnow(),
        )
        if (
            snapshot is not None
            and result.data == snapshot.envelope
            and self._cache.read_pointer() == result.data
        ):
            # What is served, again (a store without ETags): nothing to write or swap.
            self._remember_etag(result.etag, snapshot.sequence)
            return False
        new, downloaded = self._assemble(
            result.data, accepted.pointer, accepted.releases, snapshot, store
        )
        return self._commit(new, downloaded, result.etag)

    def _remember_etag(self, etag: str | None, sequence: int) -> None:
        if etag is None or (etag, sequence) == (self._etag, self._etag_sequence):
            return
        self._etag, self._etag_sequence = etag, sequence
        with self._cache.write_lock():
            state = self._cache.read_state() or CacheState(instance_id=self._instance_id)
            if (state.etag_sequence or 0) <= sequence:  # never over a newer pointer's
                state.etag, state.etag_sequence = etag, sequence
                self._cache.write_state(state, durable=False)
                self._wrote_state(state)

    def _check_still_valid(self, snapshot: Snapshot) -> None:
        if is_expired(snapshot.pointer, _timing.utcnow()):
            raise ExpiredError(
                f"the served pointer (sequence {snapshot.sequence}) expired at "
                f"{snapshot.pointer.expires_at} and the store has published no newer one"
            )

    def _commit(self, new: Snapshot, plaintexts: Mapping[str, bytes], etag: str | None) -> bool:
        """Write the disk cache (bundles, then pointer, then state), then swap the snapshot.

        Under the cache's write lock; if another process applied a newer pointer meanwhile,
        nothing is written and that one is loaded instead.
        """
        cache = self._cache
        old = self._snapshot
        with cache.write_lock():
            disk_envelope = cache.read_pointer()  # an unusable file is overwritten
            newer_on_disk = False
            if disk_envelope is not None and disk_envelope != new.envelope:
                disk_sequence = self._verified_sequence(disk_envelope)
                newer_on_disk = disk_sequence is not None and disk_sequence > new.sequence
            if not newer_on_disk:
                for content, plaintext in plaintexts.items():
                    cache.write_bundle(content, plaintext)
                if disk_envelope != new.envelope:
                    cache.write_pointer(new.envelope)
                state = cache.read_state() or CacheState(instance_id=self._instance_id)
                state.sequence = max(state.sequence, new.sequence)
                state.etag, state.etag_sequence = etag, new.sequence
                state.contents = [r.content_sha256 for r in new.releases]
                state.version = new.version
                state.last_check = state.last_sync = format_time(_timing.utcnow())
                state.last_error = None
                cache.write_state(state, durable=True)
                self._shared_error = None
                self._next_share = self._clock() + self._share_period
                # The served list, the list served before, and every entry the pointer names.
                keep = set(new.contents)
                keep.update(r.content_sha256 for r in new.pointer.all_releases())
                if old is not None:
                    keep.update(old.contents)
                cache.prune(keep)
        if newer_on_disk:
            self._check_disk(full=True)
            return self._snapshot is not old
        self._disk_sig = cache.signature()
        self._etag, self._etag_sequence = etag, new.sequence
        self._floor = max(self._floor, new.sequence)
        changed = old is None or old.envelope != new.envelope
        self._snapshot = new  # the swap: one reference assignment
        if changed:
            self._announce(new)
        return changed

    def _verified_sequence(self, envelope: bytes) -> int | None:
        try:
            return self._verifier.verify_pointer(envelope).sequence
        except AnvilError:
            return None

    def _record_success(self, *, share: bool) -> None:
        self._last_sync = _timing.utcnow()
        self._failures = 0
        self._set_error(None)
        now = self._clock()
        self._next_poll = now + poll_delay(self.config.poll_interval)
        if share and (self._shared_error is not None or now >= self._next_share):
            self._share_state()

    def _record_failure(self, error: AnvilError) -> None:
        self._failures += 1
        self._set_error(str(error) or type(error).__name__)
        now = self._clock()
        self._next_poll = now + backoff_delay(self.config.poll_interval, failures=self._failures)
        if self._last_error != self._shared_error or now >= self._next_share:
            self._share_state()

    def _share_state(self) -> None:
        """Record times and the last error in ``state.json`` for the other processes.

        An idle poll writes nothing: this runs when the error changes and otherwise at most
        every :attr:`_share_period` (README "What sibling processes see").
        """
        self._next_share = self._clock() + self._share_period
        try:
            with self._cache.write_lock():
                state = self._cache.read_state() or CacheState(instance_id=self._instance_id)
                state.last_check = format_time(self._last_check)
                if self._last_error is None:
                    state.last_sync = format_time(self._last_sync)
                state.last_error = self._last_error
                self._cache.write_state(state, durable=False)
                self._wrote_state(state)
            self._shared_error = self._last_error
        except OSError as e:
            log.warning("anvil: cannot update %s: %s", self._cache.state_path, e)

    def _wrote_state(self, state: CacheState) -> None:
        """This process wrote ``state.json`` (under the write lock): take it as seen, so the
        next disk check does not re-read the cache for our own write."""
        self._shared = state
        self._floor = max(self._floor, state.sequence)
        signature = self._disk_sig
        if signature is not None:
            self._disk_sig = (signature[0], self._cache.stat_state(), signature[2])

    def _open_store(self) -> ObjectStore:
        store = self._store
        if store is None:
            assert isinstance(self.config.store, str)
            store = self._store = open_store(self.config.store)
        return store
