"""Cells of text that just left the prompt, kept in the KV cache in case the text comes back.

A lorebook entry fires, lapses and fires again two turns later; an @depth note or the author's
note moves down one message per turn; the layout takes text out here and puts the same text
back there. The reuse plan (`reuse_plan.plan_align`) keeps what stays and forgives what goes,
but text that comes back is new to it, and llama-server (or any cache with one state per
slot) evaluates it again. The bank keeps each removed chunk's cells on a sequence of their own,
at positions past every live sequence's (nothing attends to them there). When inserted text
matches a banked chunk, its cells move back in, shifted to their new place, instead of being
evaluated. The approximation is the one chunk reuse already makes: the cells keep the
attention they had in their old context.

Bounded: at most `capacity` cells. What goes first is what is least likely to come back: text
that left from the top of the window (the oldest messages, gone for good), then other text,
then text known to come back (it did before, or the caller said it may: lore entries), and
last text the prompt being loaded needs; oldest first within each. A new chunk never pushes
out one worth more: it goes instead. When the KV cache runs out of room the bank gives its
cells back before anything else: it is only ever a cache.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover - typing only
    from tavern.engines.lowlevel.context import KVCache

POSITIONS = 8
"""Bank positions span at most this many times its capacity: past that the chunks are moved
together (`CellBank._compact`), so that the positions in use stay bounded however long the chat."""

SHORT_CHUNK = 16
"""`CellBank.short`, at most."""


@dataclass(eq=False)  # compared by identity: the bank holds each chunk once
class Chunk:
    tokens: list[int]
    pos: int
    """Bank position of the chunk's first cell."""
    worth: int = 1
    """Eviction order, lowest first (oldest first within a level): 0 = it left from the top of
    the window, where the oldest messages leave for good; 1 = it left from further down (a
    lapsed lore entry, a note that moved); 2 = this text is known to come back: it did before,
    from the bank, or the caller said it may (`CellBank.expect`: a lore entry)."""
    expected: bool = False
    """Most of it is text the caller said may come back: kept, and served, from `short` tokens."""
    wanted: bool = False
    """It holds text of the prompt being loaded (`CellBank.want`): it goes last."""


@dataclass
class Match:
    """Prompt tokens [at, at + n) are the chunk's tokens [offset, offset + n)."""

    at: int
    n: int
    chunk: Chunk
    offset: int


