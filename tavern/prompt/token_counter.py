"""Counting a prompt's pieces with the backend's tokenizer, remembered across turns.

Who calls it: the engine host wraps each engine's count in a :class:`TokenCounter`; the prompt
assembler (:mod:`~tavern.prompt.history_window` above all) and long-term memory count through it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable


class TokenCounter:
    """Counts with the backend's tokenizer and remembers: a turn re-counts only new text."""

    def __init__(
        self,
        count: Callable[[str], int],
        max_entries: int = 100_000,
        count_many: Callable[[list[str]], list[int]] | None = None,
        max_token_bytes: int | None = None,
    ):
        self._count = count
        self._count_many = count_many
        """A backend that counts many texts at once (a remote server: one request or one
        concurrent batch, not a round trip per piece); None: `prime` does nothing."""
        self.max_token_bytes = max_token_bytes
        """The most bytes one token spells (None: unknown): see `cannot_fit`."""
        self._cache: OrderedDict[str, int] = OrderedDict()
        self._max = max_entries
        self._seen = [0, 0]  # characters and tokens counted so far: this model's ratio

    def known(self, text: str) -> int | None:
        return self._cache.get(text)

    def cannot_fit(self, text: str, room: int) -> bool:
        """True when `text` is surely over `room` tokens, known without tokenizing it: every
        token spells at most `max_token_bytes` bytes. Tokenizing is linear but slow (2 s per
        MB): a 10 MB message in an 8k context needs no count to be left out."""
        limit = self.max_token_bytes
        if not limit or text in self._cache or len(text) <= room * limit // 4:
            return False  # a character is at most 4 UTF-8 bytes: too short to decide by length
        return len(text.encode("utf-8", "surrogatepass")) > room * limit

    def chars_per_token(self) -> float:
        chars, tokens = self._seen
        return chars / tokens if tokens > 50 else 4.0

    @property
    def batches(self) -> bool:
        return self._count_many is not None

    def prime(self, texts: list[str]) -> None:
        """Count the texts not known yet in one batch, so the calls that follow are hits."""
        if self._count_many is None:
            return
        todo = [t for t in dict.fromkeys(texts) if t and t not in self._cache]
        if len(todo) < 2:
            return
        for text, n in zip(todo, self._count_many(todo), strict=True):
            self._cache[text] = n
            self._seen[0] += len(text)
            self._seen[1] += n
        while len(self._cache) > self._max:
            self._cache.popitem(last=False)

    def __call__(self, text: str) -> int:
        if not text:
            return 0
        hit = self._cache.get(text)
        if hit is not None:
            self._cache.move_to_end(text)
            return hit
        n = self._count(text)
        self._cache[text] = n
        self._seen[0] += len(text)
        self._seen[1] += n
        if len(self._cache) > self._max:
            self._cache.popitem(last=False)
        return n
