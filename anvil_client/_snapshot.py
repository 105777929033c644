"""What a client serves: the verified bundles of one entry list, their pointer, and their
prompts compiled lazily.

    >>> from anvil_client._snapshot import Snapshot
    >>> Snapshot.__slots__[:2]
    ('bundles', 'compiled')

A snapshot is immutable once built (its compile cache only grows), so swapping the one
reference a client holds is the whole update: ``prompt()`` never sees half of one, nor a mix
of two entry lists.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Literal

from anvil_client.wire import (
    Bundle,
    CompiledPrompt,
    Pointer,
    PromptSpec,
    Release,
    compile_prompt,
    rollout_key,
    served_version,
)

if TYPE_CHECKING:
    from anvil_client._usage import Counter

Source = Literal["store", "disk", "bootstrap"]


class Snapshot:
    """A verified pointer, the entries served from it and their bundles (same order).

    ``prompts`` is the union of the bundles' prompts (disjoint: checked before a snapshot is
    built); ``compiled`` holds the prompts rendered so far.
    """

    __slots__ = (
        "bundles",
        "compiled",
        "envelope",
        "pointer",
        "prompts",
        "releases",
        "served",
        "source",
    )

    def __init__(
        self,
        *,
        envelope: bytes,
        pointer: Pointer,
        releases: Sequence[Release],
        bundles: Sequence[Bundle],
        source: Source,
        compiled: dict[str, CompiledPrompt] | None = None,
    ) -> None:
        self.envelope = envelope
        self.pointer = pointer
        self.releases = tuple(releases)
        self.bundles = tuple(bundles)
        self.source: Source = source
        self.prompts: Mapping[str, PromptSpec]
        if len(self.bundles) == 1:
            self.prompts = self.bundles[0].prompts  # no copy of the usual single set
        else:
            merged: dict[str, PromptSpec] = {}
            for bundle in self.bundles:
                merged.update(bundle.prompts)
            self.prompts = merged
        self.compiled: dict[str, CompiledPrompt] = {} if compiled is None else compiled
        #: What ``prompt()`` looks up: the compiled prompt and its usage counter (or ``None``).
        self.served: dict[str, tuple[CompiledPrompt, Counter | None]] = {}

    def with_pointer(
        self, envelope: bytes, pointer: Pointer, releases: Sequence[Release]
    ) -> Snapshot:
        """The same content (same entries' ``content_sha256`` in the same order) under a newer
        pointer; names may differ, the compile cache is shared."""
        return Snapshot(
            envelope=envelope,
            pointer=pointer,
            releases=releases,
            bundles=self.bundles,
            source=self.source,
            compiled=self.compiled,
        )

    def compile(self, prompt_id: str) -> CompiledPrompt | None:
        """The compiled prompt, compiling it on first use; ``None`` if no bundle has it.

        Raises:
            RenderError: if the prompt's template does not compile.
        """
        compiled = self.compiled.get(prompt_id)
        if compiled is None:
            spec = self.prompts.get(prompt_id)
            if spec is None:
                return None
            compiled = compile_prompt(prompt_id, spec)
            self.compiled[prompt_id] = compiled  # a race compiles twice, harmlessly
        return compiled

    def content_of(self, prompt_id: str) -> str | None:
        """The ``content_sha256`` of the served entry that has ``prompt_id`` (or ``None``)."""
        if len(self.bundles) == 1:
            bundle = self.bundles[0]
            return bundle.content_sha256 if prompt_id in bundle.prompts else None
        for bundle in self.bundles:
            if prompt_id in bundle.prompts:
                return bundle.content_sha256
        return None

    def spec(self, prompt_id: str) -> PromptSpec | None:
        """The prompt's spec; ``None`` if no bundle has it."""
        return self.prompts.get(prompt_id)

    def bundle_of(self, content_sha256: str) -> Bundle | None:
        """The served bundle with this content hash, or ``None``."""
        return next((b for b in self.bundles if b.content_sha256 == content_sha256), None)

    def counts(self) -> dict[str, int]:
        """Prompts per served bundle, by content hash."""
        return {b.content_sha256: len(b.prompts) for b in self.bundles}

    @property
    def content_key(self) -> str:
        """The entries' content hashes joined by ``,``: equal keys serve equal prompts."""
        return rollout_key(self.releases)

    @property
    def contents(self) -> frozenset[str]:
        return frozenset(r.content_sha256 for r in self.releases)

    @property
    def version(self) -> str:
        """``status()["version"]`` (DESIGN §7)."""
        return served_version(self.releases)

    @property
    def sequence(self) -> int:
        return self.pointer.sequence
