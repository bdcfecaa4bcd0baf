"""Where the lorebook scan's text goes in the prompt, by SillyTavern's insertion positions.

Called by the assembler (tavern.prompt.assemble) once per turn. The scan gives its text per
position (`LoreScan.by_position`): 0 and 1 before and after the card, 2 and 3 the top and
bottom of the author's note, 4 a block per depth and role inside the chat, 5 and 6 before and
after the example dialogue. In the cache-friendly layout the entries at 0 and 1 are notes units
instead (`notes_entries`); in the cache-aware lore mode an @depth block that stays unchanged
keeps its place (`depth_anchor`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tavern.prompt.inputs import HistoryMessage, LoreNote, LoreScan, PromptInputs


@dataclass
class LoreSlots:
    """The scan's text by position, macros substituted; all empty without a scan."""

    before: str = ""
    after: str = ""
    an_top: str = ""
    an_bottom: str = ""
    examples_top: str = ""
    examples_bottom: str = ""
    depth: list[tuple[int, str, str]] = field(default_factory=list)
    """The @depth blocks: (depth, role, text) each."""
    detail: str = ""
    """The account's detail for the lore slot: how many entries fired."""

    @classmethod
    def from_scan(cls, lore: LoreScan | None, macro: Callable[[str], str]) -> LoreSlots:
        if lore is None:
            return cls()
        by_pos = lore.by_position()
        # Keyword arguments are evaluated in the order written: the macros run in this order.
        return cls(
            before=macro(_slot_text(by_pos, 0)),
            after=macro(_slot_text(by_pos, 1)),
            an_top=macro(_slot_text(by_pos, 2)),
            an_bottom=macro(_slot_text(by_pos, 3)),
            examples_top=macro(_slot_text(by_pos, 5)),
            examples_bottom=macro(_slot_text(by_pos, 6)),
            depth=[(d, _role_name(r), macro(t)) for d, r, t in _depth_groups(by_pos)],
            detail=f"{len(lore.activated)} entries",
        )


def notes_entries(lore: LoreScan) -> list[LoreNote]:
    """Entries that go before/after the card in SillyTavern (positions 0 and 1), in its order:
    before-card entries first, each position by ascending `order`."""
    entries = [
        e for e in getattr(lore, "activated", []) if getattr(e, "position", None) in (0, 1) and e.content
    ]
    return sorted(entries, key=lambda e: (e.position, _number(e.order)))


def depth_anchor(
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


def budget_rejections(lore: LoreScan) -> list[str]:
    """What the account says of the entries the lore budget kept out."""
    dropped: list[str] = []
    for r in getattr(lore, "rejected", []):
        if "budget" in str(getattr(r, "reason", "")):
            dropped.append(f"lore entry {getattr(r, 'comment', '') or getattr(r, 'uid', '')}: {r.reason}")
    return dropped


def _slot_text(by_pos: Mapping[int, object], position: int) -> str:
    """One of the scan's text slots (`LoreScan.by_position`), "" when empty."""
    text = by_pos.get(position)
    return text if isinstance(text, str) else ""


def _depth_groups(by_pos: Mapping[int, object]) -> list[tuple[int, object, str]]:
    """The scan's @depth groups: (depth, role, text) each."""
    groups = by_pos.get(4)
    return list(groups) if isinstance(groups, list) else []


def _number(value: float) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 100.0


# Keyed by object: a role from a lorebook file may be of any JSON type (1.0 and true read as 1).
_ROLE_NAMES: dict[object, str] = {0: "system", 1: "user", 2: "assistant"}


def _role_name(role: object) -> str:
    return _ROLE_NAMES.get(role, role if isinstance(role, str) else "system")
