"""The one module that reaches below `llama_cpp.Llama` into llama.cpp's C API.

Why it exists: `Llama.generate` reuses only the common prefix of the cached and the new prompt.
Once a chat fills the window and old messages leave it, or a lorebook entry fires near the top,
the prefix ends early and everything after it would be evaluated again (6.4 s for 1,550 tokens
on 2 cores). Here the engine keeps its own per-sequence token mirror and edits the KV cells:

- `plan_reuse` is llama-server's `--cache-reuse` walk: text removed from the prompt is
  forgiven (cells dropped with `llama_memory_seq_rm`, the rest slid back with
  `llama_memory_seq_add`), but text inserted ends the walk.
- `plan_align` goes further: it matches cached chunks anywhere later in the prompt, so inserted
  text (a lore entry that fires, an author's note that moves) costs its own tokens and nothing
  more. The cells after an insertion keep the attention they had, which is the same
  approximation context shift already makes for removed text.

llama.cpp only decodes at the end of a sequence (positions must continue from the last one), so
inserting in the middle "parks" the cells after the insertion point on a scratch sequence
(`llama_memory_seq_cp` only re-tags cells in a unified KV cache), decodes the new tokens, and
brings the parked cells back shifted past them.

Checked against llama-cpp-python 0.3.36 (llama.cpp with the `llama_memory_*` API and
`kv_unified`).

It is also the one module that calls the raw binding (`llama_cpp.llama_*` and its ctypes
structs; tests/engines/test_one_binding.py holds every other module to that): the sampler chain
(`SamplerChain`, `init_*`), logits rows, vocabulary queries, and the context parameters `Llama()`
cannot be asked for (`several_sequences`). Everything else talks to `llama_cpp.Llama`.
"""

from __future__ import annotations

import contextlib
import ctypes
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tavern.errors import EngineError

if TYPE_CHECKING:  # pragma: no cover - typing only; numpy is imported where it is used
    import numpy as np


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


@dataclass
class ReusePlan:
    """How to turn a cached token sequence into a prefix of the new prompt."""

    prefix: int
    """Tokens shared at the start: kept as they are."""
    moves: list[tuple[int, int, int]] = field(default_factory=list)
    """(cache position, prompt position, length) chunks kept, in order. From `plan_reuse` the
    chunks follow each other in the prompt; from `plan_align` there may be gaps between them:
    inserted text, evaluated in place."""

    @property
    def n_past(self) -> int:
        """Prompt tokens served from the cache."""
        return self.prefix + sum(n for _, _, n in self.moves)

    @property
    def shifted(self) -> int:
        """Of those, tokens whose cells moved to another position."""
        return sum(n for src, dst, n in self.moves if src != dst)

    @property
    def end(self) -> int:
        """Where the kept region ends in the prompt: the tail from here on is evaluated."""
        if not self.moves:
            return self.prefix
        _, dst, n = self.moves[-1]
        return dst + n

    def gaps(self) -> list[tuple[int, int]]:
        """Prompt spans before `end` that are not in the cache (inserted text), in order."""
        out = []
        at = self.prefix
        for _, dst, n in self.moves:
            if dst > at:
                out.append((at, dst))
            at = dst + n
        return out


def plan_reuse(cache: Sequence[int], prompt: Sequence[int], min_chunk: int) -> ReusePlan:
    """llama-server's cache-reuse walk: after the common prefix, skip cached tokens until a run
    of at least `min_chunk` tokens matches the prompt at the current position, keep that run, and
    go on. Handles text removed from the prompt (old messages, a lapsed lore entry); text
    inserted into the prompt ends the walk, and what follows is evaluated."""
    prefix = common_prefix(cache, prompt)
    plan = ReusePlan(prefix)
    if min_chunk <= 0:
        return plan
    head_c = head_p = prefix
    n_cache, n_prompt = len(cache), len(prompt)
    # The last prompt token is always evaluated again (we need its logits), so stop before it.
    while head_c < n_cache and head_p < n_prompt - 1:
        if cache[head_c] != prompt[head_p]:
            head_c += 1
            continue
        n = 1
        while head_c + n < n_cache and head_p + n < n_prompt - 1 and cache[head_c + n] == prompt[head_p + n]:
            n += 1
        if n >= min_chunk:
            plan.moves.append((head_c, head_p, n))
            head_c += n
            head_p += n
        else:
            head_c += 1
    return plan


GAP_COST = 8
"""What one inserted span costs beyond its tokens (one more decode call), in prompt tokens."""