class CellBank:
    def __init__(self, kv: KVCache, seq: int, base: int, capacity: int, min_chunk: int):
        self.kv = kv
        """The cache whose cells are moved."""
        self.seq = seq
        self.base = base
        """Bank positions start here, past every live sequence's positions."""
        self.capacity = max(0, capacity)
        self.min_chunk = max(1, min_chunk)
        self.short = min(self.min_chunk, SHORT_CHUNK)
        """Shortest chunk kept, and shortest run served, when the caller said the text may come
        back (`expect`): a lore entry of a sentence or two, such as a weather line, is shorter than
        `min_chunk`. Other text needs `min_chunk` tokens: shorter runs are too often template
        text or a common phrase, where cells from another context would be a worse guess."""
        self.chunks: list[Chunk] = []  # oldest first
        self._next = base
        self._returned: dict[int, None] = {}
        """Hashes of `_pieces` of text that came back from the bank, newest last."""
        self._wanted: set[int] = set()
        """Hashes of every `short` tokens of the text to evaluate in the prompt being loaded (`want`)."""
        self._expected: dict[int, None] = {}
        """Hashes of every `short` tokens of text the caller said may come back (`expect`),
        newest last."""

    @property
    def cells(self) -> int:
        return sum(len(c.tokens) for c in self.chunks)

    def put(
        self, seq: int, a: int, b: int, tokens: Sequence[int], top: bool = False, wanted_only: bool = False
    ) -> None:
        """Take `seq`'s cells [a, b) (holding `tokens`) out of it: into the bank when the chunk
        is worth keeping, else they are simply removed. `top`: they left from right after the
        part of the prompt that stayed put (the window slid). A span that holds both expected
        text and other text (the notes at the top of the window leaving with the oldest
        messages) is banked as parts, so that the messages, gone for good, are not kept for
        the sake of the entries, nor the entries lost with the messages. `wanted_only`: the
        cells are kept elsewhere (a saved state), so only parts the prompt being loaded wants
        (`want`) are banked."""
        for x, y, expected in self._parts(tokens):
            self._put(seq, a + x, a + y, tokens[x:y], top, expected, wanted_only)

    def _put(
        self, seq: int, a: int, b: int, tokens: Sequence[int], top: bool, expected: bool, wanted_only: bool
    ) -> None:
        n = b - a
        worth = 2 if expected or self._came_back(tokens) else 0 if top else 1
        fits = (self.short if expected else self.min_chunk) <= n <= self.capacity
        wanted = fits and self._is_wanted(tokens)
        if not fits or (wanted_only and not wanted):
            self.kv.remove(seq, a, b)
            return
        chunk = Chunk(list(tokens), self._next, worth, expected, wanted)
        while self.chunks and self.cells + n > self.capacity:
            if min(_rank(c) for c in self.chunks) > _rank(chunk):  # all worth more than this
                self.kv.remove(seq, a, b)
                return
            self.drop_oldest()
        if self._next + n > self.base + POSITIONS * self.capacity:
            self._compact()
        chunk.pos = self._next
        self.kv.move_out(seq, a, b, self.seq, self._next)
        self.chunks.append(chunk)
        self._next += n

    def _parts(self, tokens: Sequence[int]) -> list[tuple[int, int, bool]]:
        """[x, y) spans of a removed text, each with whether most of it is expected text: cut
        where `min_chunk` or more tokens in a row are not (a message, not a block's header)."""
        covered = self._covered(tokens)
        cuts: list[tuple[int, int]] = []  # runs of other text long enough to stand alone
        i = 0
        while i < len(tokens):
            j = i
            while j < len(tokens) and not covered[j]:
                j += 1
            if j - i >= self.min_chunk and j - i < len(tokens):
                cuts.append((i, j))
            i = j + 1
        edges = sorted({0, len(tokens), *(e for cut in cuts for e in cut)})
        return [(x, y, 2 * sum(covered[x:y]) >= y - x) for x, y in zip(edges, edges[1:])]

    def _came_back(self, tokens: Sequence[int]) -> bool:
        """Did part of this text come back from the bank before?"""
        return any(h in self._returned for h in _grams(tokens, self.min_chunk))

    def _covered(self, tokens: Sequence[int]) -> list[bool]:
        """Which tokens of this text belong to text the caller expects back (`expect`)."""
        k = self.short
        covered = [False] * len(tokens)
        for i, h in enumerate(_grams(tokens, k)):
            if h in self._expected:
                covered[i : i + k] = [True] * k
        return covered

    def want(self, prompt: Sequence[int], spans: Sequence[tuple[int, int]]) -> None:
        """The prompt about to be loaded, and its spans the cache lacks: chunks that hold some
        of that text (it is about to come back) go last when the bank makes room, whatever
        their worth. (Only those spans: an old message leaving from the top can share a line
        with the newest one.)"""
        self._wanted = {h for a, b in spans for h in _grams(prompt[a:b], self.short)}
        for chunk in self.chunks:
            chunk.wanted = self._is_wanted(chunk.tokens)

    def _is_wanted(self, tokens: Sequence[int]) -> bool:
        return any(h in self._wanted for h in _grams(tokens, self.short))

    def find(self, prompt: Sequence[int], spans: Sequence[tuple[int, int]]) -> list[Match]:
        """Runs of at least `min_chunk` tokens (`short` from expected text) of `prompt`
        inside `spans` (the text to evaluate) that a banked chunk holds, longest first at each
        place. A chunk may serve several places (a removed span held several lore entries; some
        fire again), each of its cells once."""
        if not self.chunks:
            return []
        k = self.short
        index: dict[tuple[int, ...], list[tuple[Chunk, int]]] = {}
        for chunk in self.chunks:
            t = chunk.tokens
            for i in range(len(t) - k + 1):
                index.setdefault(tuple(t[i : i + k]), []).append((chunk, i))
        used: dict[int, list[tuple[int, int]]] = {}  # id(chunk) -> its cells already matched
        found: list[Match] = []
        for a, b in spans:
            p = a
            while p + k <= b:
                best: Match | None = None
                for chunk, i in index.get(tuple(prompt[p : p + k]), ()):
                    taken = used.get(id(chunk), ())
                    if any(x <= i < y for x, y in taken):
                        continue
                    stop = min([x for x, _ in taken if x > i], default=len(chunk.tokens))
                    n = k
                    while i + n < stop and p + n < b and chunk.tokens[i + n] == prompt[p + n]:
                        n += 1
                    if n >= self._shortest(chunk) and (best is None or n > best.n):
                        best = Match(p, n, chunk, i)
                if best is None:
                    p += 1
                    continue
                used.setdefault(id(best.chunk), []).append((best.offset, best.offset + best.n))
                found.append(best)
                p += best.n
        return found

    def take(self, match: Match, seq: int) -> bool:
        """Move the matched cells into `seq` at `match.at` (`seq` must end just before it). What
        is left of the chunk on either side stays banked when it is long enough to be found
        again. False when those cells are gone (the bank was emptied meanwhile)."""
        src = match.chunk.pos + match.offset
        inside = (c for c in self.chunks if c.pos <= src and src + match.n <= c.pos + len(c.tokens))
        chunk = next(inside, None)
        if chunk is None:
            return False
        self.kv.move_in(self.seq, src, match.n, seq, match.at)
        cut = src - chunk.pos
        rest = [  # the pieces keep the chunk's worth and flags
            replace(chunk, tokens=chunk.tokens[:cut]),
            replace(chunk, tokens=chunk.tokens[cut + match.n :], pos=src + match.n),
        ]
        at = self.chunks.index(chunk)  # the pieces keep the chunk's age
        kept = [piece for piece in rest if len(piece.tokens) >= self._shortest(piece)]
        self.chunks[at : at + 1] = kept
        for piece in rest:
            if piece not in kept and piece.tokens:
                self.kv.remove(self.seq, piece.pos, piece.pos + len(piece.tokens))
        _remember(self._returned, _pieces(chunk.tokens[cut : cut + match.n], self.min_chunk))
        return True

    def _shortest(self, chunk: Chunk) -> int:
        return self.short if chunk.expected else self.min_chunk

    def expect(self, texts: Sequence[Sequence[int]]) -> None:
        """Texts (tokenized on their own) that may leave the prompt and come back, such as the
        lorebook entries in it: a chunk made mostly of them is kept before other text when the
        bank is full. Without this an entry that lapsed while sitting at the top of the window looked
        like an old message gone for good, and was among the first to go."""
        for tokens in texts:
            _remember(self._expected, _grams(tokens, self.short), limit=16384)

    def drop_oldest(self) -> None:
        """The oldest chunk of the lowest worth, those the prompt being loaded wants last."""
        if self.chunks:
            self._drop(min(self.chunks, key=_rank))  # min keeps the first (oldest) of ties

    def _compact(self) -> None:
        """Move the chunks together from `base`, in order. Each new chunk takes the next
        position and chunks leave from anywhere, so the positions in use only grow; this bounds
        them without letting the kept text go (it used to empty the bank, every forty turns or so
        of Mira's lorebook chat)."""
        at = self.base
        for chunk in sorted(self.chunks, key=lambda c: c.pos):  # leftward moves, from the front
            n = len(chunk.tokens)
            if chunk.pos != at:
                self.kv.shift(self.seq, chunk.pos, chunk.pos + n, at - chunk.pos)
                chunk.pos = at
            at += n
        self._next = at

    def clear(self) -> None:
        if self.chunks:
            self.kv.remove(self.seq, -1, -1)
        self.chunks.clear()
        self._next = self.base

    def _drop(self, chunk: Chunk) -> None:
        self.kv.remove(self.seq, chunk.pos, chunk.pos + len(chunk.tokens))
        self.chunks.remove(chunk)


def _rank(chunk: Chunk) -> tuple[bool, int]:
    """Eviction order, lowest first."""
    return chunk.wanted, chunk.worth


def _remember(hashes: dict[int, None], new: Sequence[int], limit: int = 4096) -> None:
    """Add `new` to an insertion-ordered set, as its newest; the oldest go past `limit`."""
    for h in new:
        hashes.pop(h, None)
        hashes[h] = None
    while len(hashes) > limit:
        del hashes[next(iter(hashes))]


def _grams(tokens: Sequence[int], size: int) -> list[int]:
    """Hashes of every `size` tokens in a row of a text, at every offset."""
    return [hash(tuple(tokens[i : i + size])) for i in range(len(tokens) - size + 1)]


def _pieces(tokens: Sequence[int], size: int) -> list[int]:
    """Hashes of the aligned `size`-token pieces of a text that came back: a chunk that holds
    it again is known by any of them (searched at every offset), however its edges were cut."""
    return [hash(tuple(tokens[i : i + size])) for i in range(0, len(tokens) - size + 1, size)]
