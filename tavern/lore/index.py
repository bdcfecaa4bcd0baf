"""Lorebooks compiled for scanning: `LoreIndex`, cached per set of books (`index_for`).

Callers: `tavern.lore.scan` (and `tavern.lore.matching`, `tavern.lore.rules`,
`tavern.lore.timed`, which read the compiled entries). Nothing here is public API.

A set of books is compiled once into a `LoreIndex` (cached per book objects; edits are noticed
through `tavern.lore.model.edit_version`): entries in SillyTavern's scan order with their keys
compiled, and lookup tables from the words of the text to the entries whose keys can match.
Each scan step looks the words of its scan text up in those tables (a handful of set
operations, `tavern.lore.matching`), so only entries that can match are checked, whatever the
size of the books.

How a key lands in the tables (`LoreIndex._slot`): a plain word key under itself; a key whose
words are cut off inside it (a multi-word key, "half-elf") under a word that must appear whole
in the text, else under the first three letters of a word that must start a text word (or the
last three of one that must end it), else under its rarest trigram; what is left (regexes,
`{{macro}}` keys, constants, one- and two-letter substrings) is checked every step.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import threading
from typing import TYPE_CHECKING, SupportsFloat, SupportsIndex

from tavern.lore import keys as K
from tavern.lore.gcpause import paused_gc
from tavern.lore.keys import Key
from tavern.lore.model import (
    ST_NAMES,
    EntryList,
    Lorebook,
    LoreEntry,
    edit_version,
    parse_decorators,
)

if TYPE_CHECKING:
    from tavern.config import LoreSettingsModel as LoreSettings


class CompiledEntry:
    """One entry prepared for scanning (keys compiled, decorators parsed)."""

    __slots__ = (
        "book",
        "case",
        "comment",
        "content",
        "cooldown_n",
        "decorators",
        "delay_level",
        "delay_n",
        "dynamic",
        "effect_key",
        "entry",
        "groups",
        "hash",
        "kind",
        "order",
        "pos",
        "primary",
        "scan_depth",
        "secondary",
        "simple",
        "sticky_n",
        "uid",
        "use_scoring",
    )

    def __init__(self, entry: LoreEntry, book: str, kind: str, settings: LoreSettings) -> None:
        self.entry = entry
        self.book = book
        self.kind = kind
        self.pos = 0
        self.uid = entry.uid
        raw_content = entry.content if isinstance(entry.content, str) else str(entry.content or "")
        self.decorators, self.content = parse_decorators(raw_content)
        case = entry.case_sensitive if entry.case_sensitive is not None else settings.case_sensitive
        whole = entry.match_whole_words if entry.match_whole_words is not None else settings.match_whole_words
        self.case = bool(case)
        self.primary = [Key(_key_text(k), self.case, bool(whole)) for k in entry.key or ()]
        self.secondary = [Key(_key_text(k), self.case, bool(whole)) for k in entry.keysecondary or ()]
        self.dynamic = any("{{" in k.raw for k in self.primary + self.secondary)
        depth = entry.scan_depth
        self.scan_depth = None if depth is None or isinstance(depth, bool) else int(depth)
        group = entry.group if isinstance(entry.group, str) else ""
        self.groups = [g for g in re.split(r",\s*", group) if g] if group else []
        self.delay_level = entry.delay_level
        self.sticky_n = _count(entry.sticky)
        self.cooldown_n = _count(entry.cooldown)
        self.delay_n = _count(entry.delay)
        self.order = number(entry.order, 100)
        self.use_scoring = entry.use_group_scoring
        self.effect_key = f"{book}.{entry.uid}"
        self.hash = _entry_hash(entry, book) if (self.sticky_n or self.cooldown_n) else None
        self.comment = entry.comment if isinstance(entry.comment, str) else ""
        # Nothing but the keys to check (most entries): the scan skips the other rules.
        self.simple = not (
            entry.disable
            or entry.character_filter
            or entry.constant
            or entry.exclude_recursion
            or self.decorators
            or self.delay_level
            or self.sticky_n
            or self.cooldown_n
            or self.delay_n
        ) and bool(self.primary)


def _key_text(value: object) -> str:
    return value if isinstance(value, str) else ("" if value is None else str(value))


# What `float()` takes; anything else counts as no number, as `float()` raising TypeError did.
_FLOAT_LIKE = (str, bytes, SupportsFloat, SupportsIndex)


def float_or_none(value: object) -> float | None:
    """`float(value)`, or None where it raises TypeError or ValueError (an OverflowError,
    from an int too big for a float, is let through)."""
    if isinstance(value, (int, float)):  # checked first: the protocols are slow to test
        return float(value)
    if not isinstance(value, _FLOAT_LIKE):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _count(value: object) -> int:
    if value is None or value is False:
        return 0
    if value is True:
        return 1
    number = float_or_none(value)
    if number is None:
        return 0
    return int(number) if math.isfinite(number) else 0


def number(value: object, default: float) -> float:
    """`value` as a finite float; `default` for None, a non-number or an infinity."""
    if value is None or isinstance(value, bool):
        return default if value is None else float(value)
    number = float_or_none(value)
    if number is None:
        return default
    return number if math.isfinite(number) else default


def _entry_hash(entry: LoreEntry, book: str) -> int:
    """A stable id of the entry's whole content (SillyTavern hashes the entry JSON too)."""
    fields = {name: getattr(entry, attr) for attr, name in ST_NAMES.items()}
    text = json.dumps([book, fields, entry.extra], sort_keys=True, default=str, ensure_ascii=False)
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") & ((1 << 53) - 1)


