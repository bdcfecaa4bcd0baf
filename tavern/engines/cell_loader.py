"""Bringing a sequence's KV cells to hold a prompt, evaluating only what the cache lacks.

The embedded engine's second step of a turn (tavern/engines/local.py builds one `CellLoader` per
loaded model): pick the cheapest starting state for the sequence, the live cells or a saved one
(`prompt_cache`); rearrange the cells as a `reuse_plan` says (`lowlevel.context.KVCache.apply`), the
cells that leave going to the bank of removed text (`cell_bank`); then decode the inserted text
in place and the tail at the end, serving from the bank what it holds. When the KV cache is
full, the side sequences, which can be rebuilt, give up their cells for the chat.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

from tavern.engines.base import SEQ_BACKGROUND, SEQ_CFG, SEQ_CHAT, TurnStats
from tavern.engines.cell_bank import CellBank, Match
from tavern.engines.lowlevel.context import BatchDecoder, DecodeError, KVCache
from tavern.engines.lowlevel.model import is_control, token_piece
from tavern.engines.prompt_cache import PromptStateCache, SavedState
from tavern.engines.reuse_plan import ReusePlan, align_cuts, common_prefix, plan_align, plan_reuse

if TYPE_CHECKING:  # pragma: no cover - typing only
    from tavern.engines.lowlevel.model import Vocab
    from tavern.engines.state_disk import DiskState

RESTORE_MARGIN = 64
"""A saved state must save this many more tokens than the live one to be worth restoring."""
FIRST_BATCH = 32
"""With a progress callback, a span's first batch is this short: the first figure of a long
prompt (tokens per second) then comes after ~32 tokens instead of n_batch (512 tokens of a 7B
model on a CPU take half a minute)."""

Progress = Callable[[int], None]
"""Told `n` more prompt tokens were decoded (0: decoding starts)."""


class CellLoader:
    """Loads prompts into the sequences of one loaded model's KV cache."""

    def __init__(
        self,
        kv: KVCache,
        decoder: BatchDecoder,
        vocab: Vocab,
        states: PromptStateCache,
        bank: CellBank | None,
        *,
        cache_reuse: int,
        insert_reuse: bool,
        n_batch: int,
    ) -> None:
        self.kv = kv
        self.decoder = decoder
        self.vocab = vocab
        self.states = states
        """Saved sequence states in host memory (the engine's; it clears them on unload)."""
        self.bank = bank
        """The bank of text that left a prompt; None when off or the model cannot shift."""
        self.cache_reuse = cache_reuse
        """Shortest cached chunk kept after the common prefix; 0: the prefix only."""
        self.insert_reuse = insert_reuse
        """Reuse cached text after an insertion too (`plan_align`); False: llama-server's walk."""
        self.n_batch = n_batch
        self._kinds: dict[int, tuple[bool, bool]] = {}
        """Per token: (its text ends a line, it is a control token such as <|im_end|>)."""

    def _plan(self, cached: list[int], tokens: list[int]) -> ReusePlan:
        kv = self.kv
        if self.cache_reuse <= 0 or not kv.can_shift:
            return ReusePlan(common_prefix(cached, tokens))
        if self.insert_reuse:
            return align_cuts(plan_align(cached, tokens, self.cache_reuse), cached, tokens, self._clean_cut)
        return plan_reuse(cached, tokens, self.cache_reuse)

    def _clean_cut(self, before: int, after: int) -> bool:
        """A cut between these tokens is where a line or a message starts."""
        return self._kind(before)[0] or self._kind(after)[1]

    def _kind(self, token: int) -> tuple[bool, bool]:
        if (kind := self._kinds.get(token)) is None:
            ends_line = token_piece(self.vocab, token).endswith(b"\n")
            kind = self._kinds[token] = (ends_line, is_control(self.vocab, token))
        return kind

    def _prepare(self, seq: int, tokens: list[int], stats: TurnStats) -> tuple[ReusePlan, bool]:
        """Pick the cheapest starting state for `seq` (live or saved), saving the live one
        when most of it is about to be thrown away. Also says whether the plan lets most cells
        go and a saved state holds them (the user opened another chat): the bank then keeps
        only what this prompt wants of them, so that they do not push out text no state holds
        (an entry that lapsed in the chat left behind)."""
        kv = self.kv
        live = kv.tokens(seq)
        plan = self._plan(live, tokens)
        bank = self.bank_for(seq)
        bank = bank if bank is not None and bank.chunks else None

        def served(p: ReusePlan) -> int:
            """Prompt tokens the plan serves without evaluating them: its kept cells, and what the
            bank holds of the text it inserts (a saved state that keeps more cells may still
            cost more: the entries it keeps in place would have come back from the bank)."""
            if bank is None:
                return p.n_past
            return p.n_past + sum(m.n for m in bank.find(tokens, self._to_serve(tokens, p.gaps(), p.end)))

        candidates = self.states.candidates(tokens)
        top = served(plan) if candidates else plan.n_past  # no bank lookup without a rival
        scored = [(served(alt), alt, c) for c in candidates for alt in [self._plan(c.tokens, tokens)]]
        best, from_disk = self._pick_saved(scored, top)
        lost = len(live) - plan.n_past
        if (best is not None or lost >= max(256, len(live) // 4)) and len(live) >= 256:
            if not self.states.holds(live):
                with contextlib.suppress(RuntimeError, MemoryError):
                    self.states.add(*kv.save(seq))
        if best is not None:
            alt, state = best
            if self.bank_for(seq) is not None and self.states.holds(live):
                self._bank_wanted(seq, tokens, alt)
            restored = kv.restore(seq, state.tokens, state.data)
            if not restored and self.bank is not None and self.bank.chunks:
                self.bank.clear()  # its cells may be the room the state needs
                restored = kv.restore(seq, state.tokens, state.data)
            if restored:
                self.states.take(state)
                stats.restored_state = state.label
                stats.restored_from_disk = from_disk
                plan = alt
            else:
                plan = self._plan(kv.tokens(seq), tokens)
        # Another chat's turn: most cells go, and a saved state holds them (the live one just
        # saved, or the one restored). Not the window sliding in this chat: the entries that
        # lapse there come back piece by piece, which only the bank can serve.
        cells = kv.tokens(seq)
        return plan, plan.n_past < len(cells) // 2 and self.states.holds(cells)

    def _pick_saved(
        self, scored: list[tuple[int, ReusePlan, SavedState | DiskState]], top: int
    ) -> tuple[tuple[ReusePlan, SavedState] | None, bool]:
        """The saved state worth restoring, with its plan, and whether it was read from disk:
        the first that serves RESTORE_MARGIN more tokens than the live cells, unless a later one
        beats it by as much again. A file that turns out damaged gives way to the next best."""
        skip: list[SavedState | DiskState] = []
        while True:
            best: tuple[ReusePlan, SavedState | DiskState] | None = None
            bar = top
            for value, alt, candidate in scored:
                if value > bar + RESTORE_MARGIN and candidate not in skip:
                    best, bar = (alt, candidate), value
            if best is None:
                return None, False
            alt, candidate = best
            if (fetched := self.states.fetch(candidate)) is not None:
                return (alt, fetched), fetched is not candidate
            skip.append(candidate)

    def bank_for(self, seq: int) -> CellBank | None:
        """The bank, for the sequences whose text may come back: not a background job's (a
        summary's prompt never comes back)."""
        return None if seq == SEQ_BACKGROUND else self.bank

    def _bank_wanted(self, seq: int, tokens: list[int], plan: ReusePlan) -> None:
        """The live cells are about to be replaced by a saved state's, and a saved state holds
        them too; but text that `tokens` inserts into the restored cells may be among them (a
        lore entry that fired in the chat the user leaves and lapsed in the one they come back
        to: both characters share the world's book). Those parts go to the bank first."""
        bank, kv = self.bank, self.kv
        assert bank is not None
        bank.want(tokens, self._to_serve(tokens, plan.gaps(), plan.end))
        live = kv.tokens(seq)
        bank.put(seq, 0, len(live), live, wanted_only=True)
        kv.truncate(seq, 0)

    def load(
        self, seq: int, tokens: list[int], cancel: threading.Event, stats: TurnStats, *, progress: Progress | None = None
    ) -> None:
        """Bring `seq`'s cells to hold `tokens`, evaluating only what the cache lacks; fills the
        cache fields of `stats`. Raises DecodeError when cancelled midway."""
        kv = self.kv
        plan, spared = self._prepare(seq, tokens, stats)
        bank = self.bank_for(seq)
        if bank is not None:
            bank.want(tokens, self._to_serve(tokens, plan.gaps(), plan.end))

        def drop(a: int, b: int, t: list[int]) -> None:
            assert bank is not None
            bank.put(seq, a, b, t, top=a == plan.prefix, wanted_only=spared)

        gaps = kv.apply(plan, seq, tokens, drop=None if bank is None else drop)
        n_past = len(kv.tokens(seq))
        if n_past >= len(tokens):  # fully cached: evaluate the last token again for its logits
            n_past = len(tokens) - 1
            kv.truncate(seq, n_past)
        spans = self._to_serve(tokens, gaps, n_past)
        found = bank.find(tokens, spans) if bank else []
        inserted = sum(b - a for a, b in gaps)
        stats.banked_tokens = sum(m.n for m in found)
        stats.cached_tokens = n_past - inserted + stats.banked_tokens
        stats.shifted_tokens = plan.shifted if kv.can_shift and plan.moves else 0
        stats.evaluated_tokens = len(tokens) - stats.cached_tokens
        for a, b in gaps:
            self._decode_gap(seq, tokens, a, b, cancel, [m for m in found if a <= m.at < b], progress)
        self._decode_tail(seq, tokens, cancel, [m for m in found if m.at >= n_past], progress)

    def _to_serve(self, tokens: list[int], gaps: list[tuple[int, int]], tail: int) -> list[tuple[int, int]]:
        """The spans of the prompt the bank may serve: the inserted text and the tail from `tail`,
        except near the end: the newest tokens, which the reply reads most closely, are always
        evaluated in their context."""
        end = len(tokens) - max(1, self.cache_reuse)
        return [(a, min(b, end)) for a, b in [*gaps, (tail, len(tokens))] if min(b, end) > a]

    def decode_at(self, seq: int, part: list[int], pos: int) -> None:
        """Decode tokens at the end of `seq`; when the KV cache is full, the side sequences
        (which can be rebuilt) make room for the chat."""
        kv = self.kv
        self._decode_with_room(part, seq, pos)
        kv.tokens(seq).extend(part)

    def _decode_with_room(self, part: list[int], seq: int, pos: int) -> None:
        """Decode `part` at `seq`'s `pos`, making room when the KV cache is full (`_give_way`)."""
        self._with_room(lambda: self.decoder.decode(part, seq, pos), (seq,), len(part))

    def decode_pair(self, token: int, seq: int, other: int) -> None:
        """One token at the end of two sequences in one batch (a guided reply: the chat and its
        negative prompt), making room as `_decode_with_room` does; neither gives way."""
        kv = self.kv
        places = [(seq, len(kv.tokens(seq))), (other, len(kv.tokens(other)))]
        self._with_room(lambda: self.decoder.decode_each(token, places), (seq, other), 2)
        kv.tokens(seq).append(token)
        kv.tokens(other).append(token)

    guiding = False
    """A guided reply is under way (the engine sets it once the negative prompt is in): SEQ_CFG's
    cells are read beside the chat's, so they never give way for the chat's."""

    def _with_room(self, decode: Callable[[], None], seqs: Sequence[int], n: int) -> None:
        """Run `decode` (of `n` tokens into `seqs`); while llama.cpp finds no room for it, what
        can be rebuilt gives up cells, one step at a time (`_give_way`). Raises KVCacheFull once
        nothing is left to give."""
        for _ in self._give_way(seqs):
            try:
                decode()
                return
            except DecodeError as err:
                if err.code != 1:
                    raise
        raise KVCacheFull(n, seqs, self._holders())

    def _give_way(self, seqs: Sequence[int]) -> Iterator[None]:
        """Yields once before anything gives way, then after each step. Cells go in this order,
        the cheapest to lose first: the bank's chunks (only ever a cache; least likely to come
        back first), a background job's cells (its prompt never comes back), then the negative
        prompt's (saved to host memory first, for its next turn) unless it is decoding or
        guiding this reply. Never the chat's. Enough by construction: the cache holds n_ctx + side
        cells, the chat's window is n_ctx and each side sequence's the side cells, so the chat
        and any one side sequence fit together once the bank and the other have given way."""
        yield
        bank = self.bank
        while bank is not None and bank.chunks:
            bank.drop_oldest()
            yield
        keep = {*seqs, SEQ_CFG} if self.guiding and SEQ_CHAT in seqs else set(seqs)
        for side in (SEQ_BACKGROUND, SEQ_CFG):
            if side not in keep and self.kv.tokens(side):
                self._drop_side(side)
                yield

    def _drop_side(self, side: int) -> None:
        """Free a side sequence's cells; the negative prompt's state goes to host memory first
        (restoring it costs a copy; evaluating it again, the whole negative prompt)."""
        kv = self.kv
        cells = kv.tokens(side)
        if side == SEQ_CFG and len(cells) >= 256 and not self.states.holds(cells):
            with contextlib.suppress(RuntimeError, MemoryError):
                self.states.add(*kv.save(side))
        kv.clear(side)

    def _holders(self) -> dict[str, int]:
        """Who holds the cells, for KVCacheFull's message."""
        kv, bank = self.kv, self.bank
        held = {name: len(kv.tokens(s)) for name, s in SEQ_NAMES.items()}
        held["bank"] = bank.cells if bank is not None else 0
        return held

    def _decode_tail(
        self, seq: int, tokens: list[int], cancel: threading.Event, banked: Sequence[Match] = (),
        progress: Progress | None = None,
    ) -> None:
        kv = self.kv
        start = len(kv.tokens(seq))
        for a, b, match in self._pieces(start, len(tokens), banked):
            if match is not None:
                if self._take(match, seq):
                    kv.tokens(seq).extend(tokens[a:b])
                    continue
            for i, j in self._batches(a, b, progress):
                if cancel.is_set():
                    return
                try:
                    self.decode_at(seq, tokens[i:j], i)
                except DecodeError:
                    kv.truncate(seq, i)  # an aborted batch leaves no cells behind
                    raise
                if progress is not None:
                    progress(j - i)

    def _decode_gap(
        self, seq: int, tokens: list[int], a: int, b: int, cancel: threading.Event, banked: Sequence[Match] = (),
        progress: Progress | None = None,
    ) -> None:
        """Decode inserted text at positions a..b while the cells after it wait on the scratch
        sequence (they are already at their final positions)."""
        kv = self.kv
        kept = kv.tokens(seq)[:]  # the mirror already spans the gap
        kv.park(seq, a)
        ok = False
        try:
            for x, y, match in self._pieces(a, b, banked):
                if match is not None and self._take(match, seq):
                    continue
                for i, j in self._batches(x, y, progress):
                    if cancel.is_set():
                        raise DecodeError(2)
                    self._decode_with_room(tokens[i:j], seq, i)
                    if progress is not None:
                        progress(j - i)
            ok = True
        finally:
            kv.unpark(seq, a, 0)
            if ok:
                kv.mirrors[seq] = kept
            else:
                kv.truncate(seq, a)

    def _batches(self, a: int, b: int, progress: Progress | None) -> Iterator[tuple[int, int]]:
        """[a, b) in decode batches of n_batch tokens; with `progress`, the first one short
        (FIRST_BATCH), and `progress(0)` before it."""
        start = a
        if progress is not None and b > a:
            progress(0)
            start = min(b, a + min(FIRST_BATCH, self.n_batch))
            yield a, start
        for i in range(start, b, self.n_batch):
            yield i, min(b, i + self.n_batch)

    @staticmethod
    def _pieces(a: int, b: int, banked: Sequence[Match]) -> Iterator[tuple[int, int, Match | None]]:
        """[a, b) cut into spans to decode (None) and spans the bank serves, in order."""
        at = a
        for m in sorted(banked, key=lambda m: m.at):
            if m.at > at:
                yield at, m.at, None
            yield m.at, m.at + m.n, m
            at = m.at + m.n
        if b > at:
            yield at, b, None

    def _take(self, match: Match, seq: int) -> bool:
        bank = self.bank
        return bank is not None and bank.take(match, seq)


SEQ_NAMES = {"chat": SEQ_CHAT, "negative prompt": SEQ_CFG, "background": SEQ_BACKGROUND}


class KVCacheFull(DecodeError):
    """No room in the KV cache even after everything that can be rebuilt gave its cells up
    (`CellLoader._give_way`): the cells are held by sequences the decode needs. A reply that
    meets it stops (`LocalEngine._advance`); a prompt fails with this line."""

    def __init__(self, n: int, seqs: Sequence[int], held: dict[str, int]):
        super().__init__(1)
        names = {s: name for name, s in SEQ_NAMES.items()}
        into = " and ".join(names.get(s, f"sequence {s}") for s in seqs)
        cells = ", ".join(f"{name} {count}" for name, count in held.items())
        self.args = (f"no room in the KV cache for {n} more tokens of the {into} (cells held: {cells})",)
