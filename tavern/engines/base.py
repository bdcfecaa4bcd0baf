"""The one engine interface, shared by the embedded llama.cpp engine and remote backends.

Callers (the chat session, benchmarks) hand an engine a `GenerationRequest` and iterate the
events it yields: `Token` deltas while the reply streams, then one `Finished` with the full
text and `TurnStats`. Cancellation is a `threading.Event` the engine checks between tokens.
An engine never raises for a failure mid-reply: it yields `Finished(error=...)` with the text
so far, so the caller keeps the user's message and the partial reply.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable


@dataclass
class GenerationRequest:
    prompt: str
    """The whole text-completion prompt, already formatted."""
    max_tokens: int = 250
    stop: Sequence[str] = ()
    sampler: Any = None
    """A tavern.engines.samplers.SamplerSettings (None: the engine's defaults)."""
    add_bos: bool = True
    """Whether the engine adds the model's BOS token; False when the template wrote it."""
    messages: list[dict] | None = None
    """Role-tagged messages, for chat-completion APIs that take no raw prompt."""
    seq_id: int = 0
    """Which sequence of the engine's KV cache this request uses (room for CFG's second one)."""


@dataclass
class TurnStats:
    prompt_tokens: int = 0
    cached_tokens: int = 0
    """Prompt tokens served from the KV cache (common prefix plus shifted chunks)."""
    evaluated_tokens: int = 0
    ttft_ms: float = 0.0
    gen_tokens: int = 0
    gen_tps: float = 0.0
    prompt_ms: float = 0.0
    total_ms: float = 0.0
    shifted_tokens: int = 0
    """Of cached_tokens, how many were moved by a context shift rather than a plain prefix."""
    seed: int | None = None
    stop_reason: str = ""
    """eos, stop, length, cancelled, loop (stopped by loop detection) or error."""
    loop: dict[str, Any] | None = None
    """What loop detection found and did this turn (tavern/loop_guard.py); None: nothing."""

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class Token:
    text: str


@dataclass
class Finished:
    text: str
    stats: TurnStats = field(default_factory=TurnStats)
    error: str | None = None


Event = Token | Finished


@runtime_checkable
class Engine(Protocol):
    """What every backend offers. Optional abilities are flags, not missing methods."""

    name: str
    supports_raw_prompt: bool
    supports_kv_shift: bool

    @property
    def context_size(self) -> int: ...

    @property
    def model_name(self) -> str: ...

    def load(self) -> None:
        """Load or connect; raises ModelLoadError/EngineError with one line."""

    def unload(self) -> None: ...

    def tokenize(self, text: str, add_bos: bool = False) -> list[int]: ...

    def count_tokens(self, text: str) -> int: ...

    def generate(
        self, request: GenerationRequest, cancel: threading.Event | None = None
    ) -> Iterator[Event]: ...

    def metadata(self) -> dict[str, str]:
        """Model metadata (e.g. the GGUF's tokenizer.chat_template); {} when unknown."""
