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
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

Mode = Literal["normal", "continue", "impersonate"]


MAX_LAPSED = 64
"""Notes units that lapsed whose place AssembledPrompt.note_anchors remembers."""


@dataclass
class HistoryMessage:
    name: str
    text: str
    is_user: bool
    is_system: bool = False
    index: int = -1
    """Position in the chat file; kept so the inspector can say which messages were dropped."""


@dataclass
class DepthInjection:
    """Text injected `depth` messages from the end (0 = after the last message)."""

    text: str
    depth: int
    role: str = "system"
    source: str = "author's note"
    before_index: int | None = None
    """When set, placed before the first message in the window whose chat index is at least
    this (the anchor of a notes unit)."""
    rank: int = 0
    """Order among notes placed at the same message."""


@dataclass
class AuthorNote:
    text: str = ""
    depth: int = 4
    frequency: int = 1
    """Insert every N user turns (0 = never), as SillyTavern's note_interval."""
    role: str = "system"


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
    def from_card(cls, card: Any) -> CardFields:
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
    lore: Any = None
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
    story: Any = None
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
    messages: list[dict]
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

    def to_json(self) -> dict:
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
        self.max_token_bytes = max_token_bytes
        """The most bytes one token spells (None: unknown): see `cannot_fit`."""
        """A backend that counts many texts at once (a remote server: one request or one
        concurrent batch, not a round trip per piece); None: `prime` does nothing."""
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


_PIECES: OrderedDict[tuple[int, str, str], str] = OrderedDict()


def message_cost(fmt: Any, message: dict, count: Callable[[str], int]) -> int:
    """Tokens one history message adds to the prompt.

    For formats that render message by message (ChatML, Llama 3, Alpaca...) this is exact: the
    message's own rendered piece, remembered so a turn renders only new messages. For formats
    that fold text across turns (Llama 2, Mistral, Gemma) it is an estimate (content plus a few
    tokens of markup); the assembler's final whole-prompt count corrects it.
    """
    if getattr(fmt, "is_concatenative", False):
        return count(message_piece(fmt, message))
    return count(message["content"]) + 8


def _cannot_fit(count: Any, fmt: Any, message: dict, room: int) -> bool:
    """The message surely costs more than `room` tokens (a counter that knows its vocabulary)."""
    # `count` may be a plain function (tests, a remote counter): only a TokenCounter knows.
    return isinstance(count, TokenCounter) and count.cannot_fit(message["content"], max(room, 0))


def message_piece(fmt: Any, message: dict) -> str:
    """The text `message_cost` counts for one message."""
    if not getattr(fmt, "is_concatenative", False):
        return message["content"]
    key = (id(fmt), message["role"], message["content"])
    piece = _PIECES.get(key)
    if piece is None:
        piece = fmt.render_message(message)
        _PIECES[key] = piece
        if len(_PIECES) > 50_000:
            _PIECES.popitem(last=False)
    return piece


def _prime_history(count: Any, pieces: list[str], budget: int) -> None:
    """Count the newest messages likely to fit in one batch (a remote counter), before the
    window is chosen message by message. A message counted before weighs its count; a new one
    the characters-per-token seen so far, less a sixth, so the batch rarely stops short (a
    message it missed is counted on its own). Once the counts are known the batch ends where
    the window does, so a later turn asks only about new messages."""
    per_token = count.chars_per_token() * 1.2
    chosen: list[str] = []
    estimate = 0.0
    for piece in pieces:
        if estimate > budget:
            break
        chosen.append(piece)
        known = count.known(piece)
        estimate += known if known is not None else len(piece) / per_token
    count.prime(chosen)


def split_examples(mes_example: str) -> list[str]:
    """`<START>`-separated example blocks, each kept whole."""
    text = mes_example.replace("\r", "")
    blocks = [b.strip("\n") for b in text.split("<START>")]
    return [b for b in blocks if b.strip()]


ROLE = {True: "user", False: "assistant"}


