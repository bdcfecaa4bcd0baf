"""One llama.cpp context: the KV cells of its sequences, decoding into them, and its logits.

`KVCache.apply` carries out a `reuse_plan.ReusePlan` (which cached cells serve which prompt
positions): cells dropped with `llama_memory_seq_rm`, the rest slid with `llama_memory_seq_add`.
llama.cpp only decodes at the end of a sequence (positions must continue from the last one), so
inserting in the middle "parks" the cells after the insertion point on a scratch sequence
(`llama_memory_seq_cp` only re-tags cells in a unified KV cache), decodes the new tokens, and
brings the parked cells back shifted past them. Callers: `local.py` and `cell_loader.py`.
"""

from __future__ import annotations

import contextlib
import ctypes
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

from tavern.errors import EngineError

if TYPE_CHECKING:  # pragma: no cover - typing only; the real imports are deferred
    import llama_cpp
    import numpy as np
    import numpy.typing as npt

    from tavern.engines.reuse_plan import ReusePlan

    StateBuffer = ctypes.Array[ctypes.c_uint8]
    """A sequence's saved cells, as `llama_state_seq_get_data` wrote them."""


class KVCache:
    """Edits the KV cells of one llama.cpp context that holds several sequences, keeping a token
    mirror per sequence (what each sequence's cells hold, position by position)."""

    def __init__(self, ctx: llama_cpp.llama_context_p, scratch_seq: int):
        import llama_cpp

        self._ctx = ctx
        mem = llama_cpp.llama_get_memory(ctx)
        # No memory (an embedding-only context): a NULL handle, as the binding hands it over;
        # such a context cannot shift, so only the plain prefix path ever uses it.
        self._mem = mem if mem is not None else llama_cpp.llama_memory_t(0)
        self.scratch = scratch_seq
        self.can_shift = bool(mem) and bool(llama_cpp.llama_memory_can_shift(self._mem))
        self.mirrors: dict[int, list[int]] = {}

    def tokens(self, seq: int) -> list[int]:
        return self.mirrors.setdefault(seq, [])

    def truncate(self, seq: int, n: int) -> None:
        """Forget every cell of `seq` from position n on."""
        import llama_cpp

        llama_cpp.llama_memory_seq_rm(self._mem, seq, n, -1)
        del self.tokens(seq)[n:]

    def clear(self, seq: int) -> None:
        self.truncate(seq, 0)

    def remove(self, seq: int, a: int, b: int) -> None:
        """Forget `seq`'s cells at positions [a, b) (-1: open end); the mirror is the caller's."""
        import llama_cpp

        llama_cpp.llama_memory_seq_rm(self._mem, seq, a, b)

    def shift(self, seq: int, a: int, b: int, delta: int) -> None:
        """Move `seq`'s cells at positions [a, b) by `delta` positions (RoPE shifts their keys)."""
        import llama_cpp

        llama_cpp.llama_memory_seq_add(self._mem, seq, a, b, delta)

    def move_out(self, seq: int, a: int, b: int, to_seq: int, dst: int) -> None:
        """Re-tag `seq`'s cells [a, b) as `to_seq`'s, shifted to start at `dst` (where `to_seq`
        has no cells) (the cell bank)."""
        import llama_cpp

        llama_cpp.llama_memory_seq_cp(self._mem, seq, to_seq, a, b)
        llama_cpp.llama_memory_seq_rm(self._mem, seq, a, b)
        if dst != a:
            llama_cpp.llama_memory_seq_add(self._mem, to_seq, a, b, dst - a)

    def move_in(self, from_seq: int, src: int, n: int, seq: int, dst: int) -> None:
        """The reverse: `from_seq`'s cells [src, src + n) become `seq`'s at [dst, dst + n)."""
        import llama_cpp

        if dst != src:
            llama_cpp.llama_memory_seq_add(self._mem, from_seq, src, src + n, dst - src)
        llama_cpp.llama_memory_seq_cp(self._mem, from_seq, seq, dst, dst + n)
        llama_cpp.llama_memory_seq_rm(self._mem, from_seq, dst, dst + n)

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
        import llama_cpp

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
        add = llama_cpp.llama_memory_seq_add
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
        import llama_cpp

        llama_cpp.llama_memory_seq_rm(self._mem, self.scratch, -1, -1)
        llama_cpp.llama_memory_seq_cp(self._mem, seq, self.scratch, pos, -1)
        llama_cpp.llama_memory_seq_rm(self._mem, seq, pos, -1)

    def unpark(self, seq: int, pos: int, delta: int) -> None:
        """Bring parked cells back, `delta` positions further on (`delta` = tokens decoded)."""
        import llama_cpp

        if delta:
            llama_cpp.llama_memory_seq_add(self._mem, self.scratch, pos - delta, -1, delta)
        llama_cpp.llama_memory_seq_cp(self._mem, self.scratch, seq, pos, -1)
        llama_cpp.llama_memory_seq_rm(self._mem, self.scratch, -1, -1)

    def state_size(self, seq: int) -> int:
        import llama_cpp

        return int(llama_cpp.llama_state_seq_get_size(self._ctx, seq))

    def save(self, seq: int) -> tuple[list[int], StateBuffer]:
        """(tokens, bytes) of a sequence's cells, to restore later with `restore`."""
        import llama_cpp

        size = self.state_size(seq)
        buf = (ctypes.c_uint8 * size)()
        n = llama_cpp.llama_state_seq_get_data(self._ctx, buf, size, seq)
        if n != size:
            raise RuntimeError(f"llama.cpp saved {n} of {size} bytes of sequence {seq}")
        return list(self.tokens(seq)), buf

    def restore(self, seq: int, tokens: list[int], buf: StateBuffer) -> bool:
        import llama_cpp

        llama_cpp.llama_memory_seq_rm(self._mem, seq, -1, -1)
        n = llama_cpp.llama_state_seq_set_data(self._ctx, buf, len(buf), seq)
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

    def __init__(self, ctx: llama_cpp.llama_context_p, n_batch: int):
        import llama_cpp

        self._ctx = ctx
        self.n_batch = n_batch
        self._batch: llama_cpp.llama_batch | None = llama_cpp.llama_batch_init(n_batch, 0, 1)

    def _live(self) -> llama_cpp.llama_batch:
        if self._batch is None:
            raise EngineError("the batch decoder is closed")
        return self._batch

    def decode(
        self, tokens: Sequence[int], seq: int, pos: int, should_stop: Callable[[], bool] | None = None
    ) -> None:
        import llama_cpp

        b = self._live()
        for start in range(0, len(tokens), self.n_batch):
            if should_stop is not None and should_stop():
                raise DecodeError(2)
            part = tokens[start : start + self.n_batch]
            n = len(part)
            for i, tok in enumerate(part):
                b.token[i] = tok
                # The binding annotates `pos` as an array of arrays; in C it is `llama_pos *`.
                b.pos[i] = pos + start + i  # type: ignore[call-overload]
                b.n_seq_id[i] = 1
                b.seq_id[i][0] = seq
                b.logits[i] = 0
            b.logits[n - 1] = 1
            b.n_tokens = n
            code = llama_cpp.llama_decode(self._ctx, b)
            if code != 0:
                raise DecodeError(code)

    def decode_each(self, token: int, places: Sequence[tuple[int, int]]) -> None:
        """One token into several sequences, (seq, pos) each, in one batch: CFG's two sequences
        advance for the price of one decode. Logits for every row (`llama_get_logits_ith(i)`)."""
        import llama_cpp

        b = self._live()
        for i, (seq, pos) in enumerate(places):
            b.token[i] = token
            b.pos[i] = pos  # type: ignore[call-overload]  # `llama_pos *`, as in `decode`
            b.n_seq_id[i] = 1
            b.seq_id[i][0] = seq
            b.logits[i] = 1
        b.n_tokens = len(places)
        code = llama_cpp.llama_decode(self._ctx, b)
        if code != 0:
            raise DecodeError(code)

    def close(self) -> None:
        if self._batch is not None:
            import llama_cpp

            llama_cpp.llama_batch_free(self._batch)
            self._batch = None


