"""Lorebooks compiled for scanning, the scan text, and key matching against it.

Callers: `tavern.lore.scan` (and `tavern.lore.timed`). Nothing here is public API.

A set of books is compiled once into a `LoreIndex` (cached per book objects; edits are noticed
through `tavern.lore.model.edit_version`): entries in SillyTavern's scan order with their keys
compiled, and lookup tables from the words of the text to the entries whose keys can match.
Each scan step looks the words of its scan text up in those tables (a handful of set
operations), so only entries that can match are checked, whatever the size of the books.

How a key lands in the tables (`LoreIndex._slot`): a plain word key under itself; a key whose
words are cut off inside it (a multi-word key, "half-elf") under a word that must appear whole
in the text, else under the first three letters of a word that must start a text word (or the
last three of one that must end it), else under its rarest trigram; what is left (regexes,
`{{macro}}` keys, constants, one- and two-letter substrings) is checked every step.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

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

MAX_SCAN_DEPTH = 1000
# Scan states (SillyTavern's `scan_state`).
NONE, INITIAL, RECURSION, MIN_ACTIVATIONS = 0, 1, 2, 3


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


def _key_text(value: Any) -> str:
    return value if isinstance(value, str) else ("" if value is None else str(value))


def _count(value: Any) -> int:
    if value is None or value is False:
        return 0
    if value is True:
        return 1
    try:
        number = float(value)
    except (TypeError, ValueError):
        return 0
    return int(number) if math.isfinite(number) else 0


def number(value: Any, default: float) -> float:
    if value is None or isinstance(value, bool):
        return default if value is None else float(value)
    try:
        number = float(value)
    except (TypeError, ValueError):
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
            for gram in _trigrams(key.text):
                freq[(key.case, gram)] = freq.get((key.case, gram), 0) + 1
        for item, key in tri_keys:
            best = min(_trigrams(key.text), key=lambda g: freq[(key.case, g)])
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


def _trigrams(text: str) -> set[str]:
    return {text[i : i + 3] for i in range(len(text) - 2)}


# Compiled indexes of recent book sets. The books themselves are held, so an id() cannot be
# reused by a new object while its index is cached.
_INDEX_CACHE: list[tuple[tuple[Any, ...], list[tuple[str, Lorebook]], LoreIndex]] = []
_INDEX_CACHE_SIZE = 4
# Both caches may be used from a worker thread and the UI thread at once.
_CACHE_LOCK = threading.Lock()


def index_for(books: list[tuple[str, Lorebook]], settings: LoreSettings) -> LoreIndex:
    stamp = (
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


# ---------------------------------------------------------------------------------------------
# scan text


class _Stats:
    """What the index needs to know about one piece of text, computed on first use."""

    __slots__ = ("_low", "_pre", "_suf", "_tri", "_words", "raw")

    def __init__(self, raw: str) -> None:
        self.raw = raw
        self._low: str | None = None
        self._words: dict[bool, set[str]] = {}
        self._pre: dict[bool, set[str]] = {}
        self._suf: dict[bool, set[str]] = {}
        self._tri: dict[bool, set[str]] = {}

    def text(self, case: bool) -> str:
        if case:
            return self.raw
        if self._low is None:
            self._low = self.raw.lower()
        return self._low

    def words(self, case: bool) -> set[str]:
        found = self._words.get(case)
        if found is None:
            found = set(K.WORD_RUN.findall(self.text(case)))
            self._words[case] = found
        return found

    def prefixes(self, case: bool) -> set[str]:
        found = self._pre.get(case)
        if found is None:
            found = {w[:3] for w in self.words(case) if len(w) >= 3}
            self._pre[case] = found
        return found

    def suffixes(self, case: bool) -> set[str]:
        found = self._suf.get(case)
        if found is None:
            found = {w[-3:] for w in self.words(case) if len(w) >= 3}
            self._suf[case] = found
        return found

    def trigrams(self, case: bool) -> set[str]:
        found = self._tri.get(case)
        if found is None:
            found = _trigrams(self.text(case))
            self._tri[case] = found
        return found


# Chat messages are scanned again every turn; their word sets are kept for the next turns.
_STATS_CACHE: dict[str, _Stats] = {}
_STATS_CACHE_SIZE = 512


def _stats_for(text: str) -> _Stats:
    with _CACHE_LOCK:
        found = _STATS_CACHE.pop(text, None)
        if found is None:
            found = _Stats(text)
            if len(_STATS_CACHE) >= _STATS_CACHE_SIZE:
                del _STATS_CACHE[next(iter(_STATS_CACHE))]
        _STATS_CACHE[text] = found  # re-inserted: the dict's order is the recency order
    return found


class Segment:
    """A piece of scan text (one message, injected text, or one recursion step)."""

    __slots__ = (
        "label",
        "prefixes",
        "raw",
        "spans",
        "stats",
        "suffixes",
        "text",
        "trigrams",
        "words",
    )

    def __init__(self, raw: str, label: str, spans: list[tuple[int, int, CompiledEntry]] | None = None):
        stats = _stats_for(raw) if spans is None else _Stats(raw)
        self.stats = stats
        self.raw = raw
        self.label = label
        self.spans = spans
        self.text = stats.text
        self.words = stats.words
        self.prefixes = stats.prefixes
        self.suffixes = stats.suffixes
        self.trigrams = stats.trigrams


class ScanView:
    """The scan text for one depth: SillyTavern's `WorldInfoBuffer.get`."""

    __slots__ = ("_text", "_words", "empty", "segments", "serial")
    _serials = itertools.count()

    def __init__(self, segments: list[Segment], empty: bool = False) -> None:
        self.segments = segments
        self.empty = empty
        # Identifies this view's text in caches (an id() could be reused after it is freed).
        self.serial = next(ScanView._serials)
        self._text: dict[bool, str] = {}
        self._words: dict[bool, set[str]] = {}

    def text(self, case: bool) -> str:
        found = self._text.get(case)
        if found is None:
            if self.empty:
                found = ""
            else:
                # SillyTavern prefixes each piece with \x01 so `^` cannot match inside the text.
                found = "\x01" + "\n\x01".join(seg.text(case) for seg in self.segments)
            self._text[case] = found
        return found

    def words(self, case: bool) -> set[str]:
        found = self._words.get(case)
        if found is None:
            found = set().union(*(seg.words(case) for seg in self.segments))
            self._words[case] = found
        return found


