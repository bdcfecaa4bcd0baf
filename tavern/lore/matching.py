"""The scan text of one `scan_lore` call and key matching against it: `Scanner`.

Callers: `tavern.lore.scan` (one `Scanner` a scan) and `tavern.lore.rules` (the activation
rules match keys through it). Nothing here is public API.

The scan text is SillyTavern's `WorldInfoBuffer`: the last messages newest first, injected
text and recursion text, one `ScanView` per depth. Each piece keeps its word, prefix, suffix
and trigram sets (a chat message's across turns), which `Scanner.candidates` looks up in the
tables of a `tavern.lore.index.LoreIndex`. Regex keys run with the time limits of
`LoreSettings`; a key that runs out is reported, not retried.
"""

from __future__ import annotations

import itertools
import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

from tavern.lore import keys as K
from tavern.lore.index import CompiledEntry, LoreIndex, trigrams
from tavern.lore.keys import Key

if TYPE_CHECKING:
    from tavern.config import LoreSettingsModel as LoreSettings

MAX_SCAN_DEPTH = 1000
# Scan states (SillyTavern's `scan_state`).
NONE, INITIAL, RECURSION, MIN_ACTIVATIONS = 0, 1, 2, 3


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
            found = trigrams(self.text(case))
            self._tri[case] = found
        return found


# Chat messages are scanned again every turn; their word sets are kept for the next turns.
_STATS_CACHE: dict[str, _Stats] = {}
_STATS_CACHE_SIZE = 512
# Used from a worker thread and the UI thread at once.
_CACHE_LOCK = threading.Lock()


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

    def __init__(
        self, raw: str, label: str, spans: list[tuple[int, int, CompiledEntry]] | None = None
    ) -> None:
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
            found = set[str]().union(*(seg.words(case) for seg in self.segments))
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
        spans: list[tuple[int, int, CompiledEntry]] = []
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
            return key.rx is not None and key.rx.search(view.text(key.case)) is not None
        if kind == K.REGEX:
            return self.regex_test(key, item, view)
        return kind == K.ALWAYS

    def regex_test(self, key: Key, item: CompiledEntry, view: ScanView) -> bool:
        text = view.text(True)
        cache_key = (id(key), view.serial)
        found = self.regex_cache.get(cache_key)
        if found is not None:
            return found
        pattern = key.pattern
        assert pattern is not None  # every REGEX key has its pattern
        message = self.timed_out.get(id(key))
        if message is None:
            limit = min(self.settings.regex_timeout_ms / 1000.0, self.regex_left)
            if limit <= 0:
                message = f'regex key "{key.raw}" skipped: time for regex keys in this scan spent'
            else:
                started = time.perf_counter()
                try:
                    if key.anchored:
                        found = pattern.match(text, timeout=limit) is not None
                    else:
                        found = pattern.search(text, timeout=limit) is not None
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
            if kind == K.BOUNDARY and key.rx is not None:
                m = key.rx.search(seg.text(key.case))
                return m.start() if m else None
            if kind == K.REGEX and key.pattern is not None and id(key) not in self.timed_out:
                limit = min(self.settings.regex_timeout_ms / 1000.0, max(self.regex_left, 0.001))
                found = key.pattern.search(seg.raw, timeout=limit)
                return found.start() if found else None
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
