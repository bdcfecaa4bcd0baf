"""Loop detection: a reply that repeats itself, or repeats the last few replies.

Small models fall into loops readily (SmolLM2-135M at low temperature ends one reply in three
with "He was a blacksmith, and he made swords." twenty times over). Two detectors, pure Python:

- `ReplyLoopDetector`, fed the reply's text deltas as they stream. It splits them into word and
  punctuation tokens and keeps, for every period p up to `max_period`, how many tokens in a row
  have equalled the token p back. A unit of p tokens repeated r times makes that run reach
  p x (r - 1), so one update per token per period finds it: O(max_period) per token, never a
  rescan of the reply. A second, character-level copy of the same counter catches one
  character (or a short syllable) spammed inside a word ("aaaaaaa", "hahahaha", "!!!!!!").
  When it fires, `cut` is where the first copy of the repeated unit ends: the caller stops the
  run-on and keeps the text up to there. A third counter catches the loop that is not
  back-to-back: one phrase of `phrase_words` words written `min_repeats` times with other words
  between ("They were wearing a red suit, and they were wearing a red hat. They were wearing
  a red suit..."); the cut then falls before the sentence that repeats it once too often.
- `compare_replies`, run on a finished reply against the last few character replies: the same
  opening words, a large share of long word n-grams already written, or the same paragraph and
  line shape as each of the last replies (a post template).

The loop guard (`tavern/loop_guard.py`) acts on both: it stops and trims a run-on, and regenerates a
templated reply once with stronger anti-repetition samplers. This module only decides.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

_TOKEN = re.compile(r"\w+|[^\w\s]|\n", re.UNICODE)
_SENTENCE_END = frozenset({".", "!", "?", "…", "\n"})
_WORD = re.compile(r"\w+(?:'\w+)?", re.UNICODE)


@dataclass(frozen=True)
class LoopLimits:
    """Thresholds (the `[loops]` settings)."""

    min_repeats: int = 3
    """A phrase of several tokens counts as a loop from its third copy in a row."""
    min_loop_tokens: int = 12
    """...and only once the repeated copies hold this many tokens ("no, no, no" is speech)."""
    max_period: int = 48
    """The longest repeated unit looked for, in word and punctuation tokens."""
    phrase_words: int = 5
    """A phrase of this many words written `min_repeats` times in one reply, even with other
    words between the copies, is a loop."""
    char_run: int = 24
    """One character or a short syllable repeated over this many characters is spam."""
    opening_words: int = 5
    """Two replies that start with the same this-many words share an opening."""
    ngram: int = 8
    """Word n-gram length for the overlap with earlier replies."""
    overlap: float = 0.3
    """A reply whose n-grams were this share already written in one earlier reply repeats it."""
    history: int = 3
    """How many earlier character replies a new one is compared with."""


@dataclass
class InReplyLoop:
    """A run-on found inside a reply: `cut` is the character offset to keep up to."""

    kind: str
    """"phrase" (a word sequence repeated) or "chars" (characters spammed)."""
    unit: str
    """One copy of what repeats (for the message shown to the user)."""
    cut: int

    def as_dict(self) -> dict[str, object]:
        return {"kind": self.kind, "unit": self.unit[:80], "cut": self.cut}


class _RunCounter:
    """For each period p in 1..max_period: how many items in a row equalled the item p back."""

    __slots__ = ("items", "runs", "max_period")

    def __init__(self, max_period: int) -> None:
        self.items: list[str] = []
        self.runs = [0] * (max_period + 1)
        self.max_period = max_period

    def push(self, item: str) -> None:
        items = self.items
        n = len(items)
        runs = self.runs
        for p in range(1, min(self.max_period, n) + 1):
            runs[p] = runs[p] + 1 if items[n - p] == item else 0
        items.append(item)


class ReplyLoopDetector:
    """Feed text deltas with `feed`; it returns an `InReplyLoop` the first time a loop shows.

    Cost per delta: the new characters and tokens times `max_period` counter updates.
    """

    def __init__(self, limits: LoopLimits | None = None) -> None:
        self.limits = limits or LoopLimits()
        self.text = ""
        self._scanned = 0  # text[:_scanned] has been split into complete tokens
        self._tokens = _RunCounter(self.limits.max_period)
        self._starts: list[int] = []  # character offsets of each token
        self._ends: list[int] = []
        self._chars = _RunCounter(8)
        self._words: list[int] = []  # token indices of the word tokens, in order
        self._phrases: dict[tuple[str, ...], list[int]] = {}  # phrase -> indices (into _words) where it starts
        self.found: InReplyLoop | None = None

    def feed(self, delta: str) -> InReplyLoop | None:
        if self.found is not None or not delta:
            return self.found
        start = len(self.text)
        self.text += delta
        for offset, ch in enumerate(delta, start):
            self._chars.push(ch.casefold())
            hit = self._char_loop(offset + 1)
            if hit is not None:
                self.found = hit
                return hit
        # Only tokens that cannot grow any more (something follows them) are counted.
        for match in _TOKEN.finditer(self.text, self._scanned):
            if match.end() == len(self.text) and _wordlike(match.group()):
                break
            self._scanned = match.end()
            self._starts.append(match.start())
            self._ends.append(match.end())
            self._tokens.push(match.group().casefold())
            hit = self._phrase_loop() or self._phrase_again()
            if hit is not None:
                self.found = hit
                return hit
        return None

    def _char_loop(self, end: int) -> InReplyLoop | None:
        runs = self._chars.runs
        limit = self.limits.char_run
        for p in range(1, len(runs)):
            run = runs[p]
            if run >= limit:
                first = end - run - p  # where the first copy of the unit starts
                unit = self.text[first : first + p]
                if unit.isspace() or (p > 1 and not _varied(unit)):
                    continue  # blank runs are layout; "abab" is found at p=2 once
                if p > 1 and " " in unit and not unit.strip(" ").isalpha():
                    continue  # "a b a b": a phrase loop, the token counter's job
                cut = first + (3 if p == 1 else 2 * p)  # "aaa", "haha": a little is expression
                return InReplyLoop("chars", unit, _trim_cut(self.text, cut, closing=False))
        return None

    def _phrase_loop(self) -> InReplyLoop | None:
        runs = self._tokens.runs
        lim = self.limits
        n = len(self._tokens.items)
        for p in range(1, len(runs)):
            run = runs[p]
            if run >= max(p * (lim.min_repeats - 1), lim.min_loop_tokens):
                first = n - run - p
                unit_tokens = self._tokens.items[first : first + p]
                if all(t == "\n" for t in unit_tokens):
                    continue
                # The text is periodic from `first` on, so any p tokens from there are one
                # copy: end the kept copy at a sentence end when the second copy has one.
                items = self._tokens.items
                end = first + p
                for j in range(first + p - 1, first + 2 * p - 1):
                    if items[j] == "\n":
                        end = j
                        break
                    if items[j] in _SENTENCE_END and _wordlike(items[j + 1]):  # not inside "..."
                        end = j + 1
                        break
                start, cut = self._starts[end - p], self._ends[end - 1]
                return InReplyLoop("phrase", self.text[start:cut].strip(), _trim_cut(self.text, cut))
        return None


    def _phrase_again(self) -> InReplyLoop | None:
        """The last `phrase_words` words, when they are the `min_repeats`-th copy of a phrase."""
        lim = self.limits
        n = lim.phrase_words
        items = self._tokens.items
        last = len(items) - 1
        if n < 1 or not _wordlike(items[last]):
            return None
        self._words.append(last)
        if len(self._words) < n:
            return None
        ws = self._words
        first_word = len(ws) - n
        key = tuple(items[t] for t in ws[first_word:])
        seen = self._phrases.setdefault(key, [])
        seen.append(first_word)
        if len(seen) < lim.min_repeats:
            return None
        # Copies nearly back to back (2.5 copies of a sentence): keep the first one only;
        # copies with other words between: keep all but the one too many.
        prev_end, second = ws[seen[0] + n - 1], ws[seen[1]]
        k = 1 if second - prev_end <= 2 * n else len(seen) - 1
        target = ws[seen[k]]
        # Cut before the sentence holding that copy (at the copy itself if no sentence ends
        # since the first copy began).
        j = target
        while j > ws[seen[0]] and items[j - 1] not in _SENTENCE_END:
            j -= 1
        if j == ws[seen[0]]:
            j = target
        start, end = self._starts[ws[seen[0]]], self._ends[ws[seen[0] + n - 1]]
        if k == 1:  # back to back: one copy is everything up to where the second begins
            end = self._starts[second]
        cut = _trim_cut(self.text, self._ends[j - 1]) if j > 0 else 0
        return InReplyLoop("phrase", self.text[start:end].strip(), cut)


def _varied(unit: str) -> bool:
    """A unit that is not itself one character repeated (found at a shorter period)."""
    return len(set(unit)) > 1


def _wordlike(token: str) -> bool:
    return token[0].isalnum() or token[0] == "_"


def _trim_cut(text: str, cut: int, closing: bool = True) -> int:
    """Keep punctuation that closes the kept copy ("swords." not "swords"), drop trailing space."""
    while closing and cut < len(text) and not text[cut].isspace() and not _wordlike(text[cut]):
        cut += 1
    while cut > 0 and text[cut - 1].isspace():
        cut -= 1
    return cut


def find_in_reply_loop(text: str, limits: LoopLimits | None = None) -> InReplyLoop | None:
    """The first run-on in a finished text (the detector fed all at once, plus a flush)."""
    detector = ReplyLoopDetector(limits)
    return detector.feed(text) or detector.feed("\n")


# -- across replies ------------------------------------------------------------------------------


@dataclass
class CrossReplyLoop:
    """Why a reply repeats the earlier ones. Empty reasons: it does not."""

    reasons: list[str] = field(default_factory=list)
    opening: str = ""
    """The shared opening words, as this reply writes them (to ban their first token)."""
    overlap: float = 0.0
    structure: str = ""

    def __bool__(self) -> bool:
        return bool(self.reasons)

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"reasons": list(self.reasons), "overlap": round(self.overlap, 3)}
        if self.opening:
            out["opening"] = self.opening
        if self.structure:
            out["structure"] = self.structure
        return out


def words(text: str) -> list[str]:
    return [w.casefold() for w in _WORD.findall(text)]


def opening(text: str, n: int) -> tuple[str, ...]:
    return tuple(words(text)[:n])


def opening_text(text: str, n: int) -> str:
    """The first n words of `text` as written (punctuation between them kept)."""
    found = list(_WORD.finditer(text))
    if len(found) < n or n <= 0:
        return ""
    return text[found[0].start() : found[n - 1].end()]


def ngram_overlap(text: str, earlier: str, n: int) -> float:
    """Share of `text`'s word n-grams that `earlier` already has (0 when it has too few)."""
    mine = _ngrams(words(text), n)
    if not mine:
        return 0.0
    theirs = set(_ngrams(words(earlier), n))
    return sum(1 for g in mine if g in theirs) / len(mine)


