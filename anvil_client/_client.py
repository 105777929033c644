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

:class:`AnvilClient` is the front (construction, serving, status); what runs behind it is in
layers below it, one module each (see ``_core``): ``_disk_sync`` (disk cache, bootstrap file),
``_poller`` (poll, verify, apply), ``_reporting`` (heartbeats, usage), ``_scheduler`` (threads,
hints, fork handling; the timings are in ``_timing``). ``_default`` holds the module-level client.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from anvil_client import _timing
from anvil_client._config import DEFAULT_CACHE_DIR, ClientConfig, Mode
from anvil_client._outcome import check_outcome
from anvil_client._scheduler import Scheduler
from anvil_client._snapshot import Snapshot
from anvil_client._status import ReleaseStatus, Status
from anvil_client._timing import (
    client_version,
    format_time,
    latest,
    parse_time,
)
from anvil_client._usage import Counter
from anvil_client._verify import describe, is_expired
from anvil_client.errors import AnvilError, ConfigError, PromptNotFound, RenderError
from anvil_client.stores import DEFAULT_MAX_SIZE, ObjectStore
from anvil_client.wire import (
    CompiledPrompt,
    PromptSpec,
    TrustedKey,
    compile_prompt,
    template_variables,
)

_FALLBACK_CACHE_SIZE = 256
T = TypeVar("T")


class AnvilClient(Scheduler):
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
        self._init_state(config, start=start)
        now = self._clock()
        self._init_reporting(now)
        self._init_schedule(now)
        self._load_disk_cache()
        self._fast_heartbeats_until = now  # loading what was applied before is no new release
        self._begin(start=start)

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
        return _counted(counter, compiled.render_messages, variables)

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
        return _counted(counter, compiled.render, variables)

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

    @property
    def instance_id(self) -> str:
        return self._instance_id

    def status(self) -> Status:
        """Mode and its source, what is served, when the store was last checked, errors."""
        snapshot = self._snapshot
        last_check, last_sync, last_error = self._last_check, self._last_sync, self._last_error
        shared = self._shared  # what the poller of this cache dir (or `anvil sync`) recorded
        if shared is not None:
            shared_check = parse_time(shared.last_check)
            if shared_check is not None and (last_check is None or shared_check > last_check):
                last_check, last_error = shared_check, shared.last_error or last_error
            last_sync = latest(last_sync, parse_time(shared.last_sync))
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
            last_sync=format_time(last_sync),
            last_check=format_time(last_check),
            last_error=last_error,
            stale=self._is_stale(snapshot, last_sync),
            instance_id=self._instance_id,
            leader=self._cache.leading,
            store=self.config.store_url,
            cache_dir=str(self._cache.dir),
            last_heartbeat=format_time(self._last_heartbeat),
            heartbeat_error=self._heartbeat_error,
            hints=self._hints.state if self._hints is not None else "off",
        )

    def _is_stale(self, snapshot: Snapshot | None, last_sync: datetime | None) -> bool:
        now = _timing.utcnow()
        if snapshot is None or is_expired(snapshot.pointer, now):
            return True
        if self.mode == "frozen":
            return False
        seconds = 3 * self.config.poll_interval
        if not self._cache.leading:  # the poller shares its times only every share period
            seconds += self._share_period
        return last_sync is None or now - last_sync > timedelta(seconds=seconds)

    # --- fetching --------------------------------------------------------------------------

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


def _counted(
    counter: Counter, render: Callable[[dict[str, Any]], T], variables: dict[str, Any]
) -> T:
    """``render(variables)``, counted (``prompt()`` has the same steps inline: its hot path)."""
    counter.renders += 1
    if counter.sample:  # re-armed every second by the background thread
        counter.sample = False
        counter.note_names(variables)
    try:
        return render(variables)
    except Exception as e:
        counter.failed(e, variables)
        raise


__all__ = ["AnvilClient", "ReleaseStatus", "Status", "client_version"]
