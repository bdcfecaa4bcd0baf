"""Chance macros: ``{{roll:2d6+1}}`` dice, ``{{random::a::b}}`` (a new draw each time) and
``{{pick::a::b}}`` (stable for a chat: seeded by the chat id hash, the raw text and the macro's
position, with SillyTavern's own hash and seedrandom generator, so a chat picks the same option
here as there). Every die and draw counts against the context's ``MAX_DRAWS``.

Who calls it: :func:`tavern.prompt.macros.substitute`, through :func:`roll_dice`,
:func:`random_picks` and :func:`pick`.
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING

from tavern.prompt.macro_js import SeedRandom, st_string_hash, utf16_len
from tavern.prompt.macro_scan import delimited, put, to_brace

if TYPE_CHECKING:
    from tavern.prompt.macro_context import MacroContext

ROLL = delimited(r"\{\{roll[ :]([^}]+)\}\}", r"\{\{roll[ :]", to_brace)
RANDOM = delimited(r"\{\{random\s?::?([^}]+)\}\}", r"\{\{random\s?:", to_brace)
PICK = delimited(r"\{\{pick\s?::?([^}]+)\}\}", r"\{\{pick\s?:", to_brace)

_ESCAPED_COMMA = "##\ufffdCOMMA\ufffd##"


def _split_list(body: str) -> list[str]:
    if "::" in body:
        return body.split("::")
    return [
        item.strip().replace(_ESCAPED_COMMA, ",") for item in body.replace("\\,", _ESCAPED_COMMA).split(",")
    ]


_DICE = re.compile(r"([1-9][0-9]*)?d([1-9][0-9]*)([+-][0-9]+)?", re.IGNORECASE)
_MAX_DICE = 1000


def _roll(formula: str, ctx: MacroContext) -> str | None:
    """The roll's total, "" for a formula that is not dice, None past the context's draws."""
    formula = formula.strip()
    if re.fullmatch(r"[0-9]+", formula):
        formula = f"1d{formula}"
    m = _DICE.fullmatch(formula)
    # Past 12 digits a roll is nonsense anyway, and int() refuses over 4,300 (a traceback).
    if not m or any(len(g or "") > 12 for g in m.groups()):
        return ""
    count = int(m.group(1) or 1)
    sides = int(m.group(2))
    modifier = int(m.group(3) or 0)
    if count > _MAX_DICE or sides > 10**9:  # keep a hostile card from stalling the prompt
        return ""
    if not ctx.draw(count):
        return None
    rng = ctx.rng()
    return str(sum(rng.randint(1, sides) for _ in range(count)) + modifier)


def _pick_from(items: list[str], r: float) -> str:
    return items[math.floor(r * len(items))] if items else ""


def pick(text: str, raw: str, ctx: MacroContext) -> str:
    """``{{pick::…}}`` replaced by one of its items, the same one each time for this chat,
    this raw text (``raw``: before any macro ran) and this place in it."""
    if not PICK.search(text):  # hashing long text costs ~0.5 ms: only when a pick is there
        return text
    chat_hash = ctx.chat_id_hash if ctx.chat_id_hash is not None else st_string_hash(ctx.chat_id)
    raw_hash = st_string_hash(raw)
    counted = [0, 0]  # a place in text, and its offset in UTF-16 units: counted once, not per pick

    def choose(m: re.Match[str]) -> str | None:
        if not ctx.draw():
            return None
        place, units = counted
        units += utf16_len(text[place : m.start()])  # JavaScript offsets count UTF-16 units
        counted[:] = [m.start(), units]
        seed = st_string_hash(f"{chat_hash}-{raw_hash}-{units}")
        return _pick_from(_split_list(m.group(1)), SeedRandom(seed).random())

    return PICK.sub(put(ctx, choose), text)


def roll_dice(text: str, ctx: MacroContext) -> str:
    """``{{roll:…}}`` replaced by the roll's total."""
    return ROLL.sub(put(ctx, lambda m: _roll(m.group(1), ctx)), text)


def random_picks(text: str, ctx: MacroContext) -> str:
    """``{{random::…}}`` replaced by one of its items, a new draw each time."""
    rng = ctx.rng()
    return RANDOM.sub(
        put(ctx, lambda m: _pick_from(_split_list(m.group(1)), rng.random()) if ctx.draw() else None), text
    )