def plan_align(cache: Sequence[int], prompt: Sequence[int], min_chunk: int, max_per_key: int = 8) -> ReusePlan:
    """The reuse plan that serves the most prompt tokens from the cache when text may be both
    removed and inserted: every maximal run of at least `min_chunk` tokens shared by the cache
    and the prompt is a candidate, and a chain of runs in the same order in both is chosen to
    cover the most tokens (each gap it leaves costs `GAP_COST` more). Shorter runs are kept
    where they sit right against a kept chunk (`_with_seams`). Linear in the prompt for
    ordinary text; repeated runs are capped at `max_per_key` occurrences each."""
    prefix = common_prefix(cache, prompt)
    plan = ReusePlan(prefix)
    limit = len(prompt) - 1  # the last prompt token is evaluated again for its logits
    if min_chunk <= 0 or prefix >= min(len(cache), limit):
        return plan
    chain = _chain(cache, prompt, prefix, limit, min_chunk, max_per_key)
    plan.moves = _with_seams(cache, prompt, prefix, chain, len(prompt) - min_chunk)
    return plan


def _chain(
    cache: Sequence[int], prompt: Sequence[int], prefix: int, limit: int, min_chunk: int, max_per_key: int
) -> list[tuple[int, int, int]]:
    """`plan_align`'s runs of at least `min_chunk` tokens, the best chain of them in order."""
    k = max(1, min(min_chunk, 16))
    index: dict[tuple[int, ...], list[int]] = {}
    for c in range(prefix, len(cache) - k + 1):
        where = index.setdefault(tuple(cache[c : c + k]), [])
        if len(where) < max_per_key:
            where.append(c)
    runs: list[tuple[int, int, int]] = []
    for p in range(prefix, limit - k + 1):
        hits = index.get(tuple(prompt[p : p + k]))
        if not hits:
            continue
        for c in hits:
            if c > prefix and p > prefix and cache[c - 1] == prompt[p - 1]:
                continue  # not where this run starts: it was found one step earlier
            n = k
            while c + n < len(cache) and p + n < limit and cache[c + n] == prompt[p + n]:
                n += 1
            if n >= min_chunk:
                runs.append((c, p, n))
    if not runs:
        return []
    if len(runs) > 400:  # pathological repetition: keep the longest runs
        runs = sorted(sorted(runs, key=lambda r: -r[2])[:400], key=lambda r: r[1])
    runs.sort(key=lambda r: (r[1], r[0]))
    # Longest chain: best[j] = most tokens served by a chain ending with run j (its start may be
    # trimmed to follow the previous run).
    best: list[int | None] = []
    back: list[tuple[int, int]] = []  # (previous run or -1, tokens trimmed from run j's start)
    for j, (cj, pj, nj) in enumerate(runs):
        trim0 = max(0, prefix - cj, prefix - pj)
        top = (nj - trim0 - (GAP_COST if pj + trim0 > prefix else 0), -1, trim0) if nj - trim0 >= min_chunk else None
        for i in range(j):
            ci, pi, ni = runs[i]
            served = best[i]
            if served is None or ci >= cj or pi >= pj:
                continue
            trim = max(0, ci + ni - cj, pi + ni - pj)
            if nj - trim < min_chunk:
                continue
            gap = GAP_COST if pj + trim > pi + ni else 0
            value = served + nj - trim - gap
            if top is None or value > top[0]:
                top = (value, i, trim)
        if top is None:
            best.append(None)
            back.append((-1, 0))
        else:
            best.append(top[0])
            back.append((top[1], top[2]))
    ends = {i: b for i, b in enumerate(best) if b is not None}
    last = max(ends, key=ends.__getitem__, default=None)
    if last is None or ends[last] <= 0:
        return []
    chain = []
    j = last
    while j != -1:
        c, p, n = runs[j]
        prev, trim = back[j]
        chain.append((c + trim, p + trim, n - trim))
        j = prev
    return chain[::-1]


SEAM_MIN = 8
"""Shortest run `plan_align` keeps when it sits right against a kept chunk in the prompt."""


