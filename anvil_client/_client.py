"""The LIVE client: poll or stay frozen, verify, cache on disk, render from memory.

    >>> import anvil_client
    >>> callable(anvil_client.AnvilClient.from_env)
    True

``prompt()`` reads one reference to an immutable :class:`Snapshot` and renders (adding one to a
usage counter); it never does I/O and never waits for a poll. A background thread does
everything else: at most one process per cache dir (the holder of a file lock) talks to the
store, the others reload the disk cache when it changes, so N workers on a host cost one
request per poll interval. The polling process sends heartbeats from a second thread (a slow
FORGE never delays a poll) and, with ``hints``, holds the FORGE's hint stream in a third.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import random
import threading
import time
import weakref
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, TypedDict

from anvil_client._cache import CacheState, DiskCache, Signature
from anvil_client._config import DEFAULT_CACHE_DIR, ClientConfig, Mode
from anvil_client._heartbeat import HeartbeatSender, heartbeat_body
from anvil_client._snapshot import Snapshot, Source
from anvil_client._usage import Counter, Report, Usage, check_outcome
from anvil_client._verify import (
    Verifier,
    check_sequence,
    check_served,
    describe,
    is_expired,
)
from anvil_client.errors import (
    AnvilError,
    ConfigError,
    ExpiredError,
    PromptNotFound,
    RenderError,
    SizeLimitError,
)
from anvil_client.stores import DEFAULT_MAX_SIZE, ObjectStore, open_store
from anvil_client.stores._file import NotARegularFile, read_regular_file
from anvil_client.wire import (
    POINTER_MAX_SIZE,
    Bundle,
    CompiledPrompt,
    Pointer,
    PromptSpec,
    ReadableStore,
    Release,
    TrustedKey,
    compile_prompt,
    parse_timestamp,
    pointer_key,
    select_releases,
    template_variables,
)

if TYPE_CHECKING:
    from anvil_client._hints import HintStream

log = logging.getLogger("anvil_client")
log.addHandler(logging.NullHandler())  # a library logs only where the app configures it

#: How often every process looks at the disk cache (a few stat calls) at most.
DISK_CHECK_INTERVAL = 1.0
#: The longest pause between polls after repeated errors.
MAX_BACKOFF = 600.0
#: The poller shares times in ``state.json`` at least this often (and at once when an error
#: appears or clears, or a new pointer or ETag arrives); at most every
#: ``max(2 x poll_interval, STATE_SHARE_MIN)`` when nothing changes.
STATE_SHARE_MIN = 5.0
#: ``pointer.json``/``state.json``/``mode.json`` are re-read in full (beyond the stat
#: signature) at most every ``max(10 x poll_interval, FULL_COMPARE_MIN)`` seconds.
FULL_COMPARE_MIN = 10.0
#: After a new release is applied, heartbeats go every 30 s for 15 minutes (issue 11).
FAST_HEARTBEAT_INTERVAL = 30.0
FAST_HEARTBEAT_WINDOW = 900.0
#: A process that sends no heartbeats hands its usage counts to the one that does this often.
USAGE_HAND_OVER_INTERVAL = 15.0
#: An old FORGE refused ``usage``: it is not sent to it again for this long (counts are kept).
USAGE_RETRY_AFTER = 3600.0
#: A hint makes the leader poll after a random delay up to this (spreads a fleet's requests)...
HINT_JITTER = 0.25
#: ...and at most once per this many seconds, whatever the stream says.
HINT_MIN_SPACING = 1.0
_FALLBACK_CACHE_SIZE = 256


class ReleaseStatus(TypedDict):
    """One served entry in ``status()["releases"]``."""

    prompt_set_id: str
    name: str
    version: str
    content_sha256: str
    prompts: int


class Status(TypedDict):
    """What ``status()`` reports (every value is JSON-serialisable).

    ``releases`` lists the entries served; ``version`` is the one entry's version, or with
    several entries ``name@version`` joined by ``, `` (DESIGN §7). ``content_sha256`` and
    ``prompt_set_id`` are the one entry's, ``None`` when several are served.
    """

    project_id: str
    channel: str
    mode: Mode
    mode_source: Literal["override", "config", "default"]
    version: str | None
    sequence: int | None
    content_sha256: str | None
    prompt_set_id: str | None
    prompts: int
    releases: list[ReleaseStatus]
    source: Source | None
    published_at: str | None
    expires_at: str | None
    last_sync: str | None
    last_check: str | None
    last_error: str | None
    stale: bool
    instance_id: str
    leader: bool
    store: str
    cache_dir: str
    last_heartbeat: str | None
    heartbeat_error: str | None
    hints: Literal["off", "connecting", "connected"]


class AnvilClient:
    """A LIVE instance of one project's channel.

    Construct it with keyword arguments (the names are the public API), with
    ``config=ClientConfig(...)``, or through :meth:`from_env` / :meth:`from_file`. It loads the
    verified disk cache (and the bootstrap file) at once and, unless ``start=False``, polls in a
    background thread (ACCEPTING) or only watches the disk cache (FROZEN).

    Raises:
        ConfigError: if the configuration is invalid or the cache dir cannot be created.
    """

    def __init__(
        self,
        *,
        store: str | ObjectStore | None = None,
        project_id: str | None = None,
        channel: str = "production",
        access_token: str | None = None,
        trusted_keys: Sequence[str | TrustedKey] | str | None = None,
        cache_dir: str | os.PathLike[str] = DEFAULT_CACHE_DIR,
        mode: Mode = "accepting",
        poll_interval: float = 30.0,
        forge_url: str | None = None,
        bootstrap: str | os.PathLike[str] | None = None,
        heartbeat_interval: float = 300.0,
        max_bundle_size: int = DEFAULT_MAX_SIZE,
        hints: bool = False,
        usage: bool = True,
        config: ClientConfig | None = None,
        start: bool = True,
    ) -> None:
        if config is None:
            config = ClientConfig(
                store=store if store is not None else "",
                project_id=project_id or "",
                channel=channel,
                access_token=access_token,
                trusted_keys=trusted_keys,  # type: ignore[arg-type]  # normalised by ClientConfig
                cache_dir=Path(cache_dir),
                mode=mode,
                poll_interval=poll_interval,
                forge_url=forge_url,
                bootstrap=Path(bootstrap) if bootstrap is not None else None,
                heartbeat_interval=heartbeat_interval,
                max_bundle_size=max_bundle_size,
                hints=hints,
                usage=usage,
            )
        elif store is not None or project_id is not None or trusted_keys is not None:
            raise ConfigError("pass either config= or individual settings, not both")
        self.config = config
        self._verifier = Verifier(
            project_id=config.project_id,
            channel=config.channel,
            trusted_keys=config.keys,
            token=config.token,
            max_bundle_size=config.max_bundle_size,
            token_env=config.access_token_env,
        )
        self._pointer_key = pointer_key(config.project_id, config.channel)
        self._cache = DiskCache(config.cache_dir, config.project_id, config.channel)
        self._store: ObjectStore | None = None if isinstance(config.store, str) else config.store
        self._owns_store = isinstance(config.store, str)
        self._abandoned: list[ObjectStore] = []
        self._snapshot: Snapshot | None = None
        self._fallbacks: dict[str, CompiledPrompt] = {}
        self._clock = time.monotonic
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = start
        self._last_check: datetime | None = None
        self._last_sync: datetime | None = None
        self._last_error: str | None = None
        self._shared: CacheState | None = None
        self._failures = 0
        now = self._clock()
        self._next_poll = now
        self._next_disk_check = now
        self._next_full_compare = now
        self._next_share = now
        self._shared_error: str | None = None
        self._heartbeat: HeartbeatSender | None = None
        if config.forge_url and config.access_token:
            self._heartbeat = HeartbeatSender(config.forge_url, config.access_token)
        self._heartbeat_wake = threading.Event()
        self._heartbeat_thread: threading.Thread | None = None
        self._heartbeat_due = True
        self._next_heartbeat = now
        self._fast_heartbeats_until = now
        self._reported_error: str | None = None
        self._last_heartbeat: datetime | None = None
        self._heartbeat_error: str | None = None
        # Usage is counted only where it can be reported (a FORGE and a token).
        self._usage: Usage | None = None
        if config.usage and self._heartbeat is not None:
            self._usage = Usage(
                first_report_id=time.time_ns() // 1_000_000, started=_format_time(_utcnow())
            )
        self._usage_refused_until = now - 1.0
        self._next_hand_over = now + USAGE_HAND_OVER_INTERVAL
        self._hint_poll_at: float | None = None
        self._last_hint_poll = now - HINT_MIN_SPACING
        self._hints: HintStream | None = None
        if config.hints and config.forge_url and config.access_token:
            from anvil_client._hints import HintStream  # only clients that hold the stream

            self._hints = HintStream(
                config.forge_url,
                config.access_token,
                project_id=config.project_id,
                channel=config.channel,
                on_hint=self._on_hint,
                active=self._holds_hint_stream,
                user_agent=f"anvil-client/{client_version()}",
            )

        self._cache.prepare()
        state = self._cache.ensure_state()
        self._instance_id = state.instance_id
        self._floor = state.sequence
        self._etag: str | None = state.etag
        self._etag_sequence: int | None = state.etag_sequence
        self._shared = state
        self._mode_override = self._cache.read_mode()
        self._disk_sig: Signature = self._cache.signature()
        self._load_from_disk()
        if config.bootstrap is not None:
            self._load_bootstrap(config.bootstrap)
        self._fast_heartbeats_until = now  # loading what was applied before is no new release
        _CLIENTS.add(self)
        if start:
            self._start_thread()

    # --- construction --------------------------------------------------------------------

    @classmethod
    def from_env(cls, *, start: bool = True, **settings: Any) -> AnvilClient:
        """A client from arguments > ``ANVIL_*`` env vars > ``./anvil.toml`` > defaults.

        Raises:
            ConfigError: if the configuration is incomplete or invalid.
        """
        return cls(config=ClientConfig.from_env(**settings), start=start)

    @classmethod
    def from_file(
        cls, path: str | os.PathLike[str], *, start: bool = True, **settings: Any
    ) -> AnvilClient:
        """A client from arguments > ``ANVIL_*`` env vars > the TOML file ``path`` > defaults.

        Raises:
            ConfigError: if the file is missing or malformed, or the configuration is invalid.
        """
        return cls(config=ClientConfig.from_file(path, **settings), start=start)

    def __repr__(self) -> str:
        return (
            f"AnvilClient(project_id={self.config.project_id!r}, "
            f"channel={self.config.channel!r}, mode={self.mode!r})"
        )

    def __enter__(self) -> AnvilClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- serving (no I/O) ----------------------------------------------------------------

    def prompt(self, prompt_id: str, /, *, fallback: str | None = None, **variables: Any) -> str:
        """Render a prompt with ``variables``; a chat prompt's messages are joined by blank lines.

        ``fallback`` is a template (rendered in the same sandbox with the same variables) used
        only when no source has ``prompt_id``.

        Raises:
            PromptNotFound: if the prompt is not served and no fallback is given.
            MissingVariable: naming the prompt and the variable that was not given.
            RenderError: if rendering fails (including a sandbox violation).
        """
        snapshot = self._snapshot
        if snapshot is not None:
            served = snapshot.served.get(prompt_id) or self._serve(snapshot, prompt_id)
            if served is not None:
                compiled, counter = served
                if counter is None:
                    return compiled.render(variables)
                # The whole cost of counting on the hot path: one attribute add, one test.
                counter.renders += 1
                if counter.sample:  # re-armed every second by the background thread
                    counter.sample = False
                    counter.note_names(variables)
                try:
                    return compiled.render(variables)
                except Exception as e:
                    counter.failed(e, variables)
                    raise
        if fallback is not None:
            return self._render_fallback(prompt_id, fallback, variables)
        raise self._not_found(prompt_id, counted=True)

    def messages(self, prompt_id: str, /, **variables: Any) -> list[dict[str, str]]:
        """Render a chat prompt to ``[{"role": ..., "content": ...}]`` (a text prompt is one
        ``user`` message).

        Raises:
            PromptNotFound: if the prompt is not served.
            MissingVariable: naming the prompt and the variable that was not given.
            RenderError: if rendering fails.
        """
        snapshot = self._snapshot
        served = None
        if snapshot is not None:
            served = snapshot.served.get(prompt_id) or self._serve(snapshot, prompt_id)
        if served is None:
            raise self._not_found(prompt_id, counted=True)
        compiled, counter = served
        if counter is None:
            return compiled.render_messages(variables)
        counter.renders += 1
        if counter.sample:
            counter.sample = False
            counter.note_names(variables)
        try:
            return compiled.render_messages(variables)
        except Exception as e:
            counter.failed(e, variables)
            raise

    def record(
        self,
        prompt_id: str,
        /,
        *,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
        latency_ms: float | None = None,
        error: object = None,
    ) -> None:
        """Report the outcome of one model call made with ``prompt_id``'s prompt.

        Counted for the entry that serves ``prompt_id`` now (calls, call errors, tokens in
        and out, summed latency) and sent on the next heartbeats; nothing is sent when usage is
        off (``usage = false``) or no ``forge_url`` is configured. ``error`` is ``None``/``False``
        for a success, else ``True``, a short name (``"RateLimited"``) or the exception.

        Raises:
            TypeError: for an argument of the wrong type.
            ValueError: for a negative or non-finite number, or an empty prompt id.
        """
        check_outcome(prompt_id, input_tokens, output_tokens, latency_ms, error)
        usage = self._usage
        if usage is None:
            return
        snapshot = self._snapshot
        counter: Counter | None = None
        if snapshot is not None:
            served = snapshot.served.get(prompt_id)
            if served is not None:
                counter = served[1]
            else:
                counter = usage.counter(prompt_id, snapshot.content_of(prompt_id))
        if counter is None:
            counter = usage.counter(prompt_id, None)
        counter.outcome(
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            latency_ms=latency_ms,
            error=error,
        )

    def _serve(
        self, snapshot: Snapshot, prompt_id: str
    ) -> tuple[CompiledPrompt, Counter | None] | None:
        """Compile ``prompt_id`` and attach its usage counter (first use per snapshot).

        Raises:
            RenderError: if the prompt's template does not compile (counted as an error).
        """
        usage = self._usage
        counter = None
        if usage is not None and prompt_id in snapshot.prompts:
            counter = usage.counter(prompt_id, snapshot.content_of(prompt_id))
        try:
            compiled = snapshot.compile(prompt_id)
        except RenderError as e:
            if counter is not None:
                counter.renders += 1
                counter.failed(e)
            raise
        if compiled is None:
            return None
        served = (compiled, counter)
        snapshot.served[prompt_id] = served  # a race builds it twice, harmlessly
        return served

    def _render_fallback(self, prompt_id: str, source: str, variables: dict[str, Any]) -> str:
        compiled = self._fallback(prompt_id, source)
        counter = self._usage.counter(prompt_id, None) if self._usage is not None else None
        if counter is None:
            return compiled.render(variables)
        counter.renders += 1
        if counter.sample:
            counter.sample = False
            counter.note_names(variables)
        try:
            return compiled.render(variables)
        except Exception as e:
            counter.failed(e, variables)
            raise

    def template(self, prompt_id: str, /) -> str:
        """The source of a text prompt's template.

        Raises:
            PromptNotFound: if the prompt is not served.
            RenderError: if it is a chat prompt (use :meth:`messages`).
        """
        spec = self._spec(prompt_id)
        if spec.template is None:
            raise RenderError(f"prompt {prompt_id!r} is a chat prompt; use messages()")
        return spec.template

    def metadata(self, prompt_id: str, /) -> Mapping[str, Any]:
        """The prompt's metadata (``model``, ``temperature``, ...), read-only.

        Raises:
            PromptNotFound: if the prompt is not served.
        """
        return self._spec(prompt_id).metadata

    def prompt_ids(self) -> list[str]:
        """The ids of every prompt being served, sorted."""
        snapshot = self._snapshot
        return sorted(snapshot.prompts) if snapshot is not None else []

    def _spec(self, prompt_id: str) -> PromptSpec:
        snapshot = self._snapshot
        spec = snapshot.spec(prompt_id) if snapshot is not None else None
        if spec is None:
            raise self._not_found(prompt_id)
        return spec

    def _fallback(self, prompt_id: str, source: str) -> CompiledPrompt:
        compiled = self._fallbacks.get(source)
        if compiled is None:
            try:
                variables = tuple(template_variables(source))
            except AnvilError as e:
                raise RenderError(f"the fallback for prompt {prompt_id!r} is broken: {e}") from e
            compiled = compile_prompt(prompt_id, PromptSpec(source, None, variables, {}))
            if len(self._fallbacks) >= _FALLBACK_CACHE_SIZE:
                self._fallbacks.clear()
            self._fallbacks[source] = compiled
        return compiled

    def _not_found(self, prompt_id: str, *, counted: bool = False) -> PromptNotFound:
        snapshot = self._snapshot
        channel = self.config.channel
        if counted and self._usage is not None:
            counter = self._usage.counter(prompt_id, None)
            counter.renders += 1
            counter.errors["PromptNotFound"] = counter.errors.get("PromptNotFound", 0) + 1
        if snapshot is not None:
            return PromptNotFound(
                f"prompt {prompt_id!r} is not in version {snapshot.version} "
                f"served on channel {channel!r}"
            )
        why = self._last_error or (
            "nothing has been synced yet" if self.mode == "accepting" else "run `anvil sync`"
        )
        return PromptNotFound(
            f"prompt {prompt_id!r} is not available: no prompts are served yet on channel "
            f"{channel!r} ({why})"
        )

    # --- status --------------------------------------------------------------------------

    @property
    def mode(self) -> Mode:
        """The effective mode: the ``anvil mode`` override if set, else the configured one."""
        return self._mode_override or self.config.mode

    @property
    def instance_id(self) -> str:
        return self._instance_id

    def status(self) -> Status:
        """Mode and its source, what is served, when the store was last checked, errors."""
        snapshot = self._snapshot
        last_check, last_sync, last_error = self._last_check, self._last_sync, self._last_error
        shared = self._shared  # what the poller of this cache dir (or `anvil sync`) recorded
        if shared is not None:
            shared_check = _parse_time(shared.last_check)
            if shared_check is not None and (last_check is None or shared_check > last_check):
                last_check, last_error = shared_check, shared.last_error or last_error
            last_sync = _latest(last_sync, _parse_time(shared.last_sync))
        served: dict[str, Any] = dict.fromkeys(
            ("version", "sequence", "content_sha256", "prompt_set_id", "published_at")
        )
        served["expires_at"] = None
        served["releases"] = []
        if snapshot is not None:
            served = describe(snapshot.pointer, snapshot.releases, snapshot.counts())
        return Status(
            project_id=self.config.project_id,
            channel=self.config.channel,
            mode=self.mode,
            mode_source="override" if self._mode_override else self.config.mode_source,
            version=served["version"],
            sequence=served["sequence"],
            content_sha256=served["content_sha256"],
            prompt_set_id=served["prompt_set_id"],
            prompts=len(snapshot.prompts) if snapshot is not None else 0,
            releases=served["releases"],
            source=snapshot.source if snapshot is not None else None,
            published_at=served["published_at"],
            expires_at=served["expires_at"],
            last_sync=_format_time(last_sync),
            last_check=_format_time(last_check),
            last_error=last_error,
            stale=self._is_stale(snapshot, last_sync),
            instance_id=self._instance_id,
            leader=self._cache.leading,
            store=self.config.store_url,
            cache_dir=str(self._cache.dir),
            last_heartbeat=_format_time(self._last_heartbeat),
            heartbeat_error=self._heartbeat_error,
            hints=self._hints.state if self._hints is not None else "off",
        )

    def _is_stale(self, snapshot: Snapshot | None, last_sync: datetime | None) -> bool:
        now = _utcnow()
        if snapshot is None or is_expired(snapshot.pointer, now):
            return True
        if self.mode == "frozen":
            return False
        seconds = 3 * self.config.poll_interval
        if not self._cache.leading:  # the poller shares its times only every share period
            seconds += self._share_period
        return last_sync is None or now - last_sync > timedelta(seconds=seconds)

    @property
    def _share_period(self) -> float:
        return max(2 * self.config.poll_interval, STATE_SHARE_MIN)

    # --- fetching (the shell around the pure core) ---------------------------------------

    def sync(self) -> Status:
        """One verified pull now, in any mode; the result is written to the disk cache, where
        the other processes of this instance pick it up.

        Raises:
            VerificationError: (a subclass) if what the store holds fails a check.
            StoreError: (a subclass) if the store cannot be read.
            AnvilError: if the disk cache cannot be written.
        """
        self._poll(conditional=False)
        return self.status()

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
            self._last_check = _utcnow()
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
            now=_utcnow(),
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
        if is_expired(snapshot.pointer, _utcnow()):
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
                state.last_check = state.last_sync = _format_time(_utcnow())
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

    def _announce(self, snapshot: Snapshot) -> None:
        log.info(
            "anvil: serving %s version %s (sequence %d, %d prompts, from %s)",
            self.config.channel,
            snapshot.version,
            snapshot.sequence,
            len(snapshot.prompts),
            snapshot.source,
        )
        self._fast_heartbeats_until = self._clock() + FAST_HEARTBEAT_WINDOW
        self._want_heartbeat()
        self._wake.set()

    def _want_heartbeat(self) -> None:
        self._heartbeat_due = True
        self._heartbeat_wake.set()

    def _record_success(self, *, share: bool) -> None:
        self._last_sync = _utcnow()
        self._failures = 0
        self._set_error(None)
        now = self._clock()
        self._next_poll = now + self.config.poll_interval * random.uniform(0.9, 1.1)
        if share and (self._shared_error is not None or now >= self._next_share):
            self._share_state()

    def _record_failure(self, error: AnvilError) -> None:
        self._failures += 1
        self._set_error(str(error) or type(error).__name__)
        interval = self.config.poll_interval
        cap = max(interval, min(10 * interval, MAX_BACKOFF))
        base = min(cap, interval * 2 ** min(self._failures, 16))
        now = self._clock()
        self._next_poll = now + base * random.uniform(0.5, 1.0)
        if self._last_error != self._shared_error or now >= self._next_share:
            self._share_state()

    def _set_error(self, message: str | None) -> None:
        if message != self._last_error:
            if message is not None:
                log.warning("anvil: %s (still serving the last verified prompts)", message)
            self._last_error = message
        if message != self._reported_error:
            self._want_heartbeat()

    def _share_state(self) -> None:
        """Record times and the last error in ``state.json`` for the other processes.

        An idle poll writes nothing: this runs when the error changes and otherwise at most
        every :attr:`_share_period` (README "What sibling processes see").
        """
        self._next_share = self._clock() + self._share_period
        try:
            with self._cache.write_lock():
                state = self._cache.read_state() or CacheState(instance_id=self._instance_id)
                state.last_check = _format_time(self._last_check)
                if self._last_error is None:
                    state.last_sync = _format_time(self._last_sync)
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

    # --- the disk cache and the bootstrap file -------------------------------------------

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

    # --- the background thread -----------------------------------------------------------

    def _start_thread(self) -> None:
        thread = threading.Thread(
            target=self._run, name=f"anvil-{self.config.channel}", daemon=True
        )
        self._thread = thread
        thread.start()
        if self._heartbeat is not None:
            beats = threading.Thread(
                target=self._run_heartbeats,
                name=f"anvil-heartbeat-{self.config.channel}",
                daemon=True,
            )
            self._heartbeat_thread = beats
            beats.start()
        if self._hints is not None:
            self._hints.start()

    def _run(self) -> None:
        while not self._closed.is_set():
            try:
                delay = self._tick()
            except Exception:  # the poller must survive anything; serving never depends on it
                log.exception("anvil: unexpected error in the background poller")
                delay = min(self.config.poll_interval, 30.0)
            self._wake.wait(max(delay, 0.001))
            self._wake.clear()

    def _tick(self) -> float:
        """One step of the background loop; returns how long to sleep.

        An idle poll of the leader is one conditional GET; three ``stat`` calls at most once
        a second look for what other processes wrote; nothing is written (README "Idle
        polls, and what sibling processes see").
        """
        now = self._clock()
        if now >= self._next_disk_check:
            full = now >= self._next_full_compare
            self._check_disk(full=full)
            # The poller learns of new pointers from its own polls: a second is quick enough
            # for `anvil mode`/`anvil sync`. The others follow a short interval's pace.
            pace = DISK_CHECK_INTERVAL
            if not self._cache.leading:
                pace = min(pace, self.config.poll_interval)
            self._next_disk_check = now + pace
            if full:
                self._next_full_compare = now + max(
                    10 * self.config.poll_interval, FULL_COMPARE_MIN
                )
            if self._usage is not None:
                self._usage.arm_sampling()  # each counter notes the names of its next render
        if not self._cache.leading and self._cache.try_lead():
            log.debug("anvil: this process (pid %d) polls for %s", os.getpid(), self._cache.dir)
            self._next_poll = now
            self._want_heartbeat()
            if self._hints is not None:
                self._hints.nudge()
        wake_at = [self._next_disk_check]
        if self._cache.leading:
            if self.mode == "accepting":
                hint_at = self._hint_poll_at
                if hint_at is not None and now >= hint_at:
                    self._hint_poll_at = None
                    self._last_hint_poll = now
                    self._next_poll = min(self._next_poll, now)
                if self._clock() >= self._next_poll:
                    with contextlib.suppress(AnvilError):  # recorded for status(), backs off
                        # The disk was looked at within the last second (above).
                        self._poll(conditional=True, disk_checked=True)
                wake_at.append(self._next_poll)
                if self._hint_poll_at is not None:
                    wake_at.append(self._hint_poll_at)
        elif self._usage is not None and now >= self._next_hand_over:
            self._next_hand_over = now + USAGE_HAND_OVER_INTERVAL
            self._hand_over_usage()
        if self._usage is not None and not self._cache.leading:
            wake_at.append(self._next_hand_over)
        return min(wake_at) - self._clock()

    # --- hints ---------------------------------------------------------------------------

    def _holds_hint_stream(self) -> bool:
        return not self._closed.is_set() and self._cache.leading and self.mode == "accepting"

    def _on_hint(self, sequence: int) -> None:
        """The hint stream announced ``sequence``: poll soon (jittered, at most once a second)."""
        snapshot = self._snapshot
        if snapshot is not None and sequence <= snapshot.sequence:
            return  # already applied (or a replayed hint)
        if self._hint_poll_at is not None:
            return  # one hint poll is already due
        now = self._clock()
        self._hint_poll_at = max(
            now + random.uniform(0.0, HINT_JITTER), self._last_hint_poll + HINT_MIN_SPACING
        )
        self._wake.set()

    # --- heartbeats and usage ------------------------------------------------------------

    def _hand_over_usage(self) -> None:
        usage = self._usage
        if usage is None:
            return
        data = usage.hand_over()
        if data is not None:
            try:
                self._cache.hand_over_usage(data)
            except OSError as e:
                log.warning("anvil: cannot hand usage counts over in %s: %s", self._cache.dir, e)

    def _run_heartbeats(self) -> None:
        """The heartbeat thread: a slow FORGE never delays a poll."""
        while not self._closed.is_set():
            delay = 60.0
            try:
                if self._cache.leading:
                    if self._heartbeat_due or self._clock() >= self._next_heartbeat:
                        self._send_heartbeat()
                    delay = self._next_heartbeat - self._clock()
            except Exception:  # like the poller: report, never stop
                log.exception("anvil: unexpected error in the heartbeat thread")
                delay = 30.0
            self._heartbeat_wake.wait(max(delay, 0.01))
            self._heartbeat_wake.clear()

    def _heartbeat_fields(self) -> dict[str, Any]:
        snapshot = self._snapshot
        return {
            "instance_id": self._instance_id,
            "hostname": os.uname().nodename,
            "project_id": self.config.project_id,
            "channel": self.config.channel,
            "mode": self.mode,
            "sequence": snapshot.sequence if snapshot is not None else None,
            "releases": [
                {
                    "prompt_set_id": r.prompt_set_id,
                    "version": r.version,
                    "content_sha256": r.content_sha256,
                }
                for r in (snapshot.releases if snapshot is not None else ())
            ],
            "last_error": self._last_error,
            "client_version": client_version(),
        }

    def _send_heartbeat(self) -> None:
        """Send one heartbeat now (with the pending usage report, if any)."""
        sender = self._heartbeat
        if sender is None:
            return
        self._heartbeat_due = False  # before reading: a change meanwhile makes it due again
        fields = self._heartbeat_fields()
        now = self._clock()
        self._reported_error = fields["last_error"]
        interval = self.config.heartbeat_interval
        if now < self._fast_heartbeats_until:
            interval = min(interval, FAST_HEARTBEAT_INTERVAL)
        self._next_heartbeat = now + interval
        report = self._usage_report() if now >= self._usage_refused_until else None
        if report is not None:
            fields["usage"] = report.body
        user_agent = f"anvil-client/{client_version()}"
        status, problem = sender.post(heartbeat_body(fields), user_agent)
        if report is not None and status == 400:
            # An old FORGE refuses keys it does not know: once more without usage, and no
            # usage to it for a while (the counts are kept for later).
            del fields["usage"]
            status, problem = sender.post(heartbeat_body(fields), user_agent)
            if problem is None:
                self._usage_refused_until = self._clock() + USAGE_RETRY_AFTER
                log.info("anvil: the FORGE does not take usage reports; retrying in an hour")
        elif report is not None and problem is None and self._usage is not None:
            self._usage.accepted(report)
        self._last_heartbeat = _utcnow()
        if problem != self._heartbeat_error and problem is not None:
            log.warning("anvil: %s", problem)
        self._heartbeat_error = problem

    def _usage_report(self) -> Report | None:
        usage = self._usage
        if usage is None:
            return None
        if usage.pending is None:
            for data in self._cache.take_usage():
                usage.take_over(data)
        return usage.take_report(_format_time(_utcnow()) or "")

    # --- lifecycle -----------------------------------------------------------------------

    def close(self) -> None:
        """Stop the background thread, give up polling for the cache dir, close the store.

        Prompts already loaded can still be rendered afterwards.
        """
        if self._closed.is_set():
            return
        self._closed.set()
        self._wake.set()
        self._heartbeat_wake.set()
        if self._hints is not None:
            self._hints.close()
        for thread in (self._thread, self._heartbeat_thread):
            if thread is not None and thread is not threading.current_thread():
                thread.join(timeout=30)
        if self._heartbeat is not None:
            self._heartbeat.close()
        # What was counted and is in no report yet waits in the disk cache for the next leader
        # (a report sent but not yet accepted is not: the FORGE may have recorded it).
        self._hand_over_usage()
        with self._lock:
            self._cache.resign()
            if self._owns_store and self._store is not None:
                self._store.close()
                self._store = None
        _CLIENTS.discard(self)

    def _after_fork_in_child(self) -> None:
        """Threads do not survive ``fork()``: new locks, no inherited leadership, a new poller."""
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._heartbeat_wake = threading.Event()
        self._heartbeat_thread = None
        if self._heartbeat is not None:
            # The parent's kept-alive connection: closing our copy of the descriptor sends
            # nothing (no shutdown), the parent keeps using it.
            self._heartbeat.close()
            self._heartbeat = self._heartbeat.fresh()
        if self._usage is not None:
            # Counts made before the fork are the parent's to report.
            self._usage = Usage(
                first_report_id=time.time_ns() // 1_000_000, started=_format_time(_utcnow())
            )
            if self._snapshot is not None:
                self._snapshot.served.clear()  # their counters: the next render attaches new ones
        if self._hints is not None:
            self._hints.forget_after_fork()
            self._hints = self._hints.fresh()
        closed, self._closed = self._closed.is_set(), threading.Event()
        if closed:
            self._closed.set()
        self._cache.forget_lock_after_fork()
        if self._owns_store and self._store is not None:
            # Its connections belong to the parent; keep the object alive, never use it again.
            self._abandoned.append(self._store)
            self._store = None
        self._thread = None
        self._disk_sig = None
        now = self._clock()
        self._next_disk_check = self._next_full_compare = now
        if self._started and not self._closed.is_set():
            self._start_thread()


_CLIENTS: weakref.WeakSet[AnvilClient] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    global _default_lock
    _default_lock = threading.Lock()
    for client in list(_CLIENTS):
        client._after_fork_in_child()


os.register_at_fork(after_in_child=_after_fork_in_child)

_VERSION: str | None = None


def client_version() -> str:
    """The installed ``anvil-prompts`` version (looked up once, lazily)."""
    global _VERSION
    if _VERSION is None:
        from importlib import metadata

        try:
            _VERSION = metadata.version("anvil-prompts")
        except metadata.PackageNotFoundError:
            _VERSION = "0+unknown"
    return _VERSION


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Parsing a large bundle allocates tens of thousands of containers that all survive;
    the cyclic collector would scan them again and again (more than halving load time)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _carry_compiled(old: Snapshot, new: Snapshot) -> None:
    """Keep the compiled prompts of bundles that stay served (same spec object)."""
    for prompt_id, compiled in list(old.compiled.items()):
        spec = new.prompts.get(prompt_id)
        if spec is not None and spec is old.prompts.get(prompt_id):
            new.compiled[prompt_id] = compiled


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _format_time(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return parse_timestamp(text)
    except AnvilError:
        return None


def _latest(a: datetime | None, b: datetime | None) -> datetime | None:
    if a is None or b is None:
        return a or b
    return max(a, b)


# --- the module-level default client -----------------------------------------------------

_default: AnvilClient | None = None
_default_lock = threading.Lock()


def configure(*, config: ClientConfig | None = None, **settings: Any) -> AnvilClient:
    """(Re)configure the default client behind ``anvil_client.prompt()`` and friends.

    Settings are keyword arguments of :class:`AnvilClient`; anything not given comes from
    ``ANVIL_*`` env vars and ``./anvil.toml``. The disk cache is read here, once.

    Raises:
        ConfigError: if the configuration is incomplete or invalid.
    """
    global _default
    client = AnvilClient(config=config) if config is not None else AnvilClient.from_env(**settings)
    with _default_lock:
        old, _default = _default, client
    if old is not None:
        old.close()
    return client


def default_client() -> AnvilClient:
    """The default client, configured from the environment on first use.

    Raises:
        ConfigError: if the environment does not configure a client.
    """
    global _default
    client = _default
    if client is None:
        with _default_lock:
            if _default is None:
                _default = AnvilClient.from_env()
            client = _default
    return client


def prompt(prompt_id: str, /, *, fallback: str | None = None, **variables: Any) -> str:
    """:meth:`AnvilClient.prompt` on the default client.

    Raises:
        ConfigError: if no client could be configured from the environment.
        PromptNotFound: if the prompt is not served and no fallback is given.
        RenderError: if rendering fails (MissingVariable names the variable).
    """
    return (_default or default_client()).prompt(prompt_id, fallback=fallback, **variables)


def messages(prompt_id: str, /, **variables: Any) -> list[dict[str, str]]:
    """:meth:`AnvilClient.messages` on the default client.

    Raises:
        ConfigError: if no client could be configured from the environment.
        PromptNotFound: if the prompt is not served.
        RenderError: if rendering fails.
    """
    return (_default or default_client()).messages(prompt_id, **variables)


def template(prompt_id: str, /) -> str:
    """:meth:`AnvilClient.template` on the default client.

    Raises:
        ConfigError: if no client could be configured from the environment.
        PromptNotFound: if the prompt is not served.
    """
    return (_default or default_client()).template(prompt_id)


def record(
    prompt_id: str,
    /,
    *,
    input_tokens: int | None = None,
    output_tokens: int | None = None,
    latency_ms: float | None = None,
    error: object = None,
) -> None:
    """:meth:`AnvilClient.record` on the default client.

    Raises:
        ConfigError: if no client could be configured from the environment.
        TypeError: for an argument of the wrong type.
        ValueError: for a negative or non-finite number, or an empty prompt id.
    """
    (_default or default_client()).record(
        prompt_id,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        latency_ms=latency_ms,
        error=error,
    )


def status() -> Status:
    """:meth:`AnvilClient.status` of the default client.

    Raises:
        ConfigError: if no client could be configured from the environment.
    """
    return (_default or default_client()).status()