class AbortFlag:
    """Lets a cancel request interrupt llama_decode mid-batch (prompt processing)."""

    def __init__(self, llama: llama_cpp.Llama):
        import llama_cpp

        self.should_abort = False
        self._cb = llama_cpp.ggml_abort_callback(lambda _data: self.should_abort)
        llama_cpp.llama_set_abort_callback(llama._ctx.ctx, self._cb, ctypes.c_void_p(0))


class CancelWatcher:
    """Turns a cancel Event into llama.cpp's abort flag while a prompt batch is decoding, so Esc
    stops a long prompt evaluation within milliseconds instead of after the batch."""

    def __init__(self, cancel: threading.Event, abort: AbortFlag):
        self._cancel = cancel
        self._abort = abort
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._done.is_set():
            if self._cancel.wait(0.02):
                self._abort.should_abort = True
                return

    def stop(self) -> None:
        self._done.set()
        self._thread.join()
        self._abort.should_abort = False


# -- its parameters and its output ----------------------------------------------------------------


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

    def params() -> llama_cpp.llama_context_params:
        p: llama_cpp.llama_context_params = original()
        p.n_seq_max = n_seq
        p.kv_unified = True
        return p

    module.llama_context_default_params = params
    try:
        yield
    finally:
        module.llama_context_default_params = original


def logits_row(ctx: llama_cpp.llama_context_p, i: int, n_vocab: int) -> npt.NDArray[np.float32] | None:
    """Row i of the last decode's logits (-1: the last row) as a numpy view of llama.cpp's
    buffer, not a copy: the next decode overwrites it. None when that row has no logits."""
    import llama_cpp
    import numpy as np

    ptr = llama_cpp.llama_get_logits_ith(ctx, i)
    if not ptr:
        return None
    view: npt.NDArray[np.float32] = np.ctypeslib.as_array(ptr, shape=(n_vocab,))
    return view