def _with_seams(
    cache: Sequence[int], prompt: Sequence[int], prefix: int, chain: list[tuple[int, int, int]], newest: int
) -> list[tuple[int, int, int]]:
    """The chain plus short runs that continue a kept piece in the prompt, or lead into one, or
    (from MIDDLE_MIN tokens) sit between two inserted spans (`_middle_run`).

    An old message between a lore entry that lapsed and one that just fired is shorter than
    `min_chunk`, so the chain leaves it to be evaluated with the new entry. But where it
    continues the kept text before it (or leads into the kept text after it), keeping its cells
    is the approximation every removal already makes, not a coincidental match: the cells
    merely lose the removed text from their context. Runs are looked for only between the
    neighbouring kept pieces, in the cache as in the prompt, so the moves stay in order; and
    never in the prompt's newest tokens (from `newest` on), which the reply reads most closely:
    those keep cells only as part of a full-length chunk."""
    out: list[tuple[int, int, int]] = []
    at_c = at_p = prefix  # where the kept text so far ends, in the cache and in the prompt
    for c, p, n in [*chain, (len(cache), newest, 0)]:  # the last: the tail
        end = min(p, newest)
        while end - at_p >= SEAM_MIN:  # runs that continue the kept text
            run = _longest_run(cache, at_c, c, prompt, at_p, end, forward=True)
            if run is None:
                break
            out.append((run[0], at_p, run[1]))
            at_c, at_p = run[0] + run[1], at_p + run[1]
        back = None if not n or p > newest else _longest_run(cache, at_c, c, prompt, at_p, p, forward=False)
        lim_c, lim_p = (back[0], p - back[1]) if back else (c, end)
        while lim_p - at_p >= MIDDLE_MIN:  # runs with inserted text on both sides
            mid = _middle_run(cache, at_c, lim_c, prompt, at_p, lim_p)
            if mid is None:
                break
            out.append(mid)
            at_c, at_p = mid[0] + mid[2], mid[1] + mid[2]
        if back is not None:
            out.append((back[0], p - back[1], back[1]))
        if n:
            out.append((c, p, n))
            at_c, at_p = c + n, p + n
    return out


MIDDLE_MIN = 16
"""Shortest run `plan_align` keeps with inserted text on both sides of it in the prompt."""


def _middle_run(
    cache: Sequence[int], c0: int, c1: int, prompt: Sequence[int], p0: int, p1: int
) -> tuple[int, int, int] | None:
    """The longest run of at least MIDDLE_MIN tokens shared by cache[c0:c1] and prompt[p0:p1],
    as (cache start, prompt start, length); the first of equal ones.

    An old message between two blocks that moved (an @depth entry one message down, an entry
    that fired again back at its old place) touches neither kept piece, and is shorter than
    `min_chunk`. Found between the same kept neighbours in both, at least MIDDLE_MIN tokens
    long, it is that message, not a coincidence; keeping its cells is the approximation any
    kept text after an insertion makes. Bounded work, as `_longest_start`."""
    k = SEAM_MIN
    index: dict[tuple[int, ...], list[int]] = {}
    for c in range(c0, c1 - k + 1):
        where = index.setdefault(tuple(cache[c : c + k]), [])
        if len(where) < 8:
            where.append(c)
    best: tuple[int, int, int] | None = None
    budget = 20_000  # token comparisons
    for q in range(p0, p1 - k + 1):
        for c in index.get(tuple(prompt[q : q + k]), ()):
            if c > c0 and q > p0 and cache[c - 1] == prompt[q - 1]:
                continue  # inside a run found one step earlier
            m = k
            while c + m < c1 and q + m < p1 and cache[c + m] == prompt[q + m]:
                m += 1
            budget -= m
            if m >= MIDDLE_MIN and (best is None or m > best[2]):
                best = (c, q, m)
        if budget < 0:
            break
    return best


def _longest_run(
    cache: Sequence[int], c0: int, c1: int, prompt: Sequence[int], p0: int, p1: int, forward: bool
) -> tuple[int, int] | None:
    """The longest run of at least SEAM_MIN tokens of cache[c0:c1] that equals the start
    (forward) or the end (not forward) of prompt[p0:p1], as (cache start, length)."""
    if forward:
        return _longest_start(cache[c0:c1], prompt[p0:p1], c0)
    # The end of the prompt span is the start of both spans read backwards.
    run = _longest_start(cache[c0:c1][::-1], prompt[p0:p1][::-1], 0)
    return None if run is None else (c1 - run[0] - run[1], run[1])


def _longest_start(cache: Sequence[int], prompt: Sequence[int], base: int) -> tuple[int, int] | None:
    """The longest run of at least SEAM_MIN tokens of `cache` that equals the start of
    `prompt`, as (base + cache start, length); the first of equal ones. Bounded work:
    repetitive text gives up early rather than compare every pair."""
    best: tuple[int, int] | None = None
    if not prompt:
        return None
    budget = 20_000  # token comparisons
    first = prompt[0]
    for c in range(len(cache)):
        if cache[c] != first:
            continue
        m = 0
        while c + m < len(cache) and m < len(prompt) and cache[c + m] == prompt[m]:
            m += 1
        if m >= SEAM_MIN and (best is None or m > best[1]):
            best = (base + c, m)
        budget -= m
        if budget < 0:
            break
    return best


CUT_REACH = 4
"""How far `align_cuts` moves a cut, in tokens."""


