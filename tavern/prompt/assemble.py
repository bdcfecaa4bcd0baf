"""Context assembly: the exact prompt for one turn, within the token budget.

Called by the chat session (and `tavern prompt`) with plain data: a card, the chat's messages,
the lorebook scan, optional summary and recalled memories, and the prompt format. It returns the
prompt text plus an itemized account of where every token went and what was dropped and why,
which the CLI's `--explain` and the TUI's prompt inspector print.

Budget: `n_ctx - reply reserve`. The fixed parts go in first (system prompt, card, persona,
lore, summary, recall, depth injections), then the history newest first until the next message
would not fit, then example dialogue blocks (SillyTavern's order) unless they are pinned.
Tokens are counted with the engine's own tokenizer, and the final text is counted once more
as a whole: if template seams made it longer than the sum of its parts, one more old message
goes, so the budget always holds.

Layout (`layout="cache_friendly"`, Tavern's default, documented in the README): the system
block holds only what is stable for the whole chat (system prompt, card, persona, examples),
so the engine's KV cache keeps it across turns. What changes from turn to turn (lorebook
entries, the summary, recalled memories) are "notes": each one a unit with an anchor, the chat
message it sits before. A unit that stays (same text) keeps its anchor, so its cells stay
cached; a lapsed one is removed (cheap for any cache that reuses chunks), and when it fires
again with the same text it goes back to its place (the engine's cell bank kept its cells); a
new or changed one is anchored before the newest message, where it costs its own tokens. Units
whose anchors left the window sit before the oldest message kept. Units at one place form one
system message.
The `sillytavern` layout puts lore before/after the card in the system block as SillyTavern does.

This module holds the contract (what the assembler is given and what it returns, the token
counter) and `assemble_prompt`, which runs the steps: `system_block` (system prompt, card,
persona, examples), `lore_placement` (the scan's text by position and depth), `injections`
(depth injections, the notes and their anchors) and `history_window` (the budget: which
messages and examples fit, and the whole-prompt count).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol

from tavern.prompt.history_window import (
    Draft,
    Fitted,
    fill_window,
    fit_examples,
    fit_pinned_examples,
    fit_whole,
    render_prompt,
    trim_window,
)
from tavern.prompt.injections import NoteUnit, anchor_notes, depth_injections, notes_units, remember_lapsed
from tavern.prompt.lore_placement import LoreSlots, budget_rejections
from tavern.prompt.system_block import SystemBlock, system_prompt

if TYPE_CHECKING:
    from tavern.prompt.st_presets import StoryTemplate
    from tavern.prompt.templates import PromptFormat

Mode = Literal["normal", "continue", "impersonate"]

#: One role-tagged message of a prompt: {"role": ..., "content": ...}.
PromptMessage = dict[str, str]


@dataclass
class HistoryMessage:
    name: str
    text: str
    is_user: bool
    is_system: bool = False
    index: int = -1
    """Position in the chat file; kept so the inspector can say which messages were dropped."""


@dataclass
class AuthorNote:
    text: str = ""
    depth: int = 4
    frequency: int = 1
    """Insert every N user turns (0 = never), as SillyTavern's note_interval."""
    role: str = "system"


class CardLike(Protocol):
    """What the assembler reads of a character card (tavern.cards.Card)."""

    @property
    def name(self) -> str: ...
    @property
    def description(self) -> str: ...
    @property
    def personality(self) -> str: ...
    @property
    def scenario(self) -> str: ...
    @property
    def mes_example(self) -> str: ...
    @property
    def system_prompt(self) -> str: ...
    @property
    def post_history_instructions(self) -> str: ...
    @property
    def depth_prompt(self) -> tuple[str, int, str] | None: ...


class LoreNote(Protocol):
    """An activated lorebook entry, as the assembler reads it (tavern.lore.ActivatedEntry)."""

    @property
    def book(self) -> str: ...
    @property
    def uid(self) -> int: ...
    @property
    def content(self) -> str: ...
    @property
    def position(self) -> int: ...
    @property
    def order(self) -> float: ...


class LoreRejection(Protocol):
    """An entry a rule kept out (tavern.lore.Rejection)."""

    @property
    def uid(self) -> int: ...
    @property
    def comment(self) -> str: ...
    @property
    def reason(self) -> str: ...


class LoreScan(Protocol):
    """What the assembler reads of a lorebook scan (tavern.lore.ScanResult)."""

    @property
    def activated(self) -> Sequence[LoreNote]: ...
    @property
    def rejected(self) -> Sequence[LoreRejection]: ...
    def by_position(self) -> Mapping[int, object]:
        """Text per insertion position; key 4: a list of (depth, role, text)."""
        ...


