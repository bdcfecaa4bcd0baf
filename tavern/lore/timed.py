"""Timed effects of lore entries: sticky, cooldown and delay (SillyTavern's
`WorldInfoTimedEffects`), kept between turns in the chat's `timedWorldInfo`.

Callers: `tavern.lore.scan`. The state is SillyTavern's shape: `{"sticky": {key: effect},
"cooldown": {key: effect}}`, key `"<book>.<uid>"`, effect `{hash, start, end, protected}` in
chat-length units. A sticky entry stays active until the chat reaches `end`; when it ends, its
cooldown starts (protected, so a regenerated turn keeps it); an effect set at the current chat
length and not protected is dropped when the same length is scanned again (a swipe decides
anew). `delay` needs no state: the entry waits until the chat has that many messages.

Tavern's cache-aware mode adds a third table, `"tavernLinger": {key: {start, end}}`, which
SillyTavern ignores: an entry that fired at chat length L lingers (stays active without its
keys) until L + linger, and every time its keys fire again the end moves on. Only firing by
its keys refreshes it, so an entry whose keys stop matching leaves after `linger` messages.
Lore that flickers on and off then changes the prompt once, not every other turn.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable

from tavern.lore.index import CompiledEntry, LoreIndex, float_or_none

LINGER = "tavernLinger"


class TimedEffects:
    """The timed effects of one scan: which entries are sticky, cooling down, delayed or
    lingering now (`active`), and the state to store for the next turn (`state`)."""

    def __init__(
        self, state: dict[str, object] | None, chat_length: int, index: LoreIndex, linger: int = 0
    ) -> None:
        self.state: dict[str, object] = copy.deepcopy(state) if isinstance(state, dict) else {}
        self.chat_length = chat_length
        self.index = index
        self.linger = linger
        self.lingered: set[CompiledEntry] = set()
        """Entries active this scan only because they linger (their keys did not fire)."""
        self.active: dict[str, dict[CompiledEntry, float]] = {
            "sticky": {},
            "cooldown": {},
            "delay": {},
            "linger": {},
        }
        # The sticky and cooldown tables, kept in `state` too: effects are objects, the rest
        # of a table is dropped.
        self.tables: dict[str, dict[str, dict[str, object]]] = {}
        for kind in ("sticky", "cooldown"):
            table = self.state.get(kind)
            if not isinstance(table, dict):
                table = {}
            kept = {k: v for k, v in table.items() if isinstance(v, dict) and v}
            self.state[kind] = self.tables[kind] = kept

    def check(self) -> None:
        self._check("sticky")
        self._check("cooldown")
        self._check_linger()
        for item in self.index.delayed:
            if self.chat_length < item.delay_n:
                self.active["delay"][item] = item.delay_n

    def _check(self, kind: str) -> None:
        table = self.tables[kind]
        for key, value in list(table.items()):
            start = _float(value.get("start"))
            end = _float(value.get("end"))
            item = self.index.by_hash.get(str(value.get("hash")))
            if self.chat_length <= start and not value.get("protected"):
                del table[key]  # the chat did not advance (swipe, regenerate): decide again
                continue
            if item is None:
                if self.chat_length >= end:
                    del table[key]
                continue
            if not getattr(item, f"{kind}_n"):
                del table[key]
                continue
            if self.chat_length >= end:
                del table[key]
                if kind == "sticky" and item.cooldown_n:
                    self.tables["cooldown"][item.effect_key] = self._effect(item, "cooldown", True)
                    self.active["cooldown"][item] = self.chat_length + item.cooldown_n
                continue
            self.active[kind][item] = end

    def _check_linger(self) -> None:
        if not self.linger:
            return  # the mode is off: its table is kept as it is, unused
        table = self._linger_table()
        by_key = {item.effect_key: item for item in self.index.entries}
        for key, value in list(table.items()):
            item = by_key.get(key)
            effect = value if isinstance(value, dict) else {}  # not an object: no end, it leaves
            end = _float(effect.get("end"))
            # An entry edited away, or whose time is up, leaves; so does one recorded past
            # this point of the chat (messages were deleted).
            if item is None or not self.chat_length < end or _float(effect.get("start")) > self.chat_length:
                del table[key]
                continue
            self.active["linger"][item] = end

    def _linger_table(self) -> dict[str, object]:
        table = self.state.get(LINGER)
        if not isinstance(table, dict):
            table = self.state[LINGER] = {}
        return table

    def _effect(self, item: CompiledEntry, kind: str, protected: bool) -> dict[str, object]:
        length = item.sticky_n if kind == "sticky" else item.cooldown_n
        return {
            "hash": item.hash,
            "start": self.chat_length,
            "end": self.chat_length + length,
            "protected": protected,
        }

    def is_sticky(self, item: CompiledEntry) -> bool:
        return item in self.active["sticky"]

    def record(self, activated: Iterable[CompiledEntry]) -> None:
        activated = list(activated)
        if self.linger:
            table = self._linger_table()
            for item in activated:
                if item not in self.lingered and not item.entry.constant:  # fired by its keys: refresh
                    table[item.effect_key] = {
                        "start": self.chat_length,
                        "end": self.chat_length + self.linger,
                    }
        for item in activated:
            for kind in ("sticky", "cooldown"):
                if getattr(item, f"{kind}_n") and not self.tables[kind].get(item.effect_key):
                    self.tables[kind][item.effect_key] = self._effect(item, kind, False)


def _float(value: object) -> float:
    """A stored chat length; NaN (no comparison holds) when it is not a number."""
    found = float_or_none(value)
    return math.nan if found is None else found