def align_cuts(
    plan: ReusePlan, cache: Sequence[int], prompt: Sequence[int], clean: Callable[[int, int], bool]
) -> ReusePlan:
    """The plan with the edges of each replacement (text removed and other text inserted at
    one place) moved to where lines start (`clean(a, b)`: a cut between tokens a and b is one),
    by up to CUT_REACH tokens.

    One lore entry lapses where another fires again (at the top of the window, the block of
    notes whose entries came and went): the plan keeps the tokens the two share at their edges
    (`.` at the end of both, `The` or `Saltmere` at their start), so the lapsed entry goes to
    the bank without them, and they are evaluated again when it comes back. Cut at lines, the
    shared tokens cost nothing now either when the bank serves the entry that fires again (it
    holds them with it), and those cells were another entry's anyway. Done only when both edges
    reach a line start: not for a reply regenerated in other words. Text only removed or only
    inserted is left as it is: there the cells kept at its edges are the ones computed in the
    right context, and the same text on the other side would not be."""
    kept = [[0, 0, plan.prefix]] + [list(m) for m in plan.moves]
    for i in range(len(kept) - 1):
        c1, p1, n1 = kept[i]
        c2, p2, n2 = kept[i + 1]
        if c2 <= c1 + n1 or p2 <= p1 + n1:
            continue
        cuts = _replacement_cuts(cache, prompt, (c1, p1, n1), (c2, p2, n2), clean)
        if cuts is not None:
            kept[i][2] = n1 - cuts[0]
            kept[i + 1] = [c2 + cuts[1], p2 + cuts[1], n2 - cuts[1]]
    return ReusePlan(kept[0][2], [(c, p, n) for c, p, n in kept[1:] if n > 0])


def _replacement_cuts(
    cache: Sequence[int],
    prompt: Sequence[int],
    k1: tuple[int, int, int],
    k2: tuple[int, int, int],
    clean: Callable[[int, int], bool],
) -> tuple[int, int] | None:
    """(tokens to take off the end of the kept run before, off the start of the one after) so
    that removed and inserted text both begin and end at line starts; None if out of reach."""
    (c1, p1, n1), (c2, p2, n2) = k1, k2

    def clean_at(c: int, p: int) -> bool:
        return clean(cache[c - 1], cache[c]) and clean(prompt[p - 1], prompt[p])

    start = 0 if clean_at(c2, p2) else _first_cut(prompt, p2, n2 - 1, clean)
    end = 0 if not n1 or clean_at(c1 + n1, p1 + n1) else _first_cut(prompt, p1 + n1, -(n1 - 1), clean)
    return None if start is None or end is None else (end, start)


def _first_cut(tokens: Sequence[int], at: int, most: int, clean: Callable[[int, int], bool]) -> int | None:
    """How many tokens from `at` forward (`most` > 0) or back (`most` < 0) the nearest clean cut
    is, within CUT_REACH and |most|; None if there is none."""
    step = 1 if most > 0 else -1
    for d in range(1, min(CUT_REACH, abs(most)) + 1):
        x = at + step * d
        if clean(tokens[x - 1], tokens[x]):
            return d
    return None