@dataclass
class CardFields:
    """What the assembler needs of a card, with macros not yet substituted."""

    name: str
    description: str = ""
    personality: str = ""
    scenario: str = ""
    mes_example: str = ""
    system_prompt: str = ""
    post_history_instructions: str = ""
    depth_prompt: tuple[str, int, str] | None = None

    @classmethod
    def from_card(cls, card: CardLike) -> CardFields:
        return cls(
            name=card.name,
            description=card.description,
            personality=card.personality,
            scenario=card.scenario,
            mes_example=card.mes_example,
            system_prompt=card.system_prompt,
            post_history_instructions=card.post_history_instructions,
            depth_prompt=card.depth_prompt,
        )


@dataclass
class PromptInputs:
    card: CardFields
    user_name: str
    history: Sequence[HistoryMessage]
    persona: str = ""
    system_prompt: str = ""
    """The user's system prompt; a card's own system_prompt replaces it ({{original}} keeps it)."""
    lore: LoreScan | None = None
    """A tavern.lore.ScanResult, or None."""
    summary: str = ""
    recalled: Sequence[str] = ()
    author_note: AuthorNote | None = None
    mode: Mode = "normal"
    names_in_history: bool = True
    layout: Literal["cache_friendly", "sillytavern"] = "cache_friendly"
    pin_examples: bool | None = None
    """None: pinned in the cache-friendly layout (dropping examples rewrites the prompt's top)."""
    trim_step: float = 0.0
    macro: Callable[[str], str] = staticmethod(lambda s: s)
    """Macro substitution for card fields, lore and notes (tavern.prompt.macros.substitute)."""
    story: StoryTemplate | None = None
    """The context preset (st_presets.StoryTemplate) of the sillytavern layout; None: SillyTavern's
    default one."""
    note_anchors: dict[str, tuple[int, str]] | None = None
    """Notes unit key -> (chat index, text) from the last sent turn: a unit whose text is
    unchanged stays before the same message, so the engine's cache keeps it."""
    return_lapsed: bool = False
    """The engine keeps text that left the prompt (Engine.keeps_removed_text): a unit that
    lapsed and fires again goes back to its place. Off, it goes before the newest message, the
    only place where any cache (llama-server's) evaluates nothing but its tokens."""
    depth_lore_drift: int = 0
    """Tavern's cache-aware lore mode (`[lore] cache_aware`; 0 = off, SillyTavern's rule): an
    @depth lore block that stays unchanged keeps its place instead of moving with the newest
    message every turn (each move re-evaluates it), until it has drifted this many messages past
    its depth; then it goes back to its depth once."""
    window_floor: int | None = None
    """Cache-friendly layout: the oldest message of the last sent prompt. Older messages stay
    out even when the notes shrink and would leave room: bringing one back means evaluating it
    again at the top of the window (SillyTavern refills the window; Tavern lets it run ahead).
    Unless more than half the budget would stay empty (the user deleted the newest messages):
    then the window refills."""


@dataclass
class SlotUsage:
    slot: str
    tokens: int
    detail: str = ""


@dataclass
class AssembledPrompt:
    text: str
    stop: list[str]
    add_bos: bool
    messages: list[PromptMessage]
    """The same prompt as role-tagged messages, for chat-completion APIs."""
    slots: list[SlotUsage]
    dropped: list[str]
    prompt_tokens: int
    budget: int
    n_ctx: int
    reply_reserve: int
    first_message_index: int
    """Index (in the chat) of the oldest message that made it in; -1 when none did."""
    warnings: list[str] = field(default_factory=list)
    note_anchors: dict[str, tuple[int, str]] = field(default_factory=dict)
    """Where each notes unit went this turn, then where the last units that lapsed were (the
    place a unit goes back to when it fires again); once the turn is sent, pass it back as
    PromptInputs.note_anchors."""

    @property
    def free_tokens(self) -> int:
        return max(0, self.budget - self.prompt_tokens)

    def explain(self) -> str:
        width = max([len(s.slot) for s in self.slots] + [12])
        lines = [f"{'slot':<{width}}  tokens  detail"]
        for s in self.slots:
            lines.append(f"{s.slot:<{width}}  {s.tokens:>6}  {s.detail}")
        lines.append(f"{'reply reserve':<{width}}  {self.reply_reserve:>6}")
        lines.append(f"{'free':<{width}}  {self.free_tokens:>6}")
        lines.append(f"{'total':<{width}}  {self.n_ctx:>6}  context size")
        if self.dropped:
            lines.append("dropped:")
            lines.extend(f"  - {d}" for d in self.dropped)
        if self.warnings:
            lines.append("warnings:")
            lines.extend(f"  ! {w}" for w in self.warnings)
        return "\n".join(lines)

    def to_json(self) -> dict[str, object]:
        return {
            "prompt": self.text,
            "prompt_tokens": self.prompt_tokens,
            "budget": self.budget,
            "n_ctx": self.n_ctx,
            "reply_reserve": self.reply_reserve,
            "free": self.free_tokens,
            "slots": [{"slot": s.slot, "tokens": s.tokens, "detail": s.detail} for s in self.slots],
            "dropped": self.dropped,
            "warnings": self.warnings,
            "stop": self.stop,
            "first_message_index": self.first_message_index,
        }