def assemble_prompt(
    inputs: PromptInputs,
    fmt: Any,
    count: Callable[[str], int],
    n_ctx: int,
    reply_reserve: int,
) -> AssembledPrompt:
    """Build the prompt. `fmt` is a tavern.prompt.templates.PromptFormat; `count` a TokenCounter."""
    m = inputs.macro
    card = inputs.card
    char, user = card.name, inputs.user_name
    budget = max(0, n_ctx - reply_reserve)
    slots: list[SlotUsage] = []
    dropped: list[str] = []
    warnings: list[str] = []

    # -- the stable system block ----------------------------------------------------------------
    system = inputs.system_prompt
    if card.system_prompt.strip():
        # A card's own system prompt wins; {{original}} inside it stands for the user's.
        system = card.system_prompt.replace("{{original}}", inputs.system_prompt)
    sys_parts = [("system prompt", m(system))]
    lore_before = lore_after = ""
    an_top = an_bottom = ""
    depth_lore: list[tuple[int, str, str]] = []
    examples_top = examples_bottom = ""
    lore_detail = ""
    if inputs.lore is not None:
        by_pos = inputs.lore.by_position()
        lore_before = m(by_pos.get(0, "") or "")
        lore_after = m(by_pos.get(1, "") or "")
        an_top = m(by_pos.get(2, "") or "")
        an_bottom = m(by_pos.get(3, "") or "")
        examples_top = m(by_pos.get(5, "") or "")
        examples_bottom = m(by_pos.get(6, "") or "")
        depth_lore = [(d, _role_name(r), m(t)) for d, r, t in by_pos.get(4, [])]
        lore_detail = f"{len(inputs.lore.activated)} entries"
    card_text = "\n".join(
        p
        for p in (
            m(card.description),
            _labelled(f"{char}'s personality", m(card.personality)),
            _labelled("Scenario", m(card.scenario)),
        )
        if p
    )
    st_layout = inputs.layout == "sillytavern"
    if st_layout:
        sys_parts += [
            ("lore (before card)", lore_before),
            ("card", card_text),
            ("lore (after card)", lore_after),
            ("persona", m(inputs.persona)),
        ]
    else:
        sys_parts += [("card", card_text)]
        sys_parts.append(("persona", _labelled(f"{user}'s persona", m(inputs.persona))))

    example_blocks = [m(b) for b in split_examples(card.mes_example)]
    story_fields = dict(
        system=m(system), description=m(card.description), personality=m(card.personality),
        scenario=m(card.scenario), persona=m(inputs.persona), char=char, user=user,
        wiBefore=lore_before, wiAfter=lore_after,
    )  # fmt: skip
    pin = inputs.pin_examples if inputs.pin_examples is not None else not st_layout

    # -- the volatile notes (lore, summary, recall), one unit each -----------------------
    units: list[tuple[str, str, str]] = []  # (key, slot, text)
    if not st_layout and inputs.lore is not None:
        for e in _notes_entries(inputs.lore):
            units.append((f"lore:{e.book}:{e.uid}", "lore", m(e.content)))
    summary = _labelled("Summary of earlier events", inputs.summary)
    if summary:
        units.append(("summary", "summary", summary))
    memory = _labelled("Recalled from earlier in the chat", "\n".join(inputs.recalled))
    if memory:
        units.append(("memory", "memory", memory))
    units = [u for u in units if u[2].strip()]

    # -- depth injections --------------------------------------------------------------------
    injections: list[DepthInjection] = []
    note = inputs.author_note
    user_turns = sum(1 for h in inputs.history if h.is_user and not h.is_system)
    if (
        note
        and (note.text or an_top or an_bottom)
        and note.frequency > 0
        and user_turns % note.frequency == 0
    ):
        text = "\n".join(t for t in (an_top, m(note.text), an_bottom) if t)
        injections.append(DepthInjection(text, note.depth, note.role, "author's note"))
    history = [h for h in inputs.history if not h.is_system]
    note_anchors: dict[str, tuple[int, str]] = {}
    for d, role, text in depth_lore:
        anchor = _depth_anchor(f"depth:{d}:{role}", d, text, history, inputs, note_anchors)
        injections.append(DepthInjection(text, d, role, "lore @depth", before_index=anchor))
    if card.depth_prompt and card.depth_prompt[0].strip():
        p, d, role = card.depth_prompt
        injections.append(DepthInjection(m(p), int(d), role, "character's note"))
    if card.post_history_instructions.strip():
        injections.append(DepthInjection(m(card.post_history_instructions), 0, "system", "post-history"))
    hidden = len(inputs.history) - len(history)
    previous = inputs.note_anchors or {}
    if units and history:
        # Unchanged units keep their anchor; new or changed ones go before the newest message.
        # With `return_lapsed` a unit that lapsed and fires again with the same text is placed
        # as if it had stayed: before its old message, or at the top with the units whose
        # message left the window. The engine's cell bank kept its cells with the very edges
        # they had there, so it costs nothing, where a new block before the newest message
        # costs its header and end.
        newest = history[-1].index
        for rank, (key, _slot, text) in enumerate(units):
            old = previous.get(key)
            anchor = old[0] if old and old[1] == text and old[0] <= newest else newest
            injections.append(DepthInjection(text, 1, "system", "notes", before_index=anchor, rank=rank))
            note_anchors[key] = (anchor, text)
    elif units:
        injections.append(DepthInjection("\n".join(u[2] for u in units), 1, "system", "notes"))

    # -- history, newest first -----------------------------------------------------------------

    def msg(h: HistoryMessage) -> dict:
        text = h.text
        if inputs.names_in_history:
            text = f"{h.name}: {text}"
        return {"role": ROLE[h.is_user], "content": text}

    def build(n_hist: int, n_examples: int, with_injections: bool = True) -> list[dict]:
        """Messages for the last n_hist history entries and the first n_examples blocks."""
        sys_text_parts = [t for _, t in sys_parts if t]
        ex = example_blocks[:n_examples]
        if ex or examples_top or examples_bottom:
            body = "\n".join(t for t in [examples_top, *[f"<START>\n{b}" for b in ex], examples_bottom] if t)
            sys_text_parts.append(f"Example dialogue:\n{body}")
        # One newline between the parts, as SillyTavern's story strings join them.
        system_msg = {"role": "system", "content": "\n".join(sys_text_parts)}
        if st_layout:  # SillyTavern's story string, examples and chat start (tavern.prompt.story)
            from tavern.prompt.story import story_system_text

            blocks = [t for t in (examples_top, *ex, examples_bottom) if t]
            system_msg["content"] = story_system_text(inputs.story, story_fields, blocks, m, fmt)
        kept = history[len(history) - n_hist :] if n_hist else []
        chat = [msg(h) for h in kept]
        # Injections by position in the window, computed before any insertion; stable for ties.
        placed = []
        for order, inj in enumerate(injections if with_injections else ()):
            pos = max(0, len(kept) - inj.depth)
            key: tuple = (order,)
            if inj.before_index is not None and inj.source == "notes":
                pos = next((i for i, h in enumerate(kept) if h.index >= inj.before_index), pos)
                key = (-1, inj.before_index, inj.rank)  # notes first, oldest anchor first
            elif inj.before_index is not None:  # an anchored @depth block (cache-aware mode)
                pos = next((i for i, h in enumerate(kept) if h.index >= inj.before_index), pos)
            placed.append((pos, key, inj))
        placed.sort(key=lambda p: (p[0], p[1]))
        for pos, group in reversed([(pos, [p[2] for p in grp]) for pos, grp in _grouped(placed)]):
            # Notes at one place are one message; other injections one message each.
            notes = [i.text for i in group if i.source == "notes"]
            others = [{"role": _chat_role(i.role), "content": i.text} for i in group if i.source != "notes"]
            block = ([{"role": "system", "content": "\n".join(notes)}] if notes else []) + others
            chat[pos:pos] = block
        return ([system_msg] if system_msg["content"] else []) + chat

    def render(msgs: list[dict]) -> str:
        return _render(fmt, msgs, inputs, char, user)

    # The fixed part: the system block (stable for the chat, so its count is cached) plus each
    # injection as the message it becomes; the final whole-prompt count below corrects seams.
    def injection_cost(inj: DepthInjection) -> int:
        if inj.source == "notes":
            # A unit's own tokens (the scan already counted lore entries: the counter remembers)
            # plus its joint and a message header; the final whole-prompt count is exact.
            return count(inj.text) + 8
        return message_cost(fmt, {"role": _chat_role(inj.role), "content": inj.text}, count)

    injection_tokens = sum(injection_cost(i) for i in injections)

    def fixed_cost(n_examples: int) -> int:
        return count(render(build(0, n_examples, with_injections=False))) + injection_tokens

    n_examples = len(example_blocks) if pin else 0
    fixed_tokens = fixed_cost(n_examples)
    if pin:
        # Decided on the stable system block alone: if the notes counted, examples would come
        # and go with the lore, rewriting the top of the prompt.
        while n_examples and fixed_tokens - injection_tokens > budget // 2:
            n_examples -= 1
            dropped.append(f"example block {n_examples + 1}: examples may use at most half the budget")
            fixed_tokens = fixed_cost(n_examples)
    if fixed_tokens > budget:
        warnings.append(
            f"the card, system prompt and notes take {fixed_tokens} tokens, over the {budget}-token budget: no room for history"
        )

    # Per-message costs: each message rendered alone through the format.
    used = fixed_tokens
    n_hist = 0
    floor = inputs.window_floor if not st_layout and inputs.window_floor is not None else -1
    if getattr(count, "batches", False):
        pieces = [message_piece(fmt, msg(h)) for h in reversed(history) if h.index >= floor]
        _prime_history(count, pieces, budget - used)
    for h in reversed(history):
        if h.index < floor:
            if 2 * (budget - used) < budget:
                break  # once out of the window, a message stays out (see PromptInputs.window_floor)
            floor = -1  # most of the budget would stay empty: the window refills
        if _cannot_fit(count, fmt, msg(h), budget - used):
            break  # what the count below would decide, without tokenizing megabytes
        cost = message_cost(fmt, msg(h), count)
        if used + cost > budget:
            break
        used += cost
        n_hist += 1
    if inputs.trim_step and n_hist < len(history):
        # Drop a larger slice at once so the window start moves rarely (engines without shift).
        target = budget * (1 - inputs.trim_step)
        while n_hist > 1 and used > target:
            used -= message_cost(fmt, msg(history[len(history) - n_hist]), count)
            n_hist -= 1
    if not pin:
        for i in range(len(example_blocks)):
            extra = fixed_cost(i + 1) - fixed_cost(i)
            if used + extra > budget:
                dropped.append(f"example blocks {i + 1}-{len(example_blocks)}: no room after the history")
                break
            used += extra
            n_examples = i + 1

    msgs = build(n_hist, n_examples)
    text = render(msgs)
    total = count(text)
    while total > budget and n_hist > 0:
        # Seams between rendered pieces (or an estimating format) cost more than the sum:
        # drop the oldest messages worth the overshoot, then count the whole prompt again.
        over = total - budget
        while over > 0 and n_hist > 0:
            over -= message_cost(fmt, msg(history[len(history) - n_hist]), count)
            n_hist -= 1
        msgs = build(n_hist, n_examples)
        text = render(msgs)
        total = count(text)
    if n_hist < len(history):
        gone = len(history) - n_hist
        dropped.append(f"{gone} oldest message{'s' if gone != 1 else ''}: over the budget")
    if hidden:
        dropped.append(f"{hidden} hidden (system) message{'s' if hidden != 1 else ''}")

    # -- the account -----------------------------------------------------------------------------
    for name, t in sys_parts:
        if t:
            slots.append(SlotUsage(name, count(t)))
    if n_examples:
        slots.append(
            SlotUsage(
                "examples",
                fixed_cost(n_examples) - fixed_cost(0),
                f"{n_examples} of {len(example_blocks)} blocks",
            )
        )
    for name in ("lore", "summary", "memory"):
        parts = [text for _key, slot, text in units if slot == name]
        if parts:
            # Lore at @depth is its own slot below: count only what the notes hold.
            detail = lore_detail if name == "lore" else ""
            slots.append(SlotUsage(name, sum(count(t) for t in parts), detail))
    for inj in injections:
        if inj.source != "notes":
            slots.append(SlotUsage(inj.source, count(inj.text), f"depth {inj.depth}, {inj.role}"))
    hist_tokens = sum(message_cost(fmt, msg(h), count) for h in history[len(history) - n_hist :])
    slots.append(SlotUsage("history", hist_tokens, f"{n_hist} of {len(history)} messages"))
    accounted = sum(s.tokens for s in slots)
    slots.append(SlotUsage("format", max(0, total - accounted), "template tokens, generation prompt"))

    first_index = history[len(history) - n_hist].index if n_hist else -1
    if inputs.return_lapsed:  # the last MAX_LAPSED units to lapse, for when they fire again
        lapsed = [(key, was) for key, was in previous.items() if key not in note_anchors]
        note_anchors.update(lapsed[:MAX_LAPSED])
    if inputs.lore is not None:
        for r in getattr(inputs.lore, "rejected", []):
            if "budget" in str(getattr(r, "reason", "")):
                dropped.append(f"lore entry {getattr(r, 'comment', '') or getattr(r, 'uid', '')}: {r.reason}")

    return AssembledPrompt(
        text=text,
        stop=_stops(fmt, inputs, char, user),
        add_bos=not getattr(fmt, "template_adds_bos", False),
        messages=msgs,
        slots=slots,
        dropped=dropped,
        prompt_tokens=total,
        budget=budget,
        n_ctx=n_ctx,
        reply_reserve=reply_reserve,
        first_message_index=first_index,
        warnings=warnings,
        note_anchors=note_anchors,
    )