class KVCache:
    """Edits the KV cells of one llama.cpp context that holds several sequences, keeping a token
    mirror per sequence (what each sequence's cells hold, position by position)."""

    def __init__(self, ctx: Any, scratch_seq: int):
        import llama_cpp  # deferred: importing the C library costs ~0.2 s

        self._lib = llama_cpp
        self._ctx = ctx
        self._mem = llama_cpp.llama_get_memory(ctx)
        self.scratch = scratch_seq
        self.can_shift = bool(self._mem) and bool(llama_cpp.llama_memory_can_shift(self._mem))
        self.mirrors: dict[int, list[int]] = {}

    def tokens(self, seq: int) -> list[int]:
        return self.mirrors.setdefault(seq, [])

    def truncate(self, seq: int, n: int) -> None:
        """Forget every cell of `seq` from position n on."""
        self._lib.llama_memory_seq_rm(self._mem, seq, n, -1)
        del self.tokens(seq)[n:]

    def clear(self, seq: int) -> None:
        self.truncate(seq, 0)

    def remove(self, seq: int, a: int, b: int) -> None:
        """Forget `seq`'s cells at positions [a, b) (-1: open end); the mirror is the caller's."""
        self._lib.llama_memory_seq_rm(self._mem, seq, a, b)

    def shift(self, seq: int, a: int, b: int, delta: int) -> None:
        """Move `seq`'s cells at positions [a, b) by `delta` positions (RoPE shifts their keys)."""
        self._lib.llama_memory_seq_add(self._mem, seq, a, b, delta)

    def move_out(self, seq: int, a: int, b: int, to_seq: int, dst: int) -> None:
        """Re-tag `seq`'s cells [a, b) as `to_seq`'s, shifted to start at `dst` (where `to_seq`
        has no cells) (the cell bank)."""
        lib = self._lib
        lib.llama_memory_seq_cp(self._mem, seq, to_seq, a, b)
        lib.llama_memory_seq_rm(self._mem, seq, a, b)
        if dst != a:
            lib.llama_memory_seq_add(self._mem, to_seq, a, b, dst - a)

    def move_in(self, from_seq: int, src: int, n: int, seq: int, dst: int) -> None:
        """The reverse: `from_seq`'s cells [src, src + n) become `seq`'s at [dst, dst + n)."""
        lib = self._lib
        if dst != src:
            lib.llama_memory_seq_add(self._mem, from_seq, src, src + n, dst - src)
        lib.llama_memory_seq_cp(self._mem, from_seq, seq, dst, dst + n)
        lib.llama_memory_seq_rm(self._mem, from_seq, dst, dst + n)

    def apply(
        self,
        plan: ReusePlan,
        seq: int,
        prompt: Sequence[int],
        drop: Callable[[int, int, list[int]], None] | None = None,
    ) -> list[tuple[int, int]]:
        """Rearrange `seq`'s cells as the plan says. Returns the gaps (prompt spans) still to be
        decoded in place with `decode_gap`, in order; after them the cache holds the prompt up
        to `plan.end` (or `plan.prefix` when the model cannot shift). Cells no chunk keeps go to
        `drop(a, b, tokens)` (the cell bank) when given, else they are removed."""
        old = self.tokens(seq)

        def discard(a: int, b: int) -> None:
            if b > a:
                if drop is not None:
                    drop(a, b, old[a:b])
                else:
                    self.remove(seq, a, b)

        if not plan.moves or not self.can_shift:
            if self.can_shift:
                discard(plan.prefix, len(old))
            self.truncate(seq, plan.prefix)
            return []
        add = self._lib.llama_memory_seq_add
        kept = [(0, plan.prefix)] + [(src, src + n) for src, _, n in plan.moves]
        # Drop every cell no chunk keeps, then slide the chunks into place: leftward ones first,
        # from the front, then rightward ones from the back, so no chunk lands on another.
        for (_, a_end), (b_start, _) in zip(kept, kept[1:] + [(len(old), 0)]):
            discard(a_end, b_start)
        self.remove(seq, len(old), -1)
        for src, dst, n in plan.moves:
            if dst < src:
                add(self._mem, seq, src, src + n, dst - src)
        for src, dst, n in reversed(plan.moves):
            if dst > src:
                add(self._mem, seq, src, src + n, dst - src)
        # The mirror holds the prompt where cells are; gaps are filled by decode_gap.
        self.mirrors[seq] = list(prompt[: plan.end])
        return plan.gaps()

    def park(self, seq: int, pos: int) -> None:
        """Move `seq`'s cells at `pos` and after to the scratch sequence, so that new tokens can
        be decoded at `pos` (llama.cpp decodes only past a sequence's last position)."""
        lib = self._lib
        lib.llama_memory_seq_rm(self._mem, self.scratch, -1, -1)
        lib.llama_memory_seq_cp(self._mem, seq, self.scratch, pos, -1)
        lib.llama_memory_seq_rm(self._mem, seq, pos, -1)

    def unpark(self, seq: int, pos: int, delta: int) -> None:
        """Bring parked cells back, `delta` positions further on (`delta` = tokens decoded)."""
        lib = self._lib
        if delta:
            lib.llama_memory_seq_add(self._mem, self.scratch, pos - delta, -1, delta)
        lib.llama_memory_seq_cp(self._mem, self.scratch, seq, pos, -1)
        lib.llama_memory_seq_rm(self._mem, self.scratch, -1, -1)

    def state_size(self, seq: int) -> int:
        return int(self._lib.llama_state_seq_get_size(self._ctx, seq))

    def save(self, seq: int) -> tuple[list[int], Any]:
        """(tokens, bytes) of a sequence's cells, to restore later with `restore`."""
        size = self.state_size(seq)
        buf = (ctypes.c_uint8 * size)()
        n = self._lib.llama_state_seq_get_data(self._ctx, buf, size, seq)
        if n != size:
            raise RuntimeError(f"llama.cpp saved {n} of {size} bytes of sequence {seq}")
        return list(self.tokens(seq)), buf

    def restore(self, seq: int, tokens: list[int], buf: Any) -> bool:
        self._lib.llama_memory_seq_rm(self._mem, seq, -1, -1)
        n = self._lib.llama_state_seq_set_data(self._ctx, buf, len(buf), seq)
        if n == 0:
            self.mirrors[seq] = []
            return False
        self.mirrors[seq] = list(tokens)
        return True


