"""The World Info rules for one entry in one scan step, in SillyTavern's order.

Callers: `tavern.lore.scan`, whose loop asks `Rules.consider` about each candidate, then rolls
probability (`roll`) and settles inclusion groups (`filter_groups`) for the entries that
passed. Nothing here is public API; what each rule means is SillyTavern's (`checkWorldInfo`,
shared/reference/SILLYTAVERN.md §2), with the differences `tavern.lore.scan` lists.

A verdict is (True, why) to activate, (False, why) when a rule keeps out an entry that would
have fired, or None when nothing matched (not news). A reason is text, or a callable that
builds the text when it is shown: saying *where* a key matched costs a search.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable, Mapping

from tavern.lore.index import CompiledEntry, number
from tavern.lore.keys import Key
from tavern.lore.matching import RECURSION, Scanner, ScanView
from tavern.lore.model import (
    DEFAULT_WEIGHT,
    LOGIC_AND_ALL,
    LOGIC_AND_ANY,
    LOGIC_NAMES,
    LOGIC_NOT_ALL,
    LOGIC_NOT_ANY,
)
from tavern.lore.timed import TimedEffects

Reason = str | Callable[[], str]
Verdict = tuple[bool, Reason]


class _Pass(enum.Enum):
    """`Rules._gates` result: no rule before the keys decides (a one-member enum, so the type
    checker narrows it away with `is`)."""

    PASS = enum.auto()


class Rules:
    """The rules as one scan applies them: its text (`scanner`), its timed effects, and the
    character that entries' character filters compare with."""

    __slots__ = ("character_name", "scanner", "tags", "timed")

    def __init__(self, scanner: Scanner, timed: TimedEffects, character_name: str, tags: set[str]) -> None:
        self.scanner = scanner
        self.timed = timed
        self.character_name = character_name
        self.tags = tags

    def consider(self, item: CompiledEntry, state: int, level: int) -> Verdict | None:
        """`_keys`, and in the cache-aware mode an entry that did not fire but lingers (fired
        within the last few messages) stays, unless a rule (disabled, cooldown, delay,
        filter) keeps it out."""
        verdict = self._keys(item, state, level)
        timed = self.timed
        if (verdict is None or not verdict[0]) and item in timed.active["linger"]:
            view = self.scanner.view(item.scan_depth, state)
            if item.simple or self._gates(item, state, level, view) is _Pass.PASS:
                timed.lingered.add(item)
                return True, f"cache-aware: lingers until message {_fmt(timed.active['linger'][item])}"
        return verdict

    def _keys(self, item: CompiledEntry, state: int, level: int) -> Verdict | None:
        """One entry in one scan step: the rules before the keys, then the primary keys, then
        the secondary keys by the entry's selective logic."""
        scanner = self.scanner
        view = scanner.view(item.scan_depth, state)
        if not item.simple:
            gate = self._gates(item, state, level, view)
            if gate is not _Pass.PASS:
                return gate
        match = scanner.match
        key = None
        for candidate in item.primary:
            if match(candidate, item, view):
                key = candidate
                break
        if key is None:
            return None
        entry = item.entry
        if not (entry.selective and item.secondary):
            return True, _KeyReason(scanner, key, item, view, "")
        logic = entry.selective_logic if entry.selective_logic is not None else LOGIC_AND_ANY
        name = LOGIC_NAMES.get(logic, str(logic))
        present: list[str] = []
        missing: list[str] = []
        for second in item.secondary:
            hit = match(second, item, view)
            (present if hit else missing).append(second.raw.strip())
            if logic == LOGIC_AND_ANY and hit:
                return True, _KeyReason(scanner, key, item, view, f'"{second.raw.strip()}" present')
            if logic == LOGIC_NOT_ALL and not hit:
                return True, _KeyReason(scanner, key, item, view, f'"{second.raw.strip()}" absent')
        if logic == LOGIC_NOT_ANY and not present:
            return True, _KeyReason(scanner, key, item, view, "none present")
        if logic == LOGIC_AND_ALL and not missing:
            return True, _KeyReason(scanner, key, item, view, "all present")
        quoted_all = ", ".join(f'"{k}"' for k in present + missing)
        if logic == LOGIC_AND_ANY:
            return False, f"secondary keys {name}: none of {quoted_all} present"
        if logic == LOGIC_NOT_ALL:
            return False, f"secondary keys {name}: all of {quoted_all} present"
        if logic == LOGIC_NOT_ANY:
            return False, f"secondary keys {name}: " + ", ".join(f'"{k}"' for k in present) + " present"
        if logic == LOGIC_AND_ALL:
            return False, f"secondary keys {name}: " + ", ".join(f'"{k}"' for k in missing) + " missing"
        return False, f"unknown selective logic {logic}"

    def _gates(self, item: CompiledEntry, state: int, level: int, view: ScanView) -> Verdict | None | _Pass:
        """The rules SillyTavern applies before the keys; `_Pass.PASS` when none decides.

        Rules that keep an entry out are reported only for entries that would have fired
        (an entry whose keys do not match is not news).
        """
        entry = item.entry
        scanner, timed = self.scanner, self.timed

        def blocked(reason: str) -> Verdict | None:
            if entry.constant or "@@activate" in item.decorators or timed.is_sticky(item):
                return False, reason
            if any(scanner.match(key, item, view) for key in item.primary):
                return False, reason
            return None

        if entry.disable:
            return blocked("disabled")
        cfilter = entry.character_filter
        if isinstance(cfilter, dict):
            character_name = self.character_name
            names = cfilter.get("names") or []
            exclude = bool(cfilter.get("isExclude"))
            if isinstance(names, list) and names:
                included = character_name in names
                if included if exclude else not included:
                    return blocked(
                        f'character filter: {"excludes" if exclude else "not for"} "{character_name}"'
                    )
            ftags = cfilter.get("tags") or []
            if isinstance(ftags, list) and ftags:
                has_tag = any(tag in self.tags for tag in ftags)
                if has_tag if exclude else not has_tag:
                    return blocked("character filter: tags " + ("match" if exclude else "do not match"))
        sticky = timed.is_sticky(item)
        if item in timed.active["delay"]:
            return blocked(f"delay: chat shorter than {item.delay_n} messages")
        if item in timed.active["cooldown"] and not sticky:
            end = timed.active["cooldown"][item]
            return blocked(f"cooldown until message {_fmt(end)}")
        if state != RECURSION and item.delay_level and not sticky:
            return blocked(f"delayed until recursion level {item.delay_level}")
        if state == RECURSION and item.delay_level > level and not sticky:
            return blocked(f"delayed until recursion level {item.delay_level} (now {level})")
        if state == RECURSION and scanner.settings.recursive and entry.exclude_recursion and not sticky:
            return blocked("excluded from recursion (only the chat can activate it)")
        if "@@activate" in item.decorators:
            return True, "@@activate decorator"
        if "@@dont_activate" in item.decorators:
            return blocked("@@dont_activate decorator")
        if entry.constant:
            return True, "constant"
        if sticky:
            return True, f"sticky (until message {_fmt(timed.active['sticky'][item])})"
        if not item.primary:
            return None
        return _Pass.PASS