def with_negative(prompt: AssembledPrompt, fmt: Any, inputs: PromptInputs, text: str, depth: int = 1) -> str:
    """The negative prompt of classifier-free guidance, as SillyTavern builds it: the same
    messages with the negative text as a system message `depth` messages from the end."""
    msgs = list(prompt.messages)
    pos = max(1 if msgs and msgs[0]["role"] == "system" else 0, len(msgs) - depth)
    msgs.insert(pos, {"role": "system", "content": text})
    return _render(fmt, msgs, inputs, inputs.card.name, inputs.user_name)


def _render(fmt: Any, msgs: list[dict], inputs: PromptInputs, char: str, user: str) -> str:
    if inputs.mode == "continue" and msgs and msgs[-1]["role"] == "assistant":
        return fmt.render(msgs, add_generation_prompt=False, continue_final=True)
    if inputs.mode == "impersonate":
        prefill = f"{user}:" if inputs.names_in_history else ""
        return fmt.render(msgs, add_generation_prompt=True, prefill=prefill, gen_role="user")
    prefill = f"{char}:" if inputs.names_in_history else ""
    return fmt.render(msgs, add_generation_prompt=True, prefill=prefill)


def _stops(fmt: Any, inputs: PromptInputs, char: str, user: str) -> list[str]:
    stops = list(getattr(fmt, "stop", []) or [])
    if inputs.names_in_history:
        other = char if inputs.mode == "impersonate" else user
        stops.append(f"\n{other}:")
    seen: list[str] = []
    for s in stops:
        if s and s not in seen:
            seen.append(s)
    return seen


