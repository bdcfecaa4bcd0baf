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

This module holds what the assembler returns (`AssembledPrompt`) and `assemble_prompt`, which
runs the steps: `system_block` (system prompt, card, persona, examples), `lore_placement` (the
scan's text by position and depth), `injections` (depth injections, the notes and their
anchors) and `history_window` (the budget: which messages and examples fit, and the
whole-prompt count). What it is given lives in `inputs` (`PromptInputs` and its parts) and the
counter in `token_counter`, below the steps, so that every import points one way.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

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
from tavern.prompt.token_counter import TokenCounter

if TYPE_CHECKING:
    from tavern.prompt.inputs import PromptInputs, PromptMessage
    from tavern.prompt.templates import PromptFormat


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