class Scanner:
    """State of one `scan_lore` call."""

    def __init__(
        self,
        index: LoreIndex,
        messages: list[str],
        injected: Sequence[str],
        settings: LoreSettings,
        substitute: Callable[[str], str] | None,
    ) -> None:
        self.index = index
        self.settings = settings
        self.substitute = substitute
        self.messages = [Segment(text, f"message -{i + 1}") for i, text in enumerate(messages)]
        self.injected = [Segment(text, "injected text") for text in injected]
        self.recursion: list[Segment] = []
        self.skew = 0
        self.views: dict[tuple[int, bool], ScanView] = {}
        self.regex_left = settings.regex_total_ms / 1000.0
        self.regex_cache: dict[tuple[int, int], bool] = {}
        self.timed_out: dict[int, str] = {}  # id(key) -> message
        self.timeouts: dict[CompiledEntry, str] = {}
        self.dynamic_keys: dict[tuple[str, bool, bool], Key] = {}

    # -- text ---------------------------------------------------------------------------------
    def global_depth(self) -> int:
        return self.settings.scan_depth + self.skew

    def view(self, entry_depth: int | None, state: int) -> ScanView:
        depth = entry_depth if entry_depth is not None else self.global_depth()
        with_recursion = state != MIN_ACTIVATIONS
        cache_key = (depth, with_recursion)
        found = self.views.get(cache_key)
        if found is not None:
            return found
        if depth <= 0:
            found = ScanView([], empty=True)
        else:
            depth = min(depth, MAX_SCAN_DEPTH)
            segments = self.messages[:depth] + self.injected
            if with_recursion:
                segments = segments + self.recursion
            found = ScanView(segments)
        self.views[cache_key] = found
        return found

    def add_recursion(self, items: list[CompiledEntry], contents: list[str]) -> None:
        spans = []
        start = 0
        for item, content in zip(items, contents, strict=True):
            spans.append((start, start + len(content), item))
            start += len(content) + 1
        self.recursion.append(Segment("\n".join(contents), "recursion", spans))
        self.views.clear()

    # -- matching -----------------------------------------------------------------------------
    def resolve(self, key: Key, item: CompiledEntry) -> Key:
        """The key with macros substituted (SillyTavern substitutes keys before matching)."""
        if self.substitute is None or "{{" not in key.raw:
            return key
        text = self.substitute(key.raw)
        whole = item.entry.match_whole_words
        whole = self.settings.match_whole_words if whole is None else whole
        cache_key = (text, key.case, bool(whole))
        found = self.dynamic_keys.get(cache_key)
        if found is None:
            found = Key(text or "", key.case, bool(whole))
            self.dynamic_keys[cache_key] = found
        return found

    def match(self, key: Key, item: CompiledEntry, view: ScanView) -> bool:
        if key.dynamic and self.substitute is not None:
            key = self.resolve(key, item)
        kind = key.kind
        if kind == K.WORD:
            return key.text in view.words(key.case)
        if kind == K.SUBSTR:
            return key.text in view.text(key.case)
        if kind == K.BOUNDARY:
            return key.rx.search(view.text(key.case)) is not None
        if kind == K.REGEX:
            return self.regex_test(key, item, view)
        return kind == K.ALWAYS

    def regex_test(self, key: Key, item: CompiledEntry, view: ScanView) -> bool:
        text = view.text(True)
        cache_key = (id(key), view.serial)
        found = self.regex_cache.get(cache_key)
        if found is not None:
            return found
        message = self.timed_out.get(id(key))
        if message is None:
            limit = min(self.settings.regex_timeout_ms / 1000.0, self.regex_left)
            if limit <= 0:
                message = f'regex key "{key.raw}" skipped: time for regex keys in this scan spent'
            else:
                started = time.perf_counter()
                try:
                    if key.anchored:
                        found = key.rx.match(text, timeout=limit) is not None
                    else:
                        found = key.rx.search(text, timeout=limit) is not None
                except TimeoutError:
                    message = f'regex key "{key.raw}" timed out after {limit * 1000:.0f} ms'
                self.regex_left -= time.perf_counter() - started
            if message is not None:
                self.timed_out[id(key)] = message
        if message is not None:
            self.timeouts.setdefault(item, message)
            found = False
        self.regex_cache[cache_key] = bool(found)
        return bool(found)

    def locate(self, key: Key, item: CompiledEntry, view: ScanView) -> str:
        """Where in the scan text `key` matches, for the explanation."""
        key = self.resolve(key, item)
        for seg in view.segments:
            pos = self._find(key, seg)
            if pos is None:
                continue
            if seg.spans:
                for start, end, source in seg.spans:
                    if start <= pos <= end:
                        name = f' "{source.comment}"' if source.comment else ""
                        return f"recursion text of uid {source.uid}{name}"
                return "recursion text"
            return seg.label
        return "scan text"

    def _find(self, key: Key, seg: Segment) -> int | None:
        kind = key.kind
        try:
            if kind == K.WORD:
                if key.text not in seg.words(key.case):
                    return None
                if key.rx is None:
                    key.rx = re.compile(r"(?<!\w)" + re.escape(key.text) + r"(?!\w)")
                m = key.rx.search(seg.text(key.case))
                return m.start() if m else None
            if kind == K.SUBSTR:
                pos = seg.text(key.case).find(key.text)
                return pos if pos >= 0 else None
            if kind == K.BOUNDARY:
                m = key.rx.search(seg.text(key.case))
                return m.start() if m else None
            if kind == K.REGEX and id(key) not in self.timed_out:
                limit = min(self.settings.regex_timeout_ms / 1000.0, max(self.regex_left, 0.001))
                m = key.rx.search(seg.raw, timeout=limit)
                return m.start() if m else None
        except TimeoutError:
            return None
        return None

    # -- candidates ---------------------------------------------------------------------------
    def candidates(self, state: int, extra: Iterable[CompiledEntry]) -> list[CompiledEntry]:
        index = self.index
        found: set[int] = set(index.always)
        found.update(item.pos for item in extra)
        for case in (False, True):
            word, prefix, suffix, tri = (
                index.word[case],
                index.prefix[case],
                index.suffix[case],
                index.tri[case],
            )
            if not (word or prefix or suffix or tri):
                continue
            depth = max(self.global_depth(), index.max_override[case])
            view = self.view(depth, state)
            if view.empty:
                continue
            words = view.words(case)
            for w in words & word.keys():
                found.update(word[w])
            if prefix or suffix:
                for seg in view.segments:
                    if prefix:
                        for p in seg.prefixes(case) & prefix.keys():
                            found.update(prefix[p])
                    if suffix:
                        for s in seg.suffixes(case) & suffix.keys():
                            found.update(suffix[s])
            if tri:
                for seg in view.segments:
                    for g in seg.trigrams(case) & tri.keys():
                        found.update(tri[g])
        entries = index.entries
        return [entries[pos] for pos in sorted(found)]