def _depth_anchor(
    key: str,
    depth: int,
    text: str,
    history: Sequence[HistoryMessage],
    inputs: PromptInputs,
    anchors: dict[str, tuple[int, str]],
) -> int | None:
    """The message an @depth lore block sits before in the cache-aware mode, recorded in
    `anchors`; None: at its depth as usual (the mode is off, or depth 0, which has no message
    after it). The block keeps last turn's anchor while its text is the same and it has not
    drifted more than `depth_lore_drift` messages past its depth."""
    drift = inputs.depth_lore_drift
    if drift <= 0 or depth <= 0 or not history:
        return None
    at_depth = history[max(0, len(history) - depth)].index
    old = (inputs.note_anchors or {}).get(key)
    anchor = at_depth
    if old and old[1] == text and old[0] <= at_depth:
        behind = sum(1 for h in history if h.index >= old[0])  # messages after the block
        if behind <= depth + drift:
            anchor = old[0]
    anchors[key] = (anchor, text)
    return anchor


def _notes_entries(lore: Any) -> list[Any]:
    """Entries that go before/after the card in SillyTavern (positions 0 and 1), in its order:
    before-card entries first, each position by ascending `order`."""
    entries = [e for e in getattr(lore, "activated", []) if getattr(e, "position", None) in (0, 1) and e.content]
    return sorted(entries, key=lambda e: (e.position, _number(e.order)))


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 100.0


def _grouped(placed: list[tuple[int, tuple, Any]]) -> list[tuple[int, list]]:
    groups: list[tuple[int, list]] = []
    for item in placed:
        if groups and groups[-1][0] == item[0]:
            groups[-1][1].append(item)
        else:
            groups.append((item[0], [item]))
    return groups


def _chat_role(role: str) -> str:
    return role if role in ("system", "user", "assistant") else "system"


def _labelled(label: str, text: str) -> str:
    return f"{label}: {text}" if text and text.strip() else ""


def _role_name(role: Any) -> str:
    return {0: "system", 1: "user", 2: "assistant"}.get(role, role if isinstance(role, str) else "system")
