"""llama.cpp's sampler chain, for `samplers.TokenSampler`: the samplers llama.cpp has, and Python
steps (top-a) run inside the chain over the candidate records.

The `init_*` functions return a new `llama_sampler` pointer (NULL when llama.cpp refuses the
parameters); `SamplerChain.add` takes ownership of it. Seeds are llama.cpp's uint32.
"""

from __future__ import annotations

import contextlib
import ctypes
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from tavern.errors import EngineError

if TYPE_CHECKING:  # pragma: no cover - typing only; the real imports are deferred
    import llama_cpp
    import numpy as np
    import numpy.typing as npt

    Sampler = llama_cpp.llama_sampler_p
    """A llama.cpp sampler, from an `init_*` function, for `SamplerChain.add`."""


def token_data_size() -> int:
    """Bytes of one `llama_token_data` record (id, logit, p): the layout of candidate buffers."""
    import llama_cpp

    return ctypes.sizeof(llama_cpp.llama_token_data)


def init_logit_bias(n_vocab: int, bias: dict[int, float]) -> llama_cpp.llama_sampler_p:
    """Adds `bias[token]` to each token's logit (-inf forbids it); llama.cpp copies the entries."""
    import llama_cpp

    entries = (llama_cpp.llama_logit_bias * len(bias))()
    for i, (token, value) in enumerate(bias.items()):
        entries[i] = llama_cpp.llama_logit_bias(token, value)
    sampler: llama_cpp.llama_sampler_p = llama_cpp.llama_sampler_init_logit_bias(n_vocab, len(bias), entries)
    return sampler


def init_dry(
    vocab: llama_cpp.llama_vocab_p,
    multiplier: float,
    base: float,
    allowed_length: int,
    last_n: int,
    breakers: Sequence[bytes],
) -> llama_cpp.llama_sampler_p:
    """DRY over the last `last_n` tokens; `breakers` are UTF-8 strings (llama.cpp copies them)."""
    import llama_cpp

    array = (ctypes.c_char_p * max(len(breakers), 1))(*breakers)  # never a zero-length array
    n = len(breakers)
    sampler: llama_cpp.llama_sampler_p = llama_cpp.llama_sampler_init_dry(vocab, multiplier, base, allowed_length, last_n, array, n)
    return sampler


def init_penalties(
    n_vocab: int, last_n: int, repeat: float, frequency: float, presence: float
) -> llama_cpp.llama_sampler_p:
    import llama_cpp

    sampler: llama_cpp.llama_sampler_p = llama_cpp.llama_sampler_init_penalties(n_vocab, last_n, repeat, frequency, presence)
    return sampler


def init_greedy() -> llama_cpp.llama_sampler_p:
    import llama_cpp

    sampler: llama_cpp.llama_sampler_p = llama_cpp.llama_sampler_init_greedy()
    return sampler


def init_dist(seed: int) -> llama_cpp.llama_sampler_p:
    """The final seeded draw from the distribution left."""
    import llama_cpp

    sampler: llama_cpp.llama_sampler_p = llama_cpp.llama_sampler_init_dist(seed)
    return sampler


def init_mirostat(n_vocab: int, seed: int, tau: float, eta: float, m: int) -> llama_cpp.llama_sampler_p:
    import llama_cpp

    sampler: llama_cpp.llama_sampler_p = llama_cpp.llama_sampler_init_mirostat(n_vocab, seed, tau, eta, m)
    return sampler


def init_mirostat_v2(seed: int, tau: float, eta: float) -> llama_cpp.llama_sampler_p:
    import llama_cpp

    sampler: llama_cpp.llama_sampler_p = llama_cpp.llama_sampler_init_mirostat_v2(seed, tau, eta)
    return sampler


def init_xtc(probability: float, threshold: float, min_keep: int, seed: int) -> llama_cpp.llama_sampler_p:
    import llama_cpp

    sampler: llama_cpp.llama_sampler_p = llama_cpp.llama_sampler_init_xtc(probability, threshold, min_keep, seed)
    return sampler


def init_top_n_sigma(n: float) -> llama_cpp.llama_sampler_p:
    import llama_cpp

    sampler: llama_cpp.llama_sampler_p = llama_cpp.llama_sampler_init_top_n_sigma(n)
    return sampler


def init_top_k(k: int) -> llama_cpp.llama_sampler_p:
    import llama_cpp

    sampler: llama_cpp.llama_sampler_p = llama_cpp.llama_sampler_init_top_k(k)
    return sampler


def init_typical(p: float, min_keep: int) -> llama_cpp.llama_sampler_p:
    import llama_cpp

    sampler: llama_cpp.llama_sampler_p = llama_cpp.llama_sampler_init_typical(p, min_keep)
    return sampler


def init_top_p(p: float, min_keep: int) -> llama_cpp.llama_sampler_p:
    import llama_cpp

    sampler: llama_cpp.llama_sampler_p = llama_cpp.llama_sampler_init_top_p(p, min_keep)
    return sampler


def init_min_p(p: float, min_keep: int) -> llama_cpp.llama_sampler_p:
    import llama_cpp

    sampler: llama_cpp.llama_sampler_p = llama_cpp.llama_sampler_init_min_p(p, min_keep)
    return sampler


def init_temp(t: float) -> llama_cpp.llama_sampler_p:
    import llama_cpp

    sampler: llama_cpp.llama_sampler_p = llama_cpp.llama_sampler_init_temp(t)
    return sampler


