"""Saved sequence states in host memory: the engine's multi-state prompt cache.

The live KV cache holds one state per sequence. When a turn would throw most of it away (the
user switches to another chat, a background job borrows the sequence, a branch is opened), the
engine first copies the state here (`llama_state_seq_get_data`, a few ms), and each turn it asks
whether a saved state would leave fewer tokens to evaluate than the live one; if so it is
restored (`llama_state_seq_set_data`). llama-server does the same with `--cache-ram`. Memory is
bounded by a byte budget; the least recently used state goes first.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tavern.engines.reuse_plan import common_prefix

if TYPE_CHECKING:  # pragma: no cover - typing only
    from tavern.engines.lowlevel.context import StateBuffer

_ids = itertools.count(1)


@dataclass
class SavedState:
    tokens: list[int]
    data: StateBuffer
    """A ctypes byte buffer as llama.cpp wrote it."""
    label: str = field(default_factory=lambda: f"#{next(_ids)}")

    @property
    def size(self) -> int:
        return len(self.data)


class PromptStateCache:
    def __init__(self, budget_bytes: int):
        self.budget = max(0, budget_bytes)
        self._states: list[SavedState] = []  # least recently used first

    def __len__(self) -> int:
        return len(self._states)

    @property
    def bytes_used(self) -> int:
        return sum(s.size for s in self._states)

    def holds(self, tokens: list[int]) -> bool:
        return any(s.tokens == tokens for s in self._states)

    def add(self, tokens: list[int], data: StateBuffer) -> SavedState | None:
        if not self.budget or len(data) > self.budget or self.holds(tokens):
            return None
        state = SavedState(list(tokens), data)
        self._states.append(state)
        while self.bytes_used > self.budget:
            self._states.pop(0)
        return state

    def candidates(self, prompt: list[int], n: int = 3) -> list[SavedState]:
        """The `n` states sharing the longest prefix with `prompt`, worth a full alignment. No
        state is ruled out for a short prefix: after the window slid, the chat's own saved state
        shares only its system block at the start yet holds the whole history further on."""
        scored = sorted(((common_prefix(s.tokens, prompt), i) for i, s in enumerate(self._states)), reverse=True)
        return [self._states[i] for _, i in scored[:n]]

    def take(self, state: SavedState) -> None:
        """Mark a state used (it moves to the back of the eviction queue). Saving the live state
        just before may have evicted it; it is kept again then (the caller holds its bytes)."""
        if state in self._states:
            self._states.remove(state)
        self._states.append(state)
        while self.bytes_used > self.budget and len(self._states) > 1:
            self._states.pop(0)

    def clear(self) -> None:
        self._states.clear()