class DecodeError(RuntimeError):
    def __init__(self, code: int):
        self.code = code
        reason = {1: "no room left in the KV cache", 2: "aborted"}.get(code, f"llama_decode returned {code}")
        super().__init__(reason)


class BatchDecoder:
    """Decodes tokens of one sequence at given positions, `n_batch` at a time, with logits for
    the last token only (what the sampler reads)."""

    def __init__(self, ctx: Any, n_batch: int):
        import llama_cpp

        self._lib = llama_cpp
        self._ctx = ctx
        self.n_batch = n_batch
        self._batch = llama_cpp.llama_batch_init(n_batch, 0, 1)

    def decode(self, tokens: Sequence[int], seq: int, pos: int, should_stop: Any = None) -> None:
        b = self._batch
        for start in range(0, len(tokens), self.n_batch):
            if should_stop is not None and should_stop():
                raise DecodeError(2)
            part = tokens[start : start + self.n_batch]
            n = len(part)
            for i, tok in enumerate(part):
                b.token[i] = tok
                b.pos[i] = pos + start + i
                b.n_seq_id[i] = 1
                b.seq_id[i][0] = seq
                b.logits[i] = 0
            b.logits[n - 1] = 1
            b.n_tokens = n
            code = self._lib.llama_decode(self._ctx, b)
            if code != 0:
                raise DecodeError(code)

    def decode_each(self, token: int, places: Sequence[tuple[int, int]]) -> None:
        """One token into several sequences, (seq, pos) each, in one batch: CFG's two sequences
        advance for the price of one decode. Logits for every row (`llama_get_logits_ith(i)`)."""
        b = self._batch
        for i, (seq, pos) in enumerate(places):
            b.token[i] = token
            b.pos[i] = pos
            b.n_seq_id[i] = 1
            b.seq_id[i][0] = seq
            b.logits[i] = 1
        b.n_tokens = len(places)
        code = self._lib.llama_decode(self._ctx, b)
        if code != 0:
            raise DecodeError(code)

    def close(self) -> None:
        if self._batch is not None:
            self._lib.llama_batch_free(self._batch)
            self._batch = None


def token_piece(vocab: Any, token: int) -> bytes:
    """The bytes of one token, without llama-cpp-python's fixed 32-byte buffer (which pads with
    NULs in 0.3.36's `LlamaModel.token_to_piece`)."""
    import llama_cpp

    size = 64
    while True:
        buf = (ctypes.c_char * size)()
        n = llama_cpp.llama_token_to_piece(vocab, token, buf, size, 0, False)
        if n >= 0:
            return buf.raw[:n]
        size = -n


_log_callback = None


def silence_llama_logs() -> None:
    """llama.cpp logs to stderr, which would paint over a TUI; route it nowhere."""
    global _log_callback
    import llama_cpp

    if _log_callback is None:
        _log_callback = llama_cpp.llama_log_callback(lambda level, text, data: None)
        llama_cpp.llama_log_set(_log_callback, ctypes.c_void_p(0))


class AbortFlag:
    """Lets a cancel request interrupt llama_decode mid-batch (prompt processing)."""

    def __init__(self, llama: Any):
        import llama_cpp

        self.should_abort = False
        self._cb = llama_cpp.ggml_abort_callback(lambda _data: self.should_abort)
        llama_cpp.llama_set_abort_callback(llama._ctx.ctx, self._cb, ctypes.c_void_p(0))


# -- the context --------------------------------------------------------------------------------


@contextlib.contextmanager
def several_sequences(n_seq: int) -> Iterator[None]:
    """Within the block, contexts get `n_seq` sequences in one unified KV cache.

    `Llama()` in 0.3.36 offers no way to ask for that: it builds its context parameters from
    `llama_context_default_params` and sets `n_seq_max`/`kv_unified` only for `embedding=True`
    (which would also turn the context into an embedding one), and its `**kwargs` are ignored.
    So the defaults are adjusted for the call, process-wide, and always restored in `finally`.
    Callers hold no other `Llama()` construction meanwhile (the engine loads under its lock)."""
    import llama_cpp.llama_cpp as module  # the module `Llama.__init__` reads the defaults from

    original = module.llama_context_default_params

    def params() -> Any:
        p = original()
        p.n_seq_max = n_seq
        p.kv_unified = True
        return p

    module.llama_context_default_params = params
    try:
        yield
    finally:
        module.llama_context_default_params = original


def gpu_offload_supported() -> bool:
    """Whether this llama.cpp build has a GPU backend. Raises if the library cannot load."""
    import llama_cpp

    return bool(llama_cpp.llama_supports_gpu_offload())