class _KeyReason:
    """'key "x" matched in message -1; secondary ...', computed only if it is shown."""

    __slots__ = ("item", "key", "scanner", "secondary", "view")

    def __init__(
        self, scanner: Scanner, key: Key, item: CompiledEntry, view: ScanView, secondary: str
    ) -> None:
        self.scanner, self.key, self.item, self.view = scanner, key, item, view
        self.secondary = secondary

    def __call__(self) -> str:
        where = self.scanner.locate(self.key, self.item, self.view)
        text = f'key "{self.key.raw.strip()}" matched in {where}'
        if self.secondary:
            logic = self.item.entry.selective_logic
            logic = LOGIC_AND_ANY if logic is None else logic
            text += f"; secondary {LOGIC_NAMES.get(logic, logic)}: {self.secondary}"
        return text


def _fmt(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def roll(item: CompiledEntry, timed: TimedEffects, rng: random.Random) -> str | None:
    """SillyTavern's probability check; a reason when the entry fails it."""
    entry = item.entry
    chance = entry.probability
    if not entry.use_probability or chance is None or number(chance, 100) == 100:
        return None
    if timed.is_sticky(item) or item in timed.active["linger"]:
        return None  # in the prompt already: a roll would make it flicker
    roll = rng.random() * 100
    if roll <= number(chance, 100):
        return None
    return f"probability roll {roll:.0f} > {_fmt(number(chance, 100))}"


def filter_groups(
    new: list[CompiledEntry],
    activated: Mapping[CompiledEntry, Reason],
    scanner: Scanner,
    state: int,
    timed: TimedEffects,
    rng: random.Random,
) -> dict[CompiledEntry, tuple[str, bool]]:
    """SillyTavern's `filterByInclusionGroups`: removes losers from `new`, returns why.

    A "weak" reason (the group was filled in an earlier step) does not replace a reason the
    entry got earlier in the scan.
    """
    grouped: dict[str, list[CompiledEntry]] = {}
    for item in new:
        for name in item.groups:
            grouped.setdefault(name, []).append(item)
    if not grouped:
        return {}
    losers: dict[CompiledEntry, tuple[str, bool]] = {}

    def remove(item: CompiledEntry, reason: str, weak: bool = False) -> None:
        if item in new:
            new.remove(item)
            losers[item] = (reason, weak)

    # Timed effects: a group with sticky members keeps only those.
    has_sticky: dict[str, bool] = {}
    for name, members in grouped.items():
        sticky = [m for m in members if timed.is_sticky(m)]
        has_sticky[name] = bool(sticky)
        if sticky:
            for m in members:
                if m not in sticky:
                    remove(m, f'lost inclusion group "{name}" to sticky uid {sticky[0].uid}')
        for m in members:
            if m in timed.active["cooldown"] or m in timed.active["delay"]:
                remove(m, f'inclusion group "{name}": on cooldown or delay')

    # Group scoring: only the members matching the most keys stay.
    settings = scanner.settings
    for name, members in grouped.items():
        if not settings.group_scoring and not any(m.use_scoring for m in members):
            continue
        if has_sticky[name]:
            continue
        scores = [_score(m, scanner, state) for m in members]
        best = max(scores)
        i = 0
        while i < len(members):
            scored = members[i].use_scoring
            scored = settings.group_scoring if scored is None else scored
            if scored and scores[i] < best:
                remove(members[i], f'lost inclusion group "{name}" on score ({scores[i]} < {best})')
                del members[i]
                del scores[i]
                continue
            i += 1

    for name, members in grouped.items():
        if has_sticky[name]:
            continue
        holder = next((a for a in activated if a.entry.group == name), None)
        if holder is not None:
            for m in members:
                remove(m, f'inclusion group "{name}" already active (uid {holder.uid})', True)
            continue
        if len(members) <= 1:
            continue
        overrides = sorted((m for m in members if m.entry.group_override), key=lambda m: -m.order)
        if overrides:
            winner = overrides[0]
            for m in members:
                if m is not winner:
                    remove(m, f'lost inclusion group "{name}" to uid {winner.uid} (group override)')
            continue
        weights = [number(m.entry.group_weight, DEFAULT_WEIGHT) for m in members]
        roll = rng.random() * sum(weights)
        current = 0.0
        chosen = None
        for m, weight in zip(members, weights, strict=True):
            current += weight
            if roll <= current:
                chosen = m
                break
        if chosen is None:
            continue
        for m in members:
            if m is not chosen:
                remove(m, f'lost inclusion group "{name}" to uid {chosen.uid} (weighted roll)')
    return losers


def _score(item: CompiledEntry, scanner: Scanner, state: int) -> int:
    """SillyTavern's `getScore`: matched primary keys, plus secondary ones for AND logic."""
    view = scanner.view(item.scan_depth, state)
    primary = sum(1 for key in item.primary if scanner.match(key, item, view))
    secondary = sum(1 for key in item.secondary if scanner.match(key, item, view))
    if not item.primary:
        return 0
    if item.secondary:
        logic = item.entry.selective_logic
        if logic == LOGIC_AND_ANY:
            return primary + secondary
        if logic == LOGIC_AND_ALL:
            return primary + secondary if secondary == len(item.secondary) else primary
    return primary
