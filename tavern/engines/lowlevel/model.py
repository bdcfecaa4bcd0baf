"""What the loaded model's vocabulary says of a token, and the library's own switches.

Callers: `local.py` (a token's bytes, the end of a reply), `cell_loader.py` (where lines and
messages start), `samplers.py` (the end tokens a ban covers), `cpu_probe.py` and `gpu.py`.
"""

from __future__ import annotations

import ctypes
from typing import TYPE_CHECKING

from tavern.errors import EngineError

if TYPE_CHECKING:  # pragma: no cover - typing only; the real import is deferred
    import llama_cpp

    Vocab = llama_cpp.llama_vocab_p
    """A loaded model's vocabulary, for the token queries here (`vocab_of`)."""


def token_piece(vocab: llama_cpp.llama_vocab_p, token: int) -> bytes:
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


def vocab_of(llama: llama_cpp.Llama) -> llama_cpp.llama_vocab_p:
    """The `llama_vocab` pointer of a loaded `llama_cpp.Llama` (what token queries take)."""
    import llama_cpp

    vocab: llama_cpp.llama_vocab_p | None = llama_cpp.llama_model_get_vocab(llama.model)
    if vocab is None:  # never for a loaded model: `Llama` refuses a model without one
        raise EngineError("the model has no vocabulary")
    return vocab


def end_tokens(vocab: llama_cpp.llama_vocab_p) -> tuple[int, int]:
    """(end-of-sequence, end-of-turn) token ids; -1 where the vocabulary has none."""
    import llama_cpp

    return int(llama_cpp.llama_vocab_eos(vocab)), int(llama_cpp.llama_vocab_eot(vocab))


def is_eog(vocab: llama_cpp.llama_vocab_p, token: int) -> bool:
    """Whether `token` ends generation (EOS, EOT, <|im_end|> and the like)."""
    import llama_cpp

    return bool(llama_cpp.llama_vocab_is_eog(vocab, token))


def is_control(vocab: llama_cpp.llama_vocab_p, token: int) -> bool:
    """Whether `token` is a control token (<|im_start|>): where a message starts."""
    import llama_cpp

    return bool(llama_cpp.llama_vocab_is_control(vocab, token))


# -- the library --------------------------------------------------------------------------------


_log_callback: object = None
"""The no-op log callback, kept alive: llama.cpp holds a pointer to it."""


def silence_llama_logs() -> None:
    """llama.cpp logs to stderr, which would paint over a TUI; route it nowhere."""
    global _log_callback
    import llama_cpp

    if _log_callback is None:
        callback = llama_cpp.llama_log_callback(lambda level, text, data: None)
        _log_callback = callback
        llama_cpp.llama_log_set(callback, ctypes.c_void_p(0))


def gpu_offload_supported() -> bool:
    """Whether this llama.cpp build has a GPU backend. Raises if the library cannot load."""
    import llama_cpp

    return bool(llama_cpp.llama_supports_gpu_offload())