def logits_row(ctx: Any, i: int, n_vocab: int) -> np.ndarray | None:
    """Row i of the last decode's logits (-1: the last row) as a numpy view of llama.cpp's
    buffer, not a copy: the next decode overwrites it. None when that row has no logits."""
    import llama_cpp
    import numpy as np

    ptr = llama_cpp.llama_get_logits_ith(ctx, i)
    if not ptr:
        return None
    view: np.ndarray = np.ctypeslib.as_array(ptr, shape=(n_vocab,))
    return view


# -- the vocabulary -----------------------------------------------------------------------------


def vocab_of(llama: Any) -> Any:
    """The `llama_vocab` pointer of a loaded `llama_cpp.Llama` (what token queries take)."""
    import llama_cpp

    return llama_cpp.llama_model_get_vocab(llama.model)


def end_tokens(vocab: Any) -> tuple[int, int]:
    """(end-of-sequence, end-of-turn) token ids; -1 where the vocabulary has none."""
    import llama_cpp

    return int(llama_cpp.llama_vocab_eos(vocab)), int(llama_cpp.llama_vocab_eot(vocab))


def is_eog(vocab: Any, token: int) -> bool:
    """Whether `token` ends generation (EOS, EOT, <|im_end|> and the like)."""
    import llama_cpp

    return bool(llama_cpp.llama_vocab_is_eog(vocab, token))


def is_control(vocab: Any, token: int) -> bool:
    """Whether `token` is a control token (<|im_start|>): where a message starts."""
    import llama_cpp

    return bool(llama_cpp.llama_vocab_is_control(vocab, token))


# -- the sampler chain --------------------------------------------------------------------------
# The `init_*` functions return a new `llama_sampler` pointer (NULL when llama.cpp refuses the
# parameters); `SamplerChain.add` takes ownership of it. Seeds are llama.cpp's uint32.


def token_data_size() -> int:
    """Bytes of one `llama_token_data` record (id, logit, p): the layout of candidate buffers."""
    import llama_cpp

    return ctypes.sizeof(llama_cpp.llama_token_data)


def init_logit_bias(n_vocab: int, bias: dict[int, float]) -> Any:
    """Adds `bias[token]` to each token's logit (-inf forbids it); llama.cpp copies the entries."""
    import llama_cpp

    entries = (llama_cpp.llama_logit_bias * len(bias))()
    for i, (token, value) in enumerate(bias.items()):
        entries[i] = llama_cpp.llama_logit_bias(token, value)
    return llama_cpp.llama_sampler_init_logit_bias(n_vocab, len(bias), entries)


def init_dry(
    vocab: Any, multiplier: float, base: float, allowed_length: int, last_n: int, breakers: Sequence[bytes]
) -> Any:
    """DRY over the last `last_n` tokens; `breakers` are UTF-8 strings (llama.cpp copies them)."""
    import llama_cpp

    array = (ctypes.c_char_p * max(len(breakers), 1))(*breakers)  # never a zero-length array
    n = len(breakers)
    return llama_cpp.llama_sampler_init_dry(vocab, multiplier, base, allowed_length, last_n, array, n)


def init_penalties(n_vocab: int, last_n: int, repeat: float, frequency: float, presence: float) -> Any:
    import llama_cpp

    return llama_cpp.llama_sampler_init_penalties(n_vocab, last_n, repeat, frequency, presence)


def init_greedy() -> Any:
    import llama_cpp

    return llama_cpp.llama_sampler_init_greedy()


def init_dist(seed: int) -> Any:
    """The final seeded draw from the distribution left."""
    import llama_cpp

    return llama_cpp.llama_sampler_init_dist(seed)


def init_mirostat(n_vocab: int, seed: int, tau: float, eta: float, m: int) -> Any:
    import llama_cpp

    return llama_cpp.llama_sampler_init_mirostat(n_vocab, seed, tau, eta, m)


def init_mirostat_v2(seed: int, tau: float, eta: float) -> Any:
    import llama_cpp

    return llama_cpp.llama_sampler_init_mirostat_v2(seed, tau, eta)


def init_xtc(probability: float, threshold: float, min_keep: int, seed: int) -> Any:
    import llama_cpp

    return llama_cpp.llama_sampler_init_xtc(probability, threshold, min_keep, seed)


def init_top_n_sigma(n: float) -> Any:
    import llama_cpp

    return llama_cpp.llama_sampler_init_top_n_sigma(n)


def init_top_k(k: int) -> Any:
    import llama_cpp

    return llama_cpp.llama_sampler_init_top_k(k)


def init_typical(p: float, min_keep: int) -> Any:
    import llama_cpp

    return llama_cpp.llama_sampler_init_typical(p, min_keep)


def init_top_p(p: float, min_keep: int) -> Any:
    import llama_cpp

    return llama_cpp.llama_sampler_init_top_p(p, min_keep)


