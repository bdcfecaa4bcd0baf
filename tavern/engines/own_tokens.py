"""Prompts tokenized the way the model wrote its own replies.

Why: a model does not always generate the tokens its tokenizer gives for the same text. SmolLM2
writes `*grinches*` in other pieces than `tokenize("*grinches*")` returns; sampled at temperature
0.9 (nothing else), 2 of 8 of its 200-token replies had such a word. The reply's cells hold the generated tokens;
the next prompt, tokenized from text, holds the tokenizer's, so the cache walk stops there and
evaluates the reply again from that word on (2 to 15 tokens a time on the Mira benchmark).
llama-server pays the same: it only ever sees text.

The engine remembers the token runs it generated (`OwnTokens.add`) and, where a run's text
recurs in a later prompt, uses the run's tokens there (`OwnTokens.splice`); the text around the
runs is tokenized as usual. It does so every turn, so a reply keeps its cells for as long as it
stays in the window. A reply the app edited keeps the longest start that is still the model's
text. The caller checks that the spliced tokens spell exactly what the plain tokens do and falls
back to those otherwise (a tokenizer that adds a space at the start of every text would not).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

MIN_TOKENS = 2
"""A shorter run cannot be tokenized differently in a way that costs anything."""
MIN_BYTES = 6
"""A shorter run is not kept."""
HEAD = 16
"""A run is searched for by its first this-many bytes (all of it if shorter): a prompt must
quote that much of a reply before its tokens are used (less recurs by chance, in a lore entry)."""
SHARE = 0.5
"""A prompt must quote at least this share of a reply's text (the app may cut its end: a stop
string, an incomplete sentence), else the match is taken for chance."""
LEAD = 3
"""A run may also start at one of its first tokens: the app strips a reply's leading spaces
and newlines, and the name the model wrote before its reply."""


@dataclass(frozen=True)
class Run:
    tokens: tuple[int, ...]
    ends: tuple[int, ...]
    """Byte offset in `text` after each token."""
    text: bytes


@dataclass(frozen=True)
class Span:
    """A run's tokens `first`..`last-1`, found at byte `at` of the prompt."""

    at: int
    size: int
    run: Run
    first: int
    last: int

    @property
    def end(self) -> int:
        return self.at + self.size


class OwnTokens:
    """The token runs an engine generated, newest last, at most `limit` of them."""

    def __init__(self, limit: int = 512) -> None:
        self.limit = limit
        self._runs: OrderedDict[bytes, Run] = OrderedDict()

    def __len__(self) -> int:
        return len(self._runs)

    def add(self, tokens: Sequence[int], pieces: Sequence[bytes]) -> None:
        text = b"".join(pieces)
        if len(tokens) < MIN_TOKENS or len(text) < MIN_BYTES:
            return
        ends, at = [], 0
        for piece in pieces:
            at += len(piece)
            ends.append(at)
        self._runs.pop(text, None)  # the same text generated again: its newest tokens
        self._runs[text] = Run(tuple(tokens), tuple(ends), text)
        while len(self._runs) > self.limit:
            self._runs.popitem(last=False)

    def clear(self) -> None:
        self._runs.clear()

    def spans(self, data: bytes, avoid: Sequence[tuple[int, int]] = ()) -> list[Span]:
        """Where runs occur in `data`, without overlaps, in order. The longest match wins a
        place: a reply's own run over a newer one that begins the same way, which would claim
        the start of it and leave the rest to the tokenizer (then its cells would no longer
        match). Between equals the newer run wins: its tokens are the ones the cells hold. No span
        overlaps the byte ranges in `avoid`."""
        found: list[tuple[int, int, Span]] = []
        # Every HEAD-byte piece of the prompt, so that a run that is not in it (most of them:
        # other chats', replies that left the window) costs one lookup per start, not a scan.
        pieces = {data[i : i + HEAD] for i in range(len(data) - HEAD + 1)}
        for age, run in enumerate(reversed(self._runs.values())):
            for first in _starts(run):
                start = run.ends[first - 1] if first else 0
                head = run.text[start : start + HEAD]
                if len(head) < MIN_BYTES:
                    break
                if len(head) == HEAD and head not in pieces:
                    continue
                spans = []
                at = data.find(head)
                while at >= 0:
                    span = _grow(data, at, run, first, start)
                    if span is not None and not any(span.at < b and a < span.end for a, b in avoid):
                        spans.append(span)
                    at = data.find(head, at + 1)
                found += [(-s.size, age, s) for s in spans]
                if spans:
                    break
        taken: list[Span] = []
        for _, _, span in sorted(found, key=lambda f: (f[0], f[1])):
            if not any(span.at < t.end and t.at < span.end for t in taken):
                taken.append(span)
        return sorted(taken, key=lambda s: s.at)

    def splice(
        self,
        text: str,
        tokenize: Callable[[str, bool], list[int]],
        add_bos: bool,
        avoid: Sequence[str] = (),
    ) -> list[int] | None:
        """`text` tokenized with the runs' own tokens where their text occurs (None where no run
        does). `tokenize(segment, add_bos)` tokenizes the text between them. Never inside one of
        the texts in `avoid` (lore entries: a reply that copies one must not change its tokens,
        or the engine's bank, which holds it under the tokenizer's, could not serve it)."""
        if not self._runs:
            return None
        data = text.encode("utf-8")
        # A span at 0 would take the BOS handling of the text's start: never a reply anyway.
        spans = [s for s in self.spans(data, _occurrences(data, avoid)) if s.at > 0]
        if not spans:
            return None
        out: list[int] = []
        at = 0
        for span in spans:
            out += tokenize(data[at : span.at].decode("utf-8"), add_bos and at == 0)
            out += span.run.tokens[span.first : span.last]
            at = span.end
        out += tokenize(data[at:].decode("utf-8"), False) if at < len(data) else []
        return out


def _starts(run: Run) -> list[int]:
    """Token indices a run may start at: 0, then after each of its first tokens."""
    return list(range(min(LEAD, len(run.tokens) - MIN_TOKENS) + 1))


def _grow(data: bytes, at: int, run: Run, first: int, start: int) -> Span | None:
    """The longest run of whole tokens from `first` whose text `data` has at `at`, ending on a
    character boundary (a token may hold part of a UTF-8 character)."""
    if (data[at] & 0xC0) == 0x80:
        return None
    same = _common(data, at, run.text, start)
    last = first
    for i in range(first, len(run.tokens)):
        if run.ends[i] - start > same:
            break
        last = i + 1
    least = SHARE * (len(run.text) - start)
    while last - first >= MIN_TOKENS and run.ends[last - 1] - start >= least:
        end = at + run.ends[last - 1] - start
        if end >= len(data) or (data[end] & 0xC0) != 0x80:
            return Span(at, end - at, run, first, last)
        last -= 1
    return None


def _occurrences(data: bytes, texts: Sequence[str]) -> list[tuple[int, int]]:
    """Byte ranges where each text occurs in data."""
    out = []
    for text in texts:
        needle = text.encode("utf-8")
        at = data.find(needle) if needle else -1
        while at >= 0:
            out.append((at, at + len(needle)))
            at = data.find(needle, at + len(needle))
    return out


def _common(data: bytes, at: int, text: bytes, start: int) -> int:
    """Length of the common start of data[at:] and text[start:] (binary search on slices)."""
    lo, hi = 0, min(len(data) - at, len(text) - start)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if data[at : at + mid] == text[start : start + mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo
