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


SEQ_CHAT = 0
"""The chat's own sequence: its cache is what keeps turns cheap."""
SEQ_CFG = 1
"""The negative prompt of classifier-free guidance."""
SEQ_BACKGROUND = 2
"""Background jobs (a summary): never evicts the chat's cache."""


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
    negative_prompt: str | None = None
    """Classifier-free guidance: the whole negative prompt, formatted like `prompt`. Decoded on
    SEQ_CFG beside the chat; each token's logits are neg + scale x (pos - neg)."""
    guidance_scale: float = 1.0
    """1 = no guidance; above 1 pushes away from the negative prompt."""
    seq_id: int = SEQ_CHAT
    """Which sequence of the engine's KV cache this request uses (SEQ_CHAT, SEQ_CFG,
    SEQ_BACKGROUND); remote engines ignore it."""
    recurring: Sequence[str] = ()
    """Parts of the prompt that may leave it and come back on a later turn (the lorebook
    entries in it): the embedded engine keeps their cells when they leave, before old
    messages'. Remote engines ignore it."""


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
    banked_tokens: int = 0
    """Of cached_tokens, how many came back from the bank of text that left earlier prompts
    (a lore entry firing again, a note that moved)."""
    cfg_prompt_tokens: int = 0
    """The negative prompt's tokens, and how many of them were evaluated this turn."""
    cfg_evaluated_tokens: int = 0
    restored_state: str = ""
    """The saved state the turn started from ("" = the live cache), e.g. "#3"."""
    saved_states: int = 0
    """States in the engine's host-memory prompt cache after this turn, and their size."""
    saved_state_mib: float = 0.0
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
    extra: dict[str, Any] = field(default_factory=dict)
    """Stored with the message (e.g. extra["reasoning"]: a reasoning model's thoughts)."""


Event = Token | Finished


@runtime_checkable
class Engine(Protocol):
    """What every backend offers. Optional abilities are flags, not missing methods."""

    name: str
    supports_raw_prompt: bool
    supports_kv_shift: bool
    keeps_removed_text: bool
    """Text that left the prompt and comes back anywhere costs nothing (the embedded engine's
    cell bank); False: text inserted above cached text costs what follows it, as llama-server's
    cache reuse does, so the prompt layout inserts only before the newest message."""

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
