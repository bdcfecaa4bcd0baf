"""One reply of the embedded engine (tavern/engines/local.py): its state as the turn's steps
pass it on (`Turn`), and its text as token after token arrives (`TextStream`).

A token's bytes may end mid-character, and a stop string may span tokens: `TextStream` decodes
incrementally, cuts the reply at the first stop string, and holds back the tail that could
still turn out to begin one, so no stop string is ever streamed to the user.
"""

from __future__ import annotations

import codecs
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tavern.engines.base import GenerationRequest, TurnStats

if TYPE_CHECKING:  # pragma: no cover - typing only; numpy comes with llama_cpp at load time
    import numpy as np
    import numpy.typing as npt

    Logits = npt.NDArray[np.float32]
    """One row of logits, over the vocabulary."""


@dataclass
class Turn:
    """One reply's state, shared by `LocalEngine._generate`'s steps (the error path reports
    `text`)."""

    req: GenerationRequest
    cancel: threading.Event
    seq: int
    """The sequence it runs on (`LocalEngine._seq_for`: a side one may borrow the chat's)."""
    stats: TurnStats = field(default_factory=TurnStats)
    stream: TextStream | None = None
    """The reply's text, from the decode-sample loop on."""
    t_start: float = field(default_factory=time.perf_counter)
    t_prompt: float = 0.0
    t_first: float | None = None
    add_bos: bool = False
    window: int = 0
    """The cells the prompt plus the reply must fit in: the chat's window or the side cells."""
    tokens: list[int] = field(default_factory=list)
    neg_logits: Logits | None = None
    """CFG: the negative sequence's logits for the next token; None without guidance."""

    @property
    def text(self) -> str:
        return self.stream.text if self.stream is not None else ""


class TextStream:
    """The reply's text as token bytes arrive: decoded incrementally (a character may span
    tokens), cut at the first stop string, and emitted less the tail that could still turn out
    to begin one."""

    def __init__(self, stop: Sequence[str]) -> None:
        self.stops = [s for s in stop if s]
        self.hold = max((len(s) for s in self.stops), default=1) - 1
        self.text = ""
        self.emitted = 0
        self._utf8 = codecs.getincrementaldecoder("utf-8")("replace")

    def push(self, piece: bytes) -> tuple[str, bool]:
        """Add one token's bytes: (text to emit now, whether a stop string ended the reply)."""
        self.text += self._utf8.decode(piece)
        cut = find_stop(self.text, self.stops, self.emitted - self.hold)
        if cut is not None:
            self.text = self.text[:cut]
            out = self.text[self.emitted : cut] if cut > self.emitted else ""
            self.emitted = len(self.text)
            return out, True
        safe = len(self.text) - self.hold if self.stops else len(self.text)
        return self._emit(safe), False

    def flush(self, final: bool) -> str:
        """The rest, once the reply ended (`final`: also a partial character, as U+FFFD)."""
        if final:
            self.text += self._utf8.decode(b"", final=True)
        return self._emit(len(self.text))

    def _emit(self, upto: int) -> str:
        if upto <= self.emitted:
            return ""
        out = self.text[self.emitted : upto]
        self.emitted = upto
        return out


def find_stop(text: str, stops: list[str], start: int) -> int | None:
    """Earliest position of any stop string that ends in the not-yet-emitted tail."""
    best = None
    for s in stops:
        i = text.find(s, max(0, start))
        if i != -1 and (best is None or i < best):
            best = i
    return best
