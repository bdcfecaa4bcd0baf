"""Saved sequence states in host memory: the engine's multi-state prompt cache.

The live KV cache holds one state per sequence. When a turn would throw most of it away (the
user switches to another chat, a background job borrows the sequence, a branch is opened), the
engine first copies the state here (`llama_state_seq_get_data`, a few ms), and each turn it asks
whether a saved state would leave fewer tokens to evaluate than the live one; if so it is
restored (`llama_state_seq_set_data`). llama-server does the same with `--cache-ram`. Memory is
bounded by a byte budget; the least recently used state goes first.

With a disk tier (`tavern.engines.state_disk`, the engine's `cache_disk_mib`), each state saved
here is also written to a file in the background, and the files a previous process left rank
beside the states in memory: the chat reopened after a restart starts from its own cells.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tavern.engines.reuse_plan import common_prefix

if TYPE_CHECKING:  # pragma: no cover - typing only
    from tavern.engines.lowlevel.context import StateBuffer
    from tavern.engines.state_disk import DiskState, StateDisk

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
    def __init__(self, budget_bytes: int, disk: StateDisk | None = None):
        self.budget = max(0, budget_bytes)
        self._states: list[SavedState] = []  # least recently used first
        self.disk = disk
        """The states on disk (None: this tier is off); the engine sets it once it has loaded."""

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
        if self.disk is not None:
            self.disk.write_later(tokens, data)  # in case the process ends before it is used
        return state

    def candidates(self, prompt: list[int], n: int = 3) -> list[SavedState | DiskState]:
        """The `n` states sharing the longest prefix with `prompt`, worth a full alignment, in
        memory or on disk (a file whose tokens a state in memory has is the same state). No
        state is ruled out for a short prefix: after the window slid, the chat's own saved state
        shares only its system block at the start yet holds the whole history further on."""
        pool: list[SavedState | DiskState] = []
        if self.disk is not None:  # first: on a tie the state in memory (later in the pool) wins
            pool += [d for d in self.disk.states() if not self.holds(d.tokens)]
        pool += self._states
        scored = sorted(((common_prefix(s.tokens, prompt), i) for i, s in enumerate(pool)), reverse=True)
        return [pool[i] for _, i in scored[:n]]

    def fetch(self, state: SavedState | DiskState) -> SavedState | None:
        """A candidate's bytes in memory: a state on disk is read (and kept here too, as the
        most recently used); None when its file turned out damaged or gone."""
        if isinstance(state, SavedState):
            return state
        assert self.disk is not None  # disk states come from it
        data = self.disk.read(state)
        if data is None:
            return None
        saved = SavedState(list(state.tokens), data, label=state.label)
        if self.budget and saved.size <= self.budget and not self.holds(saved.tokens):
            self._states.append(saved)
            while self.bytes_used > self.budget:
                self._states.pop(0)
        return saved

    def persist(self, tokens: list[int], data: StateBuffer, timeout: float) -> None:
        """Before the engine goes: the live state to disk now, and the queued ones within
        `timeout` seconds (what is left is lost with the process, which costs time only)."""
        if self.disk is None:
            return
        self.disk.write(tokens, data)
        self.disk.flush(timeout)

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
