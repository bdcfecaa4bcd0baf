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
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from tavern.engines.base import SEQ_BACKGROUND, SEQ_CFG, TurnStats
from tavern.engines.cell_bank import CellBank, Match
from tavern.engines.lowlevel.context import BatchDecoder, DecodeError, KVCache
from tavern.engines.lowlevel.model import is_control, token_piece
from tavern.engines.prompt_cache import PromptStateCache, SavedState
from tavern.engines.reuse_plan import ReusePlan, align_cuts, common_prefix, plan_align, plan_reuse

if TYPE_CHECKING:  # pragma: no cover - typing only
    from tavern.engines.lowlevel.model import Vocab

RESTORE_MARGIN = 64
"""A saved state must save this many more tokens than the live one to be worth restoring."""


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

        best: tuple[ReusePlan, SavedState] | None = None
        candidates = self.states.candidates(tokens)
        top = served(plan) if candidates else plan.n_past  # no bank lookup without a rival
        for state in candidates:
            alt = self._plan(state.tokens, tokens)
            if (value := served(alt)) > top + RESTORE_MARGIN:
                best, top = (alt, state), value
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
                plan = alt
            else:
                plan = self._plan(kv.tokens(seq), tokens)
        # Another chat's turn: most cells go, and a saved state holds them (the live one just
        # saved, or the one restored). Not the window sliding in this chat: the entries that
        # lapse there come back piece by piece, which only the bank can serve.
        cells = kv.tokens(seq)
        return plan, plan.n_past < len(cells) // 2 and self.states.holds(cells)

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

    def load(self, seq: int, tokens: list[int], cancel: threading.Event, stats: TurnStats) -> None:
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
            self._decode_gap(seq, tokens, a, b, cancel, [m for m in found if a <= m.at < b])
        self._decode_tail(seq, tokens, cancel, [m for m in found if m.at >= n_past])

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
        """When the KV cache is full, the other side sequences (which can be rebuilt) give up
        their cells: the chat first, then CFG, then a background job."""
        kv, decoder = self.kv, self.decoder
        try:
            decoder.decode(part, seq, pos)
        except DecodeError as err:
            bank = self.bank
            if err.code == 1 and bank is not None and bank.chunks:
                # Only ever a cache: its cells go first, least likely to come back first.
                while bank.chunks:
                    bank.drop_oldest()
                    try:
                        decoder.decode(part, seq, pos)
                        return
                    except DecodeError as again:
                        if again.code != 1:
                            raise
            others = [s for s in (SEQ_BACKGROUND, SEQ_CFG) if s != seq and kv.tokens(s)]
            if err.code != 1 or not others or seq == SEQ_BACKGROUND:
                raise
            for i, side in enumerate(others):
                kv.clear(side)
                try:
                    decoder.decode(part, seq, pos)
                    return
                except DecodeError as again:
                    if again.code != 1 or i == len(others) - 1:
                        raise

    def _decode_tail(self, seq: int, tokens: list[int], cancel: threading.Event, banked: Sequence[Match] = ()) -> None:
        kv = self.kv
        start = len(kv.tokens(seq))
        for a, b, match in self._pieces(start, len(tokens), banked):
            if match is not None:
                if self._take(match, seq):
                    kv.tokens(seq).extend(tokens[a:b])
                    continue
            for i in range(a, b, self.n_batch):
                if cancel.is_set():
                    return
                try:
                    self.decode_at(seq, tokens[i : min(b, i + self.n_batch)], i)
                except DecodeError:
                    kv.truncate(seq, i)  # an aborted batch leaves no cells behind
                    raise

    def _decode_gap(
        self, seq: int, tokens: list[int], a: int, b: int, cancel: threading.Event, banked: Sequence[Match] = ()
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
                for i in range(x, y, self.n_batch):
                    if cancel.is_set():
                        raise DecodeError(2)
                    self._decode_with_room(tokens[i : min(y, i + self.n_batch)], seq, i)
            ok = True
        finally:
            kv.unpark(seq, a, 0)
            if ok:
                kv.mirrors[seq] = kept
            else:
                kv.truncate(seq, a)

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
