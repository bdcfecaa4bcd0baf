"""The one engine interface, shared by the embedded llama.cpp engine and remote backends.

Callers (the chat session, benchmarks) hand an engine a `GenerationRequest` and iterate the
events it yields: `Token` deltas while the reply streams, then one `Finished` with the full
text and `TurnStats`; with `report_progress`, `PromptProgress` (a Token without text) while
the prompt is read. Cancellation is a `threading.Event` the engine checks between tokens.
An engine never raises for a failure mid-reply: it yields `Finished(error=...)` with the text
so far, so the caller keeps the user's message and the partial reply.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:  # pragma: no cover - typing only; samplers imports pydantic
    from tavern.engines.samplers import SamplerSettings

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
    sampler: SamplerSettings | None = None
    """The samplers to draw with (None: the engine's defaults)."""
    add_bos: bool = True
    """Whether the engine adds the model's BOS token; False when the template wrote it."""
    messages: list[dict[str, str]] | None = None
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
    report_progress: bool = False
    """Yield `PromptProgress` events while the prompt is read (the embedded engine does; remote
    engines send none): a long prompt on a CPU takes minutes before the first token."""


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
    prompt_tps: float = 0.0
    """Prompt tokens evaluated per second (evaluated_tokens over prompt_ms; 0 when none were)."""
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
    restored_from_disk: bool = False
    """That state was read from disk (a previous process saved it: the chat reopened after a
    restart), not from host memory."""
    saved_states: int = 0
    """States in the engine's host-memory prompt cache after this turn, and their size."""
    saved_state_mib: float = 0.0
    seed: int | None = None
    stop_reason: str = ""
    """eos, stop, length, cancelled, loop (stopped by loop detection) or error."""
    loop: dict[str, object] | None = None
    """What loop detection found and did this turn (tavern/loop_guard.py); None: nothing."""

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass
class Token:
    text: str


@dataclass
class PromptProgress(Token):
    """How far the engine has read the prompt: `done` of the `total` tokens it must evaluate
    (what the cache lacks), `seconds` after it began. First 0 of total, then one per decoded
    batch, the last with done == total, all before the first Token. A Token with no text, so
    a consumer that knows only Token and Finished shows nothing for it."""

    text: str = ""
    done: int = 0
    total: int = 0
    seconds: float = 0.0

    @property
    def tokens_per_s(self) -> float:
        return self.done / self.seconds if self.done and self.seconds > 0 else 0.0

    def describe(self) -> str:
        """One line for a status bar: `reading prompt 800/1908 · 1234 tok/s`."""
        line = f"reading prompt {self.done}/{self.total}"
        return f"{line} · {self.tokens_per_s:.0f} tok/s" if self.tokens_per_s else line


@dataclass
class Finished:
    text: str
    stats: TurnStats = field(default_factory=TurnStats)
    error: str | None = None
    extra: dict[str, object] = field(default_factory=dict)
    """Stored with the message (e.g. extra["reasoning"]: a reasoning model's thoughts)."""


Event = Token | Finished


@dataclass(frozen=True)
class Capabilities:
    """What an engine can do, declared once by the engine: callers branch on these flags, never
    on an engine's class or on attributes it may lack."""

    raw_prompt: bool = True
    """Takes the assembled text prompt (False: role-tagged messages only, e.g. openai-chat)."""
    kv_shift: bool = False
    """Moves cached cells when text is removed above them (a context shift)."""
    keeps_removed_text: bool = False
    """Text that left the prompt and comes back anywhere costs nothing (the embedded engine's
    cell bank); False: text inserted above cached text costs what follows it, as llama-server's
    cache reuse does, so the prompt layout inserts only before the newest message."""
    counts_many: bool = False
    """`count_tokens_many` is cheaper than counting one text at a time (a server: one request
    or one concurrent batch instead of a round trip per text), so the assembler primes counts."""
    counts_joined: bool = False
    """Counts many texts in one request (`count_tokens_many`), so priming more is cheap."""
    cfg: bool = False
    """Applies a negative prompt (classifier-free guidance)."""
    token_ids: bool = False
    """`tokenize` returns the model's own token ids (False: it raises EngineError)."""


@runtime_checkable
class Engine(Protocol):
    """What every backend offers. Optional abilities are `capabilities` flags, never missing
    methods; the methods with a body here are defaults an engine inherits by subclassing."""

    name: str
    """The API name shown with a reply ("llama.cpp", "openai-chat", ...)."""

    @property
    def capabilities(self) -> Capabilities: ...

    @property
    def loaded(self) -> bool:
        """Whether `load` has run and `unload` has not since (a model in memory, a client open)."""
        ...

    @property
    def context_size(self) -> int: ...

    @property
    def background_context(self) -> int:
        """The cells a background job (SEQ_BACKGROUND, a summary) may use: its own sequence's
        window where the engine keeps one, else the whole context."""
        return self.context_size

    @property
    def model_name(self) -> str: ...

    @property
    def format_hint(self) -> str:
        """A prompt format the backend's profile names ("" = choose by the model)."""
        return ""

    def load(self) -> None:
        """Load or connect; raises ModelLoadError/EngineError with one line."""

    def unload(self) -> None: ...

    def tokenize(self, text: str, add_bos: bool = False) -> list[int]:
        """The model's token ids; raises EngineError where `capabilities.token_ids` is False."""
        ...

    def count_tokens(self, text: str) -> int: ...

    def max_token_bytes(self) -> int | None:
        """The most bytes one token of the vocabulary spells (None: unknown): a text longer
        than the room times this surely does not fit, and need not be counted."""
        return None

    def count_tokens_many(self, texts: list[str]) -> list[int]:
        """Counts of many texts; an engine that can batch them overrides this."""
        return [self.count_tokens(t) if t else 0 for t in texts]

    def generate(
        self, request: GenerationRequest, cancel: threading.Event | None = None
    ) -> Iterator[Event]: ...

    def metadata(self) -> dict[str, str]:
        """Model metadata (e.g. the GGUF's tokenizer.chat_template); {} when unknown."""
        ...

    def take_notices(self) -> list[str]:
        """What the engine asks the front to tell the user, once each (a sampler the API cannot
        take, a parameter the server ignored); cleared by the call."""
        return []
