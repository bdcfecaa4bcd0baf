"""World Info activation: which lorebook entries enter the prompt this turn, and why.

Callers: the prompt assembler (every generation), `tavern lore scan` (through
`tavern.lore.report`), the TUI's "why is this in the prompt" view, and tests.

`scan_lore` reproduces SillyTavern's `checkWorldInfo` (public/scripts/world-info.js, Sep 2024
release; spec in shared/reference/SILLYTAVERN.md §2): entry order by book kind and `order`,
scan text = the last N messages newest first (+ injected text + recursion text), primary keys,
selective logic, `@@activate`/`@@dont_activate`, constant/disabled, character filters,
delay/cooldown/sticky, recursion levels (`delayUntilRecursion`, exclude/prevent flags, max
steps, min activations), inclusion groups (sticky, scoring, override, weighted roll),
probability and the token budget. Key matching is in `tavern.lore.keys`.

Deliberate differences from SillyTavern, each because SillyTavern's behaviour hurts users:
- Whole-word matching uses **Unicode word boundaries** (SillyTavern's are ASCII-only, so a
  Cyrillic key there matches inside a longer Cyrillic word).
- Regex keys run with a time limit (`LoreSettings.regex_timeout_ms` per key and
  `regex_total_ms` per scan): a catastrophic pattern is cut off and its entry is named in
  `rejected` and `broken` instead of freezing the turn. A regex that does not compile marks
  its entry broken (its other keys still work).
- Token counts are summed entry by entry (SillyTavern re-tokenizes the whole joined text for
  each entry: quadratic, and equal for tokenizers that do not merge across a newline).
- SillyTavern's inclusion-group code can drop an unrelated entry when one entry belongs to two
  groups and loses in both (`splice(indexOf(x) = -1, 1)`); Tavern drops only the loser.
- Content macros are not substituted here (the assembler does it); pass `substitute_macros`
  to get SillyTavern's behaviour for `{{char}}` in keys, budget counting and recursion text.
- A timed-effect record written by SillyTavern names entries by SillyTavern's own hash, which
  Tavern cannot recompute; such records expire as "entry not found" (they are not applied).

SillyTavern quirks kept on purpose, because the goal is the same activations: a whitespace-only
key matches everything; `min_activations_depth_max` lets the scan go one message past it; a
pending `delayUntilRecursion` level gets its own step even after the budget is full; an entry
in two groups ("a, b") does not count as "group a already active" in later steps.

This module is the scan's loop: the order entries are taken in, recursion steps, the token
budget and the result. The rules for one entry (gates, keys, selective logic, probability,
inclusion groups) are in `tavern.lore.rules`, timed effects in `tavern.lore.timed`.

Speed: books are compiled once into an index (`tavern.lore.index`, cached per book object;
`tavern.lore.model` says what invalidates it). Each step looks the words of the scan text up in
that index (`tavern.lore.matching`), so only entries that can match are checked: a scan costs
about the same for 100 or 10,000 entries. With `explain=False` (the prompt path) checking also
stops once the budget is full; `explain=True` (the default, for `tavern lore scan`) checks
every candidate to say why each one stayed out.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from tavern.config import LoreSettingsModel as LoreSettings  # the one definition: [lore]
from tavern.lore.index import CompiledEntry, LoreIndex, index_for, number
from tavern.lore.matching import INITIAL, MAX_SCAN_DEPTH, MIN_ACTIVATIONS, NONE, RECURSION, Scanner
from tavern.lore.model import DEFAULT_DEPTH, POSITION_AT_DEPTH, Lorebook, LoreEntry
from tavern.lore.rules import Reason, Rules, filter_groups, roll
from tavern.lore.timed import TimedEffects

__all__ = [
    "MAX_SCAN_DEPTH",
    "ActivatedEntry",
    "BrokenEntry",
    "LoreSettings",
    "Rejection",
    "ScanMessage",
    "ScanResult",
    "scan_lore",
]

_KIND_RANK = {"chat": 0, "character": 1, "global": 2}


@dataclass
class ScanMessage:
    """One chat message as the scan sees it (leave hidden/system messages out)."""

    name: str
    text: str
    is_user: bool = False


@dataclass
class ActivatedEntry:
    """An entry that goes into the prompt. `content` has decorators removed, macros kept."""

    book: str
    uid: int
    comment: str
    content: str
    position: int
    depth: int
    role: int
    order: int | float
    reason: str
    kind: str = ""
    entry: LoreEntry | None = field(default=None, repr=False, compare=False)


@dataclass
class Rejection:
    """An entry that would have fired but a rule kept it out, and which rule."""

    book: str
    uid: int
    comment: str
    reason: str
    kind: str = ""


@dataclass
class BrokenEntry:
    """An entry with a problem its author should fix (bad or runaway regex key)."""

    book: str
    uid: int
    comment: str
    message: str


@dataclass
class ScanResult:
    """What one scan decided. `timed_state` is the new `chat_metadata.timedWorldInfo`."""

    activated: list[ActivatedEntry] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    broken: list[BrokenEntry] = field(default_factory=list)
    timed_state: dict[str, object] = field(default_factory=dict)
    tokens_used: int = 0
    budget: int = 0

    # The assembler reads each key as what it holds; one typed view each would change it.
    # Any: a str for each slot, and for key 4 a list of (depth, role, text)
    def by_position(self) -> dict[int, Any]:
        """Text per insertion position, as SillyTavern assembles it.

        Keys 0 (before the card), 1 (after it), 2/3 (author's note top/bottom) and 5/6
        (example messages top/bottom) map to the contents joined with "\\n", lowest `order`
        first. Key 4 maps to a list of `(depth, role, text)`, one per depth and role.
        Entries with empty content are left out, as in SillyTavern.
        """
        slots: dict[int, list[str]] = {0: [], 1: [], 2: [], 3: [], 5: [], 6: []}
        depth_groups: list[tuple[int, int, list[str]]] = []
        # SillyTavern walks entries by order, highest first, and prepends each one.
        for item in sorted(self.activated, key=lambda a: -number(a.order, 100)):
            if not item.content:
                continue
            if item.position == POSITION_AT_DEPTH:
                for depth, role, texts in depth_groups:
                    if depth == item.depth and role == item.role:
                        texts.insert(0, item.content)
                        break
                else:
                    depth_groups.append((item.depth, item.role, [item.content]))
            elif item.position in slots:
                slots[item.position].insert(0, item.content)
        out: dict[int, str | list[tuple[int, int, str]]] = {
            pos: "\n".join(texts) for pos, texts in slots.items()
        }
        out[POSITION_AT_DEPTH] = [(d, r, "\n".join(t)) for d, r, t in depth_groups]
        return dict(sorted(out.items()))


# ---------------------------------------------------------------------------------------------
# the scan


def _dedupe_books(books: Sequence[tuple[str, Lorebook]]) -> list[tuple[str, Lorebook]]:
    """SillyTavern skips a chat or character book that is also active globally (and a
    character book that is also the chat's), so its entries are not scanned twice."""
    global_names = {book.name for kind, book in books if kind == "global"}
    chat_names = {book.name for kind, book in books if kind == "chat"}
    out: list[tuple[str, Lorebook]] = []
    seen: set[tuple[str, str]] = set()
    for kind, book in books:
        if kind not in _KIND_RANK:
            raise ValueError(f'lorebook source must be "chat", "character" or "global", not {kind!r}')
        if kind != "global" and book.name in global_names:
            continue
        if kind == "character" and book.name in chat_names:
            continue
        if (kind, book.name) in seen:
            continue
        seen.add((kind, book.name))
        out.append((kind, book))
    return out


def scan_lore(
    books: Sequence[tuple[str, Lorebook]],
    messages: Sequence[ScanMessage],
    settings: LoreSettings,
    context_size: int,
    count_tokens: Callable[[str], int],
    timed_state: dict[str, object] | None = None,
    chat_length: int | None = None,
    rng_seed: int | None = None,
    character_name: str = "",
    character_tags: Sequence[str] = (),
    *,
    extra_scan_text: Sequence[str] = (),
    substitute_macros: Callable[[str], str] | None = None,
    explain: bool = True,
) -> ScanResult:
    """Decide which entries of `books` activate for `messages` (oldest first).

    `books`: (source, book) with source "chat", "character" or "global". `context_size` and the
    settings give the token budget; `count_tokens` measures content. `timed_state` is the
    chat's `timedWorldInfo` (not modified; the updated copy is in the result). `chat_length`
    is the number of messages in the chat (default: len(messages)). The same `rng_seed` gives
    the same probability and group rolls. `character_name`/`character_tags` feed entries'
    character filters. `extra_scan_text`: text injected for scanning (e.g. an author's note
    with "allow WI scan"). `substitute_macros`: applied to keys, and to content for budget
    counting and recursion (the returned content keeps its macros). `explain=False` (for
    building prompts) stops checking entries once the budget is full: the same entries
    activate, but `rejected` does not list every entry the full budget kept out.
    """
    index = index_for(_dedupe_books(books), settings)
    rng = random.Random(rng_seed)
    chat_len = len(messages) if chat_length is None else chat_length

    texts: list[str] = []
    for message in reversed(messages):
        text = f"{message.name}: {message.text}" if settings.include_names else message.text
        texts.append(text.strip())
    scanner = Scanner(index, texts[:MAX_SCAN_DEPTH], extra_scan_text, settings, substitute_macros)

    budget = _budget(settings, context_size)

    timed = TimedEffects(timed_state, chat_len, index, linger=settings.cache_aware_linger)
    timed.check()
    rules = Rules(scanner, timed, character_name, set(character_tags))

    levels = list(index.levels)
    level = levels.pop(0) if levels else 0

    # Reasons are built lazily (finding *where* a key matched costs a search): str or callable.
    activated: dict[CompiledEntry, Reason] = {}  # insertion order = activation order
    failed_probability: set[CompiledEntry] = set()
    rejected: dict[CompiledEntry, Reason] = {}
    activated_text = ""
    tokens_used = 0
    overflowed = False
    state = INITIAL
    steps = 0

    def reject(item: CompiledEntry, reason: Reason, weak: bool = False) -> None:
        if weak and item in rejected:
            return  # an earlier step's reason (lost the group roll...) says more
        rejected.pop(item, None)
        rejected[item] = reason

    while state:
        if settings.max_recursion_steps and settings.max_recursion_steps <= steps:
            break
        steps += 1
        next_state = NONE
        reasons: dict[CompiledEntry, Reason] = {}

        # Used only within this step (directly and through `_merge_new`); the defaults pin
        # this step's values.
        def evaluate(
            item: CompiledEntry,
            state: int = state,
            level: int = level,
            reasons: dict[CompiledEntry, Reason] = reasons,
        ) -> bool:
            if item in failed_probability or item in activated:
                return False
            verdict = rules.consider(item, state, level)
            if verdict is None:
                return False
            ok, reason = verdict
            if ok:
                reasons[item] = reason
            else:
                reject(item, reason)
            return ok

        candidates = scanner.candidates(state, [*timed.active["sticky"], *timed.active["linger"]])
        # Entries in inclusion groups and sticky ones decide the group rolls, so they are
        # always checked up front. Without `explain`, the others are checked lazily in scan
        # order and the check stops once the budget is full: what activates is identical.
        eager: list[CompiledEntry] = []
        rest: list[CompiledEntry] = []
        if explain:
            eager = candidates
        else:
            sticky_now = timed.active["sticky"]
            for item in candidates:
                (eager if item.groups or item in sticky_now else rest).append(item)
        # Sticky entries first, then scan order (SillyTavern's sort of the new entries).
        new = sorted(
            (item for item in eager if evaluate(item)),
            key=lambda e: (0 if timed.is_sticky(e) else 1, e.pos),
        )
        text_tokens = count_tokens(activated_text) if activated_text else 0
        for item, (reason, weak) in filter_groups(new, activated, scanner, state, timed, rng).items():
            reject(item, reason, weak)

        seen: list[CompiledEntry] = []
        stream = _merge_new(new, rest, timed, evaluate)
        new_tokens = 0
        for item in stream:
            seen.append(item)
            roll_reason = roll(item, timed, rng)
            if roll_reason is not None:
                failed_probability.add(item)
                reject(item, roll_reason)
                continue
            content = substitute_macros(item.content) if substitute_macros else item.content
            cost = count_tokens(content + "\n")
            if text_tokens + new_tokens + cost >= budget:
                overflowed = True
                used = text_tokens + new_tokens
                full = f"budget: would reach {budget} tokens ({used} used)"
                reject(item, full)
                # The rest is needed only to explain it, or (a SillyTavern quirk) when a
                # pending delayed-recursion level will scan again with their text.
                if explain or levels:
                    for dropped in stream:
                        seen.append(dropped)
                        reject(dropped, full)
                break
            new_tokens += cost
            activated[item] = reasons[item]
            rejected.pop(item, None)
        tokens_used += new_tokens

        successful = [item for item in seen if item not in failed_probability]
        for_recursion = [item for item in successful if not item.entry.prevent_recursion]

        if settings.recursive and not overflowed and for_recursion:
            next_state = RECURSION
        if settings.recursive and not overflowed and state == MIN_ACTIVATIONS and scanner.recursion:
            next_state = RECURSION
        if (
            not next_state
            and not overflowed
            and settings.min_activations > 0
            and len(activated) < settings.min_activations
        ):
            depth = scanner.global_depth()
            over = (
                settings.min_activations_depth_max > 0 and depth > settings.min_activations_depth_max
            ) or depth > len(messages)
            if not over:
                next_state = MIN_ACTIVATIONS
                scanner.skew += 1
                scanner.views.clear()
        if next_state == NONE and levels:
            next_state = RECURSION
            level = levels.pop(0)

        state = next_state
        if state:
            contents = [
                substitute_macros(item.content) if substitute_macros else item.content
                for item in for_recursion
            ]
            scanner.add_recursion(for_recursion, contents)
            text = "\n".join(contents)
            activated_text = text + "\n" + activated_text

    timed.record(activated)
    result = ScanResult(timed_state=timed.state, tokens_used=tokens_used, budget=budget)
    _report(result, activated, rejected, index, scanner)
    return result


def _budget(settings: LoreSettings, context_size: int) -> int:
    """SillyTavern's World Info budget: a share of the context, at most the cap (0: none)."""
    budget = math.floor(settings.budget_percent * context_size / 100 + 0.5) or 1
    if settings.budget_cap > 0 and budget > settings.budget_cap:
        budget = settings.budget_cap
    return budget


def _report(
    result: ScanResult,
    activated: dict[CompiledEntry, Reason],
    rejected: dict[CompiledEntry, Reason],
    index: LoreIndex,
    scanner: Scanner,
) -> None:
    """Fill `result` with what the scan decided, building the reasons that were kept lazy."""
    for item, reason in activated.items():
        entry = item.entry
        result.activated.append(
            ActivatedEntry(
                book=item.book,
                uid=item.uid,
                comment=item.comment,
                content=item.content,
                position=entry.position if isinstance(entry.position, int) else 0,
                depth=int(entry.depth) if entry.depth is not None else DEFAULT_DEPTH,
                role=int(entry.role) if entry.role is not None else 0,
                order=entry.order,
                reason=reason if isinstance(reason, str) else reason(),
                kind=item.kind,
                entry=entry,
            )
        )
    for item, reason in rejected.items():
        if item in activated:
            continue
        text = reason if isinstance(reason, str) else reason()
        result.rejected.append(Rejection(item.book, item.uid, item.comment, text, item.kind))
    broken_seen: set[tuple[CompiledEntry, str]] = set()
    for item, problem in index.broken + list(scanner.timeouts.items()):
        if (item, problem) in broken_seen:
            continue
        broken_seen.add((item, problem))
        result.broken.append(BrokenEntry(item.book, item.uid, item.comment, problem))
    for item, problem in scanner.timeouts.items():
        if item not in activated and item not in rejected:
            result.rejected.append(Rejection(item.book, item.uid, item.comment, problem, item.kind))


def _merge_new(
    new: list[CompiledEntry],
    rest: list[CompiledEntry],
    timed: TimedEffects,
    evaluate: Callable[[CompiledEntry], bool],
) -> Iterator[CompiledEntry]:
    """The new entries in SillyTavern's order (sticky first, then scan order), checking the
    `rest` candidates (already in scan order) only as they are reached."""
    sticky = [item for item in new if timed.is_sticky(item)]
    others = [item for item in new if not timed.is_sticky(item)]
    yield from sticky
    i = 0
    for item in rest:
        while i < len(others) and others[i].pos < item.pos:
            yield others[i]
            i += 1
        if evaluate(item):
            yield item
    yield from others[i:]