class LoreIndex:
    """Every entry of a set of books, in scan order, plus the lookup tables."""

    def __init__(self, books: list[tuple[str, Lorebook]], settings: LoreSettings) -> None:
        blocks: dict[str, list[CompiledEntry]] = {"chat": [], "character": [], "global": []}
        for kind, book in books:
            ordered = sorted(
                enumerate(book.entries),
                key=lambda pair: (pair[1].uid < 0, pair[1].uid if pair[1].uid >= 0 else pair[0]),
            )
            for _, entry in ordered:
                blocks.setdefault(kind, []).append(CompiledEntry(entry, book.name, kind, settings))
                object.__setattr__(entry, "_indexed", True)
            object.__setattr__(book, "_indexed", True)
            if isinstance(book.entries, EntryList):
                book.entries.__dict__["_indexed"] = True

        def by_order(items: list[CompiledEntry]) -> list[CompiledEntry]:
            return sorted(items, key=lambda e: -e.order)

        chat, char, glob = blocks["chat"], blocks["character"], blocks["global"]
        strategy = settings.insertion_strategy
        if strategy == 1:
            rest = by_order(char) + by_order(glob)
        elif strategy == 2:
            rest = by_order(glob) + by_order(char)
        else:
            rest = by_order(glob + char)
        self.entries: list[CompiledEntry] = by_order(chat) + rest
        for pos, item in enumerate(self.entries):
            item.pos = pos

        # Lookup tables: text -> positions (in `entries`) of entries with a key indexed there.
        self.word: dict[bool, dict[str, list[int]]] = {False: {}, True: {}}
        self.prefix: dict[bool, dict[str, list[int]]] = {False: {}, True: {}}
        self.suffix: dict[bool, dict[str, list[int]]] = {False: {}, True: {}}
        self.tri: dict[bool, dict[str, list[int]]] = {False: {}, True: {}}
        self.always: list[int] = []
        self.max_override: dict[bool, int] = {False: 0, True: 0}
        self.broken: list[tuple[CompiledEntry, str]] = []
        self.by_hash: dict[str, CompiledEntry] = {}
        self.delayed: list[CompiledEntry] = []
        self.levels = sorted({item.delay_level for item in self.entries if item.delay_level})

        tri_keys: list[tuple[CompiledEntry, Key]] = []
        for item in self.entries:
            for key in item.primary + item.secondary:
                if key.kind == K.INVALID:
                    self.broken.append((item, f'invalid regex key "{K.short_key(key.raw)}": {key.error}'))
            if item.hash is not None:
                self.by_hash.setdefault(str(item.hash), item)
            if item.delay_n:
                self.delayed.append(item)
            if "@@activate" in item.decorators or item.entry.constant or item.dynamic:
                self.always.append(item.pos)
                continue
            if item.scan_depth is not None:
                self.max_override[item.case] = max(self.max_override[item.case], item.scan_depth)
            placed_always = False
            for key in item.primary:
                slot = self._slot(item, key)
                if slot == "always" and not placed_always:
                    self.always.append(item.pos)
                    placed_always = True
                elif slot == "tri":
                    tri_keys.append((item, key))
        # Index each substring key under its rarest trigram, so buckets stay small.
        freq: dict[tuple[bool, str], int] = {}
        for _, key in tri_keys:
            for gram in trigrams(key.text):
                freq[(key.case, gram)] = freq.get((key.case, gram), 0) + 1
        for item, key in tri_keys:
            best = min(trigrams(key.text), key=lambda g: freq[(key.case, g)])
            self.tri[key.case].setdefault(best, []).append(item.pos)

    def _slot(self, item: CompiledEntry, key: Key) -> str:
        kind = key.kind
        if kind in (K.NEVER, K.INVALID):
            return "none"
        if kind in (K.ALWAYS, K.REGEX):
            return "always"
        table_case = key.case
        pos = item.pos
        if kind == K.WORD:
            self.word[table_case].setdefault(key.text, []).append(pos)
            return "word"
        complete = [run for run, left, right in key.runs if left and right]
        if complete:
            best = max(complete, key=len)
            self.word[table_case].setdefault(best, []).append(pos)
            return "word"
        for run, left, _right in key.runs:
            if left and len(run) >= 3:
                self.prefix[table_case].setdefault(run[:3], []).append(pos)
                return "prefix"
        for run, _left, right in key.runs:
            if right and len(run) >= 3:
                self.suffix[table_case].setdefault(run[-3:], []).append(pos)
                return "suffix"
        if len(key.text) >= 3:
            return "tri"
        return "always"


