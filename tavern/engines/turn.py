"""One reply of the embedded engine (tavern/engines/local.py): its state as the turn's steps
pass it on (`Turn`), and its text as token after token arrives (`TextStream`).

A token's bytes may end mid-character, and a stop string may span tokens: `TextStream` decodes
incrementally, cuts the reply at the first stop string, and holds back the tail that could
still turn out to begin one, so no stop string is ever streamed to the user.
"""

from __future__ import annotations

import codecs
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tavern.engines.base import GenerationRequest, PromptProgress, TurnStats

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
    cancel: Halt
    """The caller's cancel flag, which the engine can also set (`reported`)."""
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


class Halt(threading.Event):
    """A turn's cancel flag: set by the caller's flag or by the engine itself (the consumer
    dropped the generator while the prompt was read on a helper thread)."""

    def __init__(self, outer: threading.Event) -> None:
        super().__init__()
        self._outer = outer

    def is_set(self) -> bool:
        return super().is_set() or self._outer.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        # Only `CancelWatcher` waits on it, in short slices: either flag ends the wait soon enough.
        return self._outer.wait(timeout) or super().is_set()


REPORT_EVERY = 32
"""Tokens between two progress reports, at least: a prompt whose edits left many one-token
gaps decodes them one at a time, and each needs no event of its own."""


class PromptMeter:
    """Counts the prompt tokens decoded (`CellLoader.load`'s progress callback: n more tokens,
    0 when decoding starts) and reports them as `PromptProgress`: 0 of total at once, then after
    each batch (REPORT_EVERY tokens at least), then total. The total is what the cache lacks,
    `stats.evaluated_tokens` (set before any decoding); a bank chunk that could not be taken
    is decoded too, so it may grow."""

    def __init__(self, stats: TurnStats, report: Callable[[PromptProgress], None]) -> None:
        self.stats = stats
        self.report = report
        self.done = 0
        self.shown = -1
        self.t0: float | None = None

    def __call__(self, n: int) -> None:
        now = time.perf_counter()
        if self.t0 is None:
            self.t0 = now
        self.done += max(n, 0)
        total = max(self.stats.evaluated_tokens, self.done)
        if self.shown >= 0 and self.done < total and self.done - self.shown < REPORT_EVERY:
            return  # another span starts, or a small one ended: nothing worth an event
        if self.done == self.shown:
            return
        self.shown = self.done
        self.report(PromptProgress(done=self.done, total=total, seconds=now - self.t0))


def reported(work: Callable[[Callable[[PromptProgress], None]], None], halt: Halt) -> Iterator[PromptProgress]:
    """Runs `work(report)` on a helper thread and yields what it reports as it reports it:
    `llama_decode` is a blocking call, so a generator cannot yield between batches from inside
    it. An exception in `work` is raised here; a consumer that stops early (the generator
    closed, Ctrl+C) sets `halt`, which stops the work within a batch, and waits for it."""
    events: queue.SimpleQueue[PromptProgress | BaseException | None] = queue.SimpleQueue()

    def run() -> None:
        try:
            work(events.put)
        except BaseException as err:  # handed to the generator's thread, raised there
            events.put(err)
        else:
            events.put(None)

    thread = threading.Thread(target=run, name="tavern-prompt", daemon=True)
    thread.start()
    try:
        while (item := events.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        if thread.is_alive():
            halt.set()
        thread.join()


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