class TokenCounter:
    """Counts with the backend's tokenizer and remembers: a turn re-counts only new text."""

    def __init__(
        self,
        count: Callable[[str], int],
        max_entries: int = 100_000,
        count_many: Callable[[list[str]], list[int]] | None = None,
        max_token_bytes: int | None = None,
    ):
        self._count = count
        self._count_many = count_many
        """A backend that counts many texts at once (a remote server: one request or one
        concurrent batch, not a round trip per piece); None: `prime` does nothing."""
        self.max_token_bytes = max_token_bytes
        """The most bytes one token spells (None: unknown): see `cannot_fit`."""
        self._cache: OrderedDict[str, int] = OrderedDict()
        self._max = max_entries
        self._seen = [0, 0]  # characters and tokens counted so far: this model's ratio

    def known(self, text: str) -> int | None:
        return self._cache.get(text)

    def cannot_fit(self, text: str, room: int) -> bool:
        """True when `text` is surely over `room` tokens, known without tokenizing it: every
        token spells at most `max_token_bytes` bytes. Tokenizing is linear but slow (2 s per
        MB): a 10 MB message in an 8k context needs no count to be left out."""
        limit = self.max_token_bytes
        if not limit or text in self._cache or len(text) <= room * limit // 4:
            return False  # a character is at most 4 UTF-8 bytes: too short to decide by length
        return len(text.encode("utf-8", "surrogatepass")) > room * limit

    def chars_per_token(self) -> float:
        chars, tokens = self._seen
        return chars / tokens if tokens > 50 else 4.0

    @property
    def batches(self) -> bool:
        return self._count_many is not None

    def prime(self, texts: list[str]) -> None:
        """Count the texts not known yet in one batch, so the calls that follow are hits."""
        if self._count_many is None:
            return
        todo = [t for t in dict.fromkeys(texts) if t and t not in self._cache]
        if len(todo) < 2:
            return
        for text, n in zip(todo, self._count_many(todo), strict=True):
            self._cache[text] = n
            self._seen[0] += len(text)
            self._seen[1] += n
        while len(self._cache) > self._max:
            self._cache.popitem(last=False)

    def __call__(self, text: str) -> int:
        if not text:
            return 0
        hit = self._cache.get(text)
        if hit is not None:
            self._cache.move_to_end(text)
            return hit
        n = self._count(text)
        self._cache[text] = n
        self._seen[0] += len(text)
        self._seen[1] += n
        if len(self._cache) > self._max:
            self._cache.popitem(last=False)
        return n