def _ngrams(ws: Sequence[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(ws[i : i + n]) for i in range(len(ws) - n + 1)]


def structure(text: str) -> str:
    """The reply's shape: one letter per line (a action in asterisks, q speech, n narration,
    l a list item, - blank) with a rough length. Two replies with the same multi-line shape
    follow one template."""
    out = []
    for line in text.strip().split("\n"):
        s = line.strip()
        if not s:
            out.append("-")
            continue
        kind = "a" if s.startswith("*") else "q" if s[0] in "\"“«" else "l" if s[0] in "-•" or s[:2].rstrip(".").isdigit() else "n"
        size = len(words(s))
        out.append(kind + ("s" if size < 8 else "m" if size < 30 else "l"))
    return "".join(out)


def compare_replies(text: str, earlier: Sequence[str], limits: LoopLimits | None = None) -> CrossReplyLoop:
    """Whether `text` repeats the last replies in `earlier` (oldest first)."""
    lim = limits or LoopLimits()
    recent = [e for e in earlier if e.strip()][-lim.history :]
    result = CrossReplyLoop()
    if not recent or not text.strip():
        return result
    head = opening(text, lim.opening_words)
    if len(head) == lim.opening_words and any(opening(e, lim.opening_words) == head for e in recent):
        result.reasons.append("opening")
        result.opening = opening_text(text, lim.opening_words)
    result.overlap = max(ngram_overlap(text, e, lim.ngram) for e in recent)
    if result.overlap >= lim.overlap:
        result.reasons.append("ngrams")
    shape = structure(text)
    # One template, three posts in a row: only shapes with several lines say anything.
    lines = sum(1 for c in shape if c in "aqnl")
    if len(recent) >= 2 and lines >= 3 and all(structure(e) == shape for e in recent[-2:]):
        result.reasons.append("structure")
        result.structure = shape
    return result


_SENTENCE = re.compile(r"[^.!?…\n]*(?:[.!?…]+[\"'”*)]*|\n|$)")


def drop_copied(text: str, earlier: Sequence[str], limits: LoopLimits | None = None) -> str:
    """`text` without the sentences that are mostly copied from the last replies (most of their
    words inside a word n-gram one of them already has): what is left of a rewritten reply
    that still repeats. `text` itself when nothing is copied, or when nothing would be left."""
    lim = limits or LoopLimits()
    recent = [e for e in earlier if e.strip()][-lim.history :]
    theirs = {g for e in recent for g in _ngrams(words(e), lim.ngram)}
    found = list(_WORD.finditer(text))
    ws = [m.group().casefold() for m in found]
    copied = [False] * len(ws)
    for i, gram in enumerate(_ngrams(ws, lim.ngram)):
        if gram in theirs:
            copied[i : i + lim.ngram] = [True] * lim.ngram
    if not any(copied):
        return text
    kept, w = [], 0
    for sentence in _SENTENCE.finditer(text):
        a, b = sentence.span()
        mine = []
        while w < len(found) and found[w].start() < b:
            if found[w].start() >= a:
                mine.append(copied[w])
            w += 1
        if not mine or sum(mine) * 2 <= len(mine):
            kept.append(sentence.group())
    out = "".join(kept).strip()
    return out if words(out) else text


def describe(record: Mapping[str, object]) -> str:
    """One line for the status bar and the CLI: what was found and what was done (`record`:
    the loop guard's, whose "in_reply" and "across" are the `as_dict` of what was found)."""
    parts = []
    inside = record.get("in_reply")
    if isinstance(inside, dict) and inside:
        parts.append(f'stopped a run-on ("{_short(str(inside.get("unit", "")))}" repeated) and trimmed it')
    across = record.get("across")
    if isinstance(across, dict) and across:
        why = ", ".join(across.get("reasons", []))
        if record.get("regenerated"):
            still = " (it still repeats)" if record.get("still_repeats") else ""
            dropped = ", dropped the sentences it still copied" if record.get("dropped_chars") else ""
            parts.append(f"reply repeated the last ones ({why}): regenerated with DRY{dropped}{still}")
        else:
            parts.append(f"reply repeats the last ones ({why})")
    return "loop: " + "; ".join(parts) if parts else ""


def _short(text: str, n: int = 30) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


__all__ = [
    "CrossReplyLoop",
    "InReplyLoop",
    "LoopLimits",
    "ReplyLoopDetector",
    "compare_replies",
    "describe",
    "drop_copied",
    "find_in_reply_loop",
    "ngram_overlap",
    "structure",
]
