"""What the assembler places between the chat's messages: depth injections and the notes.

Called by the assembler (tavern.prompt.assemble). A depth injection (the author's note, lore
@depth, the character's note, post-history instructions) sits `depth` messages from the end, as
in SillyTavern. The notes (the cache-friendly layout's lore entries, the summary, recalled
memories) are units, each anchored to the message it sits before, so that one unchanged from
last turn keeps its place and its cached cells (the assembler's module docstring, "Layout").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tavern.prompt.lore_placement import depth_anchor, notes_entries
from tavern.prompt.system_block import labelled

if TYPE_CHECKING:
    from tavern.prompt.inputs import HistoryMessage, PromptInputs, PromptMessage
    from tavern.prompt.lore_placement import LoreSlots

MAX_LAPSED = 64
"""Notes units that lapsed whose place AssembledPrompt.note_anchors remembers."""

#: A notes unit: (key, slot, text); the key names it from turn to turn, the slot in the account.
NoteUnit = tuple[str, str, str]


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


# An injection placed in the window: (position, sort key, the injection).
_Placed = tuple[int, tuple[int, ...], DepthInjection]


def notes_units(inputs: PromptInputs, st_layout: bool) -> list[NoteUnit]:
    """The volatile notes, one unit each: lore entries (not in the `sillytavern` layout, which
    puts them in the system block), the summary, recalled memories."""
    m = inputs.macro
    units: list[NoteUnit] = []
    if not st_layout and inputs.lore is not None:
        for e in notes_entries(inputs.lore):
            units.append((f"lore:{e.book}:{e.uid}", "lore", m(e.content)))
    summary = labelled("Summary of earlier events", inputs.summary)
    if summary:
        units.append(("summary", "summary", summary))
    memory = labelled("Recalled from earlier in the chat", "\n".join(inputs.recalled))
    if memory:
        units.append(("memory", "memory", memory))
    return [u for u in units if u[2].strip()]


def depth_injections(
    inputs: PromptInputs,
    lore: LoreSlots,
    history: Sequence[HistoryMessage],
    anchors: dict[str, tuple[int, str]],
) -> list[DepthInjection]:
    """The author's note (on its turns), lore @depth, the character's note and post-history
    instructions, in that order; the anchors of @depth lore blocks go into `anchors`."""
    m = inputs.macro
    card = inputs.card
    injections: list[DepthInjection] = []
    note = inputs.author_note
    user_turns = sum(1 for h in inputs.history if h.is_user and not h.is_system)
    if (
        note
        and (note.text or lore.an_top or lore.an_bottom)
        and note.frequency > 0
        and user_turns % note.frequency == 0
    ):
        text = "\n".join(t for t in (lore.an_top, m(note.text), lore.an_bottom) if t)
        injections.append(DepthInjection(text, note.depth, note.role, "author's note"))
    for d, role, text in lore.depth:
        anchor = depth_anchor(f"depth:{d}:{role}", d, text, history, inputs, anchors)
        injections.append(DepthInjection(text, d, role, "lore @depth", before_index=anchor))
    if card.depth_prompt and card.depth_prompt[0].strip():
        p, d, role = card.depth_prompt
        injections.append(DepthInjection(m(p), int(d), role, "character's note"))
    if card.post_history_instructions.strip():
        injections.append(DepthInjection(m(card.post_history_instructions), 0, "system", "post-history"))
    return injections


def anchor_notes(
    units: Sequence[NoteUnit],
    history: Sequence[HistoryMessage],
    previous: Mapping[str, tuple[int, str]],
    anchors: dict[str, tuple[int, str]],
) -> list[DepthInjection]:
    """The notes as injections, each unit before its anchor (recorded in `anchors`); with no
    history, all of them as one block."""
    if units and history:
        # Unchanged units keep their anchor; new or changed ones go before the newest message.
        # With `return_lapsed` a unit that lapsed and fires again with the same text is placed
        # as if it had stayed: before its old message, or at the top with the units whose
        # message left the window. The engine's cell bank kept its cells with the very edges
        # they had there, so it costs nothing, where a new block before the newest message
        # costs its header and end.
        newest = history[-1].index
        injections: list[DepthInjection] = []
        for rank, (key, _slot, text) in enumerate(units):
            old = previous.get(key)
            anchor = old[0] if old and old[1] == text and old[0] <= newest else newest
            injections.append(DepthInjection(text, 1, "system", "notes", before_index=anchor, rank=rank))
            anchors[key] = (anchor, text)
        return injections
    if units:
        return [DepthInjection("\n".join(u[2] for u in units), 1, "system", "notes")]
    return []


def remember_lapsed(previous: Mapping[str, tuple[int, str]], anchors: dict[str, tuple[int, str]]) -> None:
    """Add to `anchors` the last MAX_LAPSED units to lapse, for when they fire again."""
    lapsed = [(key, was) for key, was in previous.items() if key not in anchors]
    anchors.update(lapsed[:MAX_LAPSED])


def place_injections(
    kept: Sequence[HistoryMessage],
    chat: list[PromptMessage],
    injections: Sequence[DepthInjection],
) -> None:
    """Insert the injections into `chat`, the messages of `kept` (the window).

    Positions are computed before any insertion; ties keep their order, notes first, oldest
    anchor first. Notes at one place are one system message; other injections one message each.
    """
    placed: list[_Placed] = []
    for order, inj in enumerate(injections):
        pos = max(0, len(kept) - inj.depth)
        key: tuple[int, ...] = (order,)
        if inj.before_index is not None and inj.source == "notes":
            pos = next((i for i, h in enumerate(kept) if h.index >= inj.before_index), pos)
            key = (-1, inj.before_index, inj.rank)  # notes first, oldest anchor first
        elif inj.before_index is not None:  # an anchored @depth block (cache-aware mode)
            pos = next((i for i, h in enumerate(kept) if h.index >= inj.before_index), pos)
        placed.append((pos, key, inj))
    placed.sort(key=lambda p: (p[0], p[1]))
    for pos, group in reversed([(pos, [p[2] for p in grp]) for pos, grp in _grouped(placed)]):
        notes = [i.text for i in group if i.source == "notes"]
        others = [{"role": chat_role(i.role), "content": i.text} for i in group if i.source != "notes"]
        block = ([{"role": "system", "content": "\n".join(notes)}] if notes else []) + others
        chat[pos:pos] = block


def chat_role(role: str) -> str:
    """An injection's role as a chat message's (an unknown one is "system")."""
    return role if role in ("system", "user", "assistant") else "system"


def _grouped(placed: list[_Placed]) -> list[tuple[int, list[_Placed]]]:
    groups: list[tuple[int, list[_Placed]]] = []
    for item in placed:
        if groups and groups[-1][0] == item[0]:
            groups[-1][1].append(item)
        else:
            groups.append((item[0], [item]))
    return groups