def init_temp_ext(t: float, delta: float, exponent: float) -> llama_cpp.llama_sampler_p:
    """Dynamic temperature: T in [t - delta, t + delta] by the distribution's entropy."""
    import llama_cpp

    sampler: llama_cpp.llama_sampler_p = llama_cpp.llama_sampler_init_temp_ext(t, delta, exponent)
    return sampler


def records(address: int | None, n: int, dtype: np.dtype[np.void]) -> npt.NDArray[np.void]:
    """A writable numpy view of `n` records of `dtype` (laid out like `llama_token_data`) at a C
    address: the candidates a sampler left, or those a Python step edits in place."""
    import numpy as np

    if not address or n <= 0:
        return np.zeros(0, dtype=dtype)
    raw = (ctypes.c_char * (n * dtype.itemsize)).from_address(address)
    # A ctypes array has the buffer protocol; numpy's stubs list only the bytes-like types.
    view: npt.NDArray[np.void] = np.frombuffer(raw, dtype=dtype)  # type: ignore[call-overload]
    return view


ApplyFn = Callable[[int | None, int], None]
"""A Python sampler step: (address of the candidate records, how many) -> edits them in place."""


class SamplerChain:
    """Owns one llama.cpp sampler chain and the ctypes objects it points at, in the manner of
    llama-cpp-python's `_internals.LlamaSampler`: `close()` frees it (safe twice, also on GC)."""

    def __init__(self) -> None:
        import llama_cpp

        self._keep_alive: list[object] = []  # ctypes objects the C chain points at
        self._ptr: llama_cpp.llama_sampler_p | None = llama_cpp.llama_sampler_chain_init(
            llama_cpp.llama_sampler_chain_default_params()
        )
        if not self._ptr:
            raise EngineError("llama.cpp could not create a sampler chain")

    def _live(self) -> llama_cpp.llama_sampler_p:
        if not self._ptr:
            raise EngineError("the sampler chain is closed")
        return self._ptr

    def add(self, name: str, sampler: llama_cpp.llama_sampler_p | None) -> None:
        """Append a sampler from an `init_*` function (or `custom`); the chain then owns it."""
        import llama_cpp

        if not sampler:
            raise EngineError(f"llama.cpp could not create the {name} sampler")
        llama_cpp.llama_sampler_chain_add(self._live(), sampler)

    def custom(
        self, name: bytes, apply: ApplyFn, on_error: Callable[[BaseException], None]
    ) -> llama_cpp.llama_sampler_p:
        """A new sampler whose apply() is Python, for `add`. An exception cannot cross the C
        frames, so it goes to `on_error` (the caller raises it after the chain ran).

        Built with `llama_sampler_init`, so the chain owns and frees the sampler struct; the
        interface, its callbacks and `name` (whose buffer name() hands to C) live as long as
        this chain. (llama-cpp-python's own CustomSampler leaves name() NULL, which llama.cpp
        would call.)"""
        import llama_cpp

        def trampoline(
            _smpl: llama_cpp.llama_sampler_p, cur_p: ctypes._Pointer[llama_cpp.llama_token_data_array]
        ) -> None:
            try:
                arr = cur_p.contents
                apply(ctypes.cast(arr.data, ctypes.c_void_p).value, int(arr.size))
            except BaseException as err:  # noqa: BLE001 - it cannot cross the C frames: keep it
                on_error(err)

        def name_fn(_smpl: llama_cpp.llama_sampler_p) -> bytes:
            return name

        iface = llama_cpp.llama_sampler_i()
        iface.name = llama_cpp.llama_sampler_i_name(name_fn)
        iface.apply = llama_cpp.llama_sampler_i_apply(trampoline)
        # accept/reset/clone/free and the backend hooks stay NULL: a stateless step.
        self._keep_alive += [iface, iface.name, iface.apply, trampoline, name_fn, name]
        sampler: llama_cpp.llama_sampler_p = llama_cpp.llama_sampler_init(ctypes.pointer(iface), None)
        return sampler

    def accept(self, token: int) -> None:
        """Record a token that entered the context (penalties, DRY and mirostat see it)."""
        import llama_cpp

        llama_cpp.llama_sampler_accept(self._live(), int(token))

    def apply(self, data: int, n: int, steps: int | None = None) -> tuple[int, int | None, int]:
        """Run the chain, or only its first `steps` samplers, over `n` unsorted `llama_token_data`
        records at address `data`. Returns (selected index or -1, records address, count), read
        back from the array struct: samplers reorder the records, shrink the count and (XTC)
        move the data pointer."""
        import llama_cpp

        chain = self._live()
        arr = llama_cpp.llama_token_data_array(
            data=ctypes.cast(data, llama_cpp.llama_token_data_p), size=n, selected=-1, sorted=False
        )
        if steps is None:
            llama_cpp.llama_sampler_apply(chain, ctypes.byref(arr))
        else:
            for i in range(steps):
                llama_cpp.llama_sampler_apply(llama_cpp.llama_sampler_chain_get(chain, i), ctypes.byref(arr))
        return int(arr.selected), ctypes.cast(arr.data, ctypes.c_void_p).value, int(arr.size)

    def close(self) -> None:
        ptr, self._ptr = getattr(self, "_ptr", None), None
        if ptr:
            import llama_cpp

            llama_cpp.llama_sampler_free(ptr)
        self._keep_alive = []

    def __del__(self) -> None:
        # At interpreter shutdown llama_cpp may already be gone.
        with contextlib.suppress(Exception):
            self.close()