def trigrams(text: str) -> set[str]:
    """Every run of three characters in `text` (how substring keys and texts meet)."""
    return {text[i : i + 3] for i in range(len(text) - 2)}


# Compiled indexes of recent book sets, each with the stamp it was built under (edit version,
# the settings that shape an index, the books). The books themselves are held, so an id()
# cannot be reused by a new object while its index is cached.
_INDEX_CACHE: list[tuple[tuple[object, ...], list[tuple[str, Lorebook]], LoreIndex]] = []
_INDEX_CACHE_SIZE = 4
# Used from a worker thread and the UI thread at once.
_CACHE_LOCK = threading.Lock()


def index_for(books: list[tuple[str, Lorebook]], settings: LoreSettings) -> LoreIndex:
    """The compiled index of `books`: the cached one while no book or entry was edited."""
    stamp: tuple[object, ...] = (
        edit_version(),
        settings.case_sensitive,
        settings.match_whole_words,
        settings.insertion_strategy,
        tuple(
            # `entries` is an EntryList: its changes bump edit_version().
            (kind, book.name, id(book.entries), len(book.entries))
            for kind, book in books
        ),
    )
    with _CACHE_LOCK:
        for i, (cached_stamp, cached_books, index) in enumerate(_INDEX_CACHE):
            if cached_stamp == stamp and all(a[1] is b[1] for a, b in zip(cached_books, books, strict=True)):
                if i:
                    _INDEX_CACHE.insert(0, _INDEX_CACHE.pop(i))
                return index
    with paused_gc():  # a big book is millions of new objects: see tavern.lore.gcpause
        index = LoreIndex(books, settings)
    # Building the index marks entries as indexed; that must not invalidate this very index.
    stamp = (edit_version(),) + stamp[1:]
    with _CACHE_LOCK:
        _INDEX_CACHE.insert(0, (stamp, list(books), index))
        del _INDEX_CACHE[_INDEX_CACHE_SIZE:]
    return index
