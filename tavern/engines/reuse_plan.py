"""Plans for reusing a sequence's cached KV cells when the prompt changes: pure token arithmetic.

Why it exists: `Llama.generate` reuses only the common prefix of the cached and the new prompt.
Once a chat fills the window and old messages leave it, or a lorebook entry fires near the top,
the prefix ends early and everything after it would be evaluated again (6.4 s for 1,550 tokens
on 2 cores). The engine keeps its own per-sequence token mirror, and these functions say which
cached cells serve which prompt positions:

- `plan_reuse` is llama-server's `--cache-reuse` walk: text removed from the prompt is
  forgiven (its cells dropped, the rest slid back), but text inserted ends the walk.
- `plan_align` goes further: it matches cached chunks anywhere later in the prompt, so inserted
  text (a lore entry that fires, an author's note that moves) costs its own tokens and nothing
  more. The cells after an insertion keep the attention they had, which is the same
  approximation context shift already makes for removed text.
- `align_cuts` moves the edges of a replacement to line starts.

Who calls it: `local.py` plans each turn, `prompt_cache.py` ranks saved states by their common
prefix. Carrying a plan out on the cells is `lowlevel.context.KVCache.apply`'s job; nothing here touches
llama.cpp.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """How many tokens `a` and `b` share at their start."""
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
