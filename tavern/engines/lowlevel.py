"""The one module that reaches below `llama_cpp.Llama` into llama.cpp's C API.

Why it exists: `Llama.generate` reuses only the common prefix of the cached and the new prompt.
Once a chat fills the window and old messages leave it, the prefix ends right after the system
prompt and everything after it would be evaluated again (6.4 s for 1,550 tokens on 2 cores).
Here we do what llama-server's `--cache-reuse` and KoboldCpp's ContextShift do: find chunks of
the cached sequence that reappear later in the new prompt, drop the cells in between
(`llama_memory_seq_rm`) and slide the chunk back (`llama_memory_seq_add`), so only truly new
tokens are evaluated. The wrapper's own token list (`Llama.input_ids`, `n_tokens`) is kept in
step, or its prefix matching would lie.

Checked against llama-cpp-python 0.3.36 (`Llama.eval` removes cells from `n_tokens` on, and
writes evaluated tokens to `input_ids`).
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


@dataclass
class ReusePlan:
    """How to turn the cached token sequence into a prefix of the new prompt."""

    prefix: int
    """Tokens shared at the start: kept as they are."""
    moves: list[tuple[int, int, int]] = field(default_factory=list)
    """(cache position, prompt position, length) chunks to slide back; positions only decrease."""

    @property
    def n_past(self) -> int:
        return self.prefix + sum(n for _, _, n in self.moves)

    @property
    def shifted(self) -> int:
        return sum(n for _, _, n in self.moves)


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


class KVCache:
    """Edits the KV cells of one llama_cpp.Llama context, keeping the wrapper's bookkeeping."""

    def __init__(self, llama: Any):
        import llama_cpp  # deferred: importing the C library costs ~0.2 s

        self._lib = llama_cpp
        self._llama = llama
        self._mem = llama_cpp.llama_get_memory(llama._ctx.ctx)
        self.can_shift = bool(self._mem) and bool(llama_cpp.llama_memory_can_shift(self._mem))

    @property
    def tokens(self) -> list[int]:
        return self._llama.input_ids[: self._llama.n_tokens].tolist()

    def truncate(self, n: int, seq_id: int = 0) -> None:
        """Forget every cell from position n on."""
        self._lib.llama_memory_seq_rm(self._mem, seq_id, n, -1)
        self._llama.n_tokens = n

    def apply(self, plan: ReusePlan, seq_id: int = 0) -> int:
        """Carry out a plan; returns how many leading prompt tokens are now in the cache."""
        llama = self._llama
        ids = llama.input_ids
        if not plan.moves or not self.can_shift:
            n_past = plan.prefix
        else:
            for src, dst, n in plan.moves:
                # Drop the cells between where the chunk is and where it goes, then slide it.
                self._lib.llama_memory_seq_rm(self._mem, seq_id, dst, src)
                self._lib.llama_memory_seq_add(self._mem, seq_id, src, src + n, dst - src)
                ids[dst : dst + n] = ids[src : src + n].copy()
            n_past = plan.n_past
        self.truncate(n_past, seq_id)
        return n_past


def token_piece(vocab: Any, token: int) -> bytes:
    """The bytes of one token, without llama-cpp-python's fixed 32-byte buffer (which pads with
    NULs in 0.3.36's `LlamaModel.token_to_piece`)."""
    import llama_cpp

    size = 64
    while True:
        buf = (ctypes.c_char * size)()
        n = llama_cpp.llama_token_to_piece(vocab, token, buf, size, 0, False)
        if n >= 0:
            return bytes(buf[:n])
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