def init_min_p(p: float, min_keep: int) -> Any:
    import llama_cpp

    return llama_cpp.llama_sampler_init_min_p(p, min_keep)


def init_temp(t: float) -> Any:
    import llama_cpp

    return llama_cpp.llama_sampler_init_temp(t)


def init_temp_ext(t: float, delta: float, exponent: float) -> Any:
    """Dynamic temperature: T in [t - delta, t + delta] by the distribution's entropy."""
    import llama_cpp

    return llama_cpp.llama_sampler_init_temp_ext(t, delta, exponent)


def records(address: int | None, n: int, dtype: Any) -> Any:
    """A writable numpy view of `n` records of `dtype` (laid out like `llama_token_data`) at a C
    address: the candidates a sampler left, or those a Python step edits in place."""
    import numpy as np

    if not address or n <= 0:
        return np.zeros(0, dtype=dtype)
    return np.frombuffer((ctypes.c_char * (n * dtype.itemsize)).from_address(address), dtype=dtype)


ApplyFn = Callable[[int | None, int], None]
"""A Python sampler step: (address of the candidate records, how many) -> edits them in place."""


class SamplerChain:
    """Owns one llama.cpp sampler chain and the ctypes objects it points at, in the manner of
    llama-cpp-python's `_internals.LlamaSampler`: `close()` frees it (safe twice, also on GC)."""

    def __init__(self) -> None:
        import llama_cpp  # deferred: importing the C library costs ~0.2 s

        self._lib = llama_cpp
        self._keep_alive: list[Any] = []  # ctypes objects the C chain points at
        self._ptr: Any = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
        if not self._ptr:
            raise EngineError("llama.cpp could not create a sampler chain")

    def add(self, name: str, sampler: Any) -> None:
        """Append a sampler from an `init_*` function (or `custom`); the chain then owns it."""
        if not sampler:
            raise EngineError(f"llama.cpp could not create the {name} sampler")
        self._lib.llama_sampler_chain_add(self._ptr, sampler)

    def custom(self, name: bytes, apply: ApplyFn, on_error: Callable[[BaseException], None]) -> Any:
        """A new sampler whose apply() is Python, for `add`. An exception cannot cross the C
        frames, so it goes to `on_error` (the caller raises it after the chain ran).

        Built with `llama_sampler_init`, so the chain owns and frees the sampler struct; the
        interface, its callbacks and `name` (whose buffer name() hands to C) live as long as
        this chain. (llama-cpp-python's own CustomSampler leaves name() NULL, which llama.cpp
        would call.)"""
        lib = self._lib

        def trampoline(_smpl: Any, cur_p: Any) -> None:
            try:
                arr = cur_p.contents
                apply(ctypes.cast(arr.data, ctypes.c_void_p).value, int(arr.size))
            except BaseException as err:  # noqa: BLE001 - it cannot cross the C frames: keep it
                on_error(err)

        def name_fn(_smpl: Any) -> bytes:
            return name

        iface = lib.llama_sampler_i()
        iface.name = lib.llama_sampler_i_name(name_fn)
        iface.apply = lib.llama_sampler_i_apply(trampoline)
        # accept/reset/clone/free and the backend hooks stay NULL: a stateless step.
        self._keep_alive += [iface, iface.name, iface.apply, trampoline, name_fn, name]
        return lib.llama_sampler_init(ctypes.pointer(iface), None)

    def accept(self, token: int) -> None:
        """Record a token that entered the context (penalties, DRY and mirostat see it)."""
        self._lib.llama_sampler_accept(self._ptr, int(token))

    def apply(self, data: int, n: int, steps: int | None = None) -> tuple[int, int | None, int]:
        """Run the chain, or only its first `steps` samplers, over `n` unsorted `llama_token_data`
        records at address `data`. Returns (selected index or -1, records address, count), read
        back from the array struct: samplers reorder the records, shrink the count and (XTC)
        move the data pointer."""
        lib = self._lib
        arr = lib.llama_token_data_array(
            data=ctypes.cast(data, lib.llama_token_data_p), size=n, selected=-1, sorted=False
        )
        if steps is None:
            lib.llama_sampler_apply(self._ptr, ctypes.byref(arr))
        else:
            for i in range(steps):
                lib.llama_sampler_apply(lib.llama_sampler_chain_get(self._ptr, i), ctypes.byref(arr))
        return int(arr.selected), ctypes.cast(arr.data, ctypes.c_void_p).value, int(arr.size)

    def close(self) -> None:
        ptr, self._ptr = getattr(self, "_ptr", None), None
        if ptr:
            self._lib.llama_sampler_free(ptr)
        self._keep_alive = []

    def __del__(self) -> None:
        # At interpreter shutdown llama_cpp may already be gone.
        with contextlib.suppress(Exception):
            self.close()
