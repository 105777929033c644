"""What a client serves: one verified bundle, its pointer, and its prompts compiled lazily.

    >>> from anvil_client._snapshot import Snapshot
    >>> Snapshot.__slots__[:2]
    ('bundle', 'compiled')

A snapshot is immutable once built (its compile cache only grows), so swapping the one
reference a client holds is the whole update: ``prompt()`` never sees half of one.
"""

from __future__ import annotations

from typing import Literal

from anvil_client.wire import Bundle, CompiledPrompt, Pointer, PromptSpec, Release, compile_prompt

Source = Literal["store", "disk", "bootstrap"]


class Snapshot:
    """A verified pointer and bundle; ``compiled`` holds the prompts rendered so far."""

    __slots__ = ("bundle", "compiled", "envelope", "pointer", "release", "source")

    def __init__(
        self,
        *,
        envelope: bytes,
        pointer: Pointer,
        release: Release,
        bundle: Bundle,
        source: Source,
        compiled: dict[str, CompiledPrompt] | None = None,
    ) -> None:
        self.envelope = envelope
        self.pointer = pointer
        self.release = release
        self.bundle = bundle
        self.source: Source = source
        self.compiled: dict[str, CompiledPrompt] = {} if compiled is None else compiled

    def with_pointer(self, envelope: bytes, pointer: Pointer, release: Release) -> Snapshot:
        """The same content under a newer pointer; the compile cache is shared."""
        return Snapshot(
            envelope=envelope,
            pointer=pointer,
            release=release,
            bundle=self.bundle,
            source=self.source,
            compiled=self.compiled,
        )

    def compile(self, prompt_id: str) -> CompiledPrompt | None:
        """The compiled prompt, compiling it on first use; ``None`` if the bundle lacks it.

        Raises:
            RenderError: if the prompt's template does not compile.
        """
        compiled = self.compiled.get(prompt_id)
        if compiled is None:
            spec = self.spec(prompt_id)
            if spec is None:
                return None
            compiled = compile_prompt(prompt_id, spec)
            self.compiled[prompt_id] = compiled  # a race compiles twice, harmlessly
        return compiled

    def spec(self, prompt_id: str) -> PromptSpec | None:
        """The prompt's spec; ``None`` if the bundle lacks it."""
        return self.bundle.prompts.get(prompt_id)

    @property
    def content_sha256(self) -> str:
        return self.release.content_sha256

    @property
    def sequence(self) -> int:
        return self.pointer.sequence