def assemble_prompt(
    inputs: PromptInputs,
    fmt: PromptFormat,
    count: Callable[[str], int],
    n_ctx: int,
    reply_reserve: int,
) -> AssembledPrompt:
    """Build the prompt. `fmt` is a tavern.prompt.templates.PromptFormat; `count` a TokenCounter."""
    budget = max(0, n_ctx - reply_reserve)
    dropped: list[str] = []
    warnings: list[str] = []

    # The parts, macros substituted in this order (a {{setvar}} is seen by the texts after it):
    # the system prompt, the lore, the card, persona and examples, the notes, the injections.
    system = system_prompt(inputs)
    system_text = inputs.macro(system)
    lore = LoreSlots.from_scan(inputs.lore, inputs.macro)
    block = SystemBlock.build(inputs, system, system_text, lore)
    units = notes_units(inputs, block.st_layout)
    history = [h for h in inputs.history if not h.is_system]
    previous = inputs.note_anchors or {}
    note_anchors: dict[str, tuple[int, str]] = {}
    injections = depth_injections(inputs, lore, history, note_anchors)
    injections += anchor_notes(units, history, previous, note_anchors)
    draft = Draft(inputs, fmt, count, block, history, injections)

    # The budget: the fixed part, the history newest first, the examples, the whole once more.
    n_examples, fixed_tokens = fit_pinned_examples(draft, budget, dropped)
    if fixed_tokens > budget:
        warnings.append(
            f"the card, system prompt and notes take {fixed_tokens} tokens, over the {budget}-token budget: no room for history"
        )
    counter = count if isinstance(count, TokenCounter) else None
    n_hist, used = fill_window(draft, budget, fixed_tokens, counter)
    n_hist, used = trim_window(draft, budget, n_hist, used)
    if not block.pin:
        n_examples = fit_examples(draft, budget, used, dropped)
    fitted = fit_whole(draft, budget, n_hist, n_examples)
    if fitted.n_hist < len(history):
        gone = len(history) - fitted.n_hist
        dropped.append(f"{gone} oldest message{'s' if gone != 1 else ''}: over the budget")
    hidden = len(inputs.history) - len(history)
    if hidden:
        dropped.append(f"{hidden} hidden (system) message{'s' if hidden != 1 else ''}")

    slots = _account(draft, units, lore.detail, n_examples, fitted)
    if inputs.return_lapsed:
        remember_lapsed(previous, note_anchors)
    if inputs.lore is not None:
        dropped += budget_rejections(inputs.lore)
    return AssembledPrompt(
        text=fitted.text,
        stop=_stops(fmt, inputs),
        add_bos=not getattr(fmt, "template_adds_bos", False),
        messages=fitted.messages,
        slots=slots,
        dropped=dropped,
        prompt_tokens=fitted.tokens,
        budget=budget,
        n_ctx=n_ctx,
        reply_reserve=reply_reserve,
        first_message_index=draft.oldest(fitted.n_hist).index if fitted.n_hist else -1,
        warnings=warnings,
        note_anchors=note_anchors,
    )


def _account(
    draft: Draft, units: Sequence[NoteUnit], lore_detail: str, n_examples: int, fitted: Fitted
) -> list[SlotUsage]:
    """Where the tokens went, slot by slot; "format" takes what the parts do not explain."""
    count = draft.count
    slots: list[SlotUsage] = []
    for name, t in draft.block.parts:
        if t:
            slots.append(SlotUsage(name, count(t)))
    if n_examples:
        slots.append(
            SlotUsage(
                "examples",
                draft.fixed_cost(n_examples) - draft.fixed_cost(0),
                f"{n_examples} of {len(draft.block.examples)} blocks",
            )
        )
    for name in ("lore", "summary", "memory"):
        parts = [text for _key, slot, text in units if slot == name]
        if parts:
            # Lore at @depth is its own slot below: count only what the notes hold.
            detail = lore_detail if name == "lore" else ""
            slots.append(SlotUsage(name, sum(count(t) for t in parts), detail))
    for inj in draft.injections:
        if inj.source != "notes":
            slots.append(SlotUsage(inj.source, count(inj.text), f"depth {inj.depth}, {inj.role}"))
    hist_tokens = sum(draft.cost(h) for h in draft.kept(fitted.n_hist))
    slots.append(SlotUsage("history", hist_tokens, f"{fitted.n_hist} of {len(draft.history)} messages"))
    accounted = sum(s.tokens for s in slots)
    slots.append(SlotUsage("format", max(0, fitted.tokens - accounted), "template tokens, generation prompt"))
    return slots


def with_negative(
    prompt: AssembledPrompt, fmt: PromptFormat, inputs: PromptInputs, text: str, depth: int = 1
) -> str:
    """The negative prompt of classifier-free guidance, as SillyTavern builds it: the same
    messages with the negative text as a system message `depth` messages from the end."""
    msgs = list(prompt.messages)
    pos = max(1 if msgs and msgs[0]["role"] == "system" else 0, len(msgs) - depth)
    msgs.insert(pos, {"role": "system", "content": text})
    return render_prompt(fmt, msgs, inputs)


def _stops(fmt: PromptFormat, inputs: PromptInputs) -> list[str]:
    stops = list(getattr(fmt, "stop", []) or [])
    if inputs.names_in_history:
        other = inputs.card.name if inputs.mode == "impersonate" else inputs.user_name
        stops.append(f"\n{other}:")
    seen: list[str] = []
    for s in stops:
        if s and s not in seen:
            seen.append(s)
    return seen
