"""Exact nearest-neighbour search over one chat's own vectors (a numpy matrix per chat).

Chroma's HNSW index is approximate: among hundreds of near-identical small-talk vectors it
did not reach the one message that answers the question, and which ones it found changed
from run to run (issue #28). A chat's vectors fit in memory (600 messages: 0.9 MB; 50,000
chunks: 77 MB), and a matrix product over them is exact: every chunk outside the window is
scored, and ties are broken by message index, then chunk id, so a search gives the same
answer every run. The matrix is loaded from Chroma once per process and kept up to date by
the writes that go through `VectorStore`. numpy is imported when a matrix is made (importing
this module stays light, tests/test_import_hygiene.py).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    Vectors = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Scored:
    id: str
    index: int
    key: str
    score: float
    """Cosine similarity (the vectors are normalized: a dot product)."""


class ChatMatrix:
    """One chat's chunk vectors with their ids, message indexes and keys; thread-safe."""

    def __init__(self, dim: int) -> None:
        import numpy as np

        self.dim = dim
        self._ids: list[str] = []
        self._keys: list[str] = []
        self._row: dict[str, int] = {}
        self._index = np.zeros(0, dtype=np.int64)
        self._vecs: Vectors = np.zeros((0, dim), dtype=np.float32)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._ids)

    def upsert(self, ids: list[str], indexes: list[int], keys: list[str], vectors: list[list[float]]) -> None:
        if not ids:
            return
        import numpy as np

        rows = np.asarray(vectors, dtype=np.float32).reshape(len(ids), self.dim)
        with self._lock:
            new_ids, new_idx, new_keys, new_rows = [], [], [], []
            for i, cid in enumerate(ids):
                at = self._row.get(cid)
                if at is None:
                    new_ids.append(cid)
                    new_idx.append(indexes[i])
                    new_keys.append(keys[i])
                    new_rows.append(i)
                else:  # the same chunk written again (an upsert): replace it in place
                    self._vecs[at] = rows[i]
                    self._index[at] = indexes[i]
                    self._keys[at] = keys[i]
            if new_ids:
                start = len(self._ids)
                self._ids.extend(new_ids)
                self._keys.extend(new_keys)
                self._row.update((cid, start + n) for n, cid in enumerate(new_ids))
                self._index = np.concatenate([self._index, np.asarray(new_idx, dtype=np.int64)])
                self._vecs = np.concatenate([self._vecs, rows[new_rows]])

    def delete(self, ids: list[str]) -> None:
        import numpy as np

        with self._lock:
            gone = {self._row[c] for c in ids if c in self._row}
            if not gone:
                return
            keep = np.asarray([r for r in range(len(self._ids)) if r not in gone], dtype=np.int64)
            self._ids = [self._ids[r] for r in keep.tolist()]
            self._keys = [self._keys[r] for r in keep.tolist()]
            self._row = {cid: n for n, cid in enumerate(self._ids)}
            self._index = self._index[keep]
            self._vecs = self._vecs[keep]

    def move(self, moves: dict[str, int]) -> None:
        """Chunk id -> its message's new index (a delete above it shifted it)."""
        with self._lock:
            for cid, index in moves.items():
                at = self._row.get(cid)
                if at is not None:
                    self._index[at] = index

    def top(self, vector: list[float], n: int, before: int | None = None) -> list[Scored]:
        """The `n` chunks nearest to `vector` (of messages with index < `before` when given),
        best first; equal scores in message order, then by id."""
        if n <= 0:
            return []
        import numpy as np

        q = np.asarray(vector, dtype=np.float32)
        with self._lock:
            if not self._ids:
                return []
            scores = self._vecs @ q
            rows = np.flatnonzero(self._index < before) if before is not None else np.arange(len(self._ids))
            if rows.size == 0:
                return []
            sub = scores[rows]
            if rows.size > n:
                # Everything tied with the n-th best stays a candidate: the tie-break below,
                # not the partition's order, decides which of them make the cut.
                kth = np.partition(sub, rows.size - n)[rows.size - n]
                rows = rows[sub >= kth]
            found = [Scored(self._ids[r], int(self._index[r]), self._keys[r], float(scores[r])) for r in rows.tolist()]
        found.sort(key=lambda s: (-s.score, s.index, s.id))
        return found[:n]

    def scores(self, vector: list[float], ids: list[str]) -> dict[str, Scored]:
        """The given chunks' similarity to `vector` (those the matrix holds)."""
        import numpy as np

        q = np.asarray(vector, dtype=np.float32)
        with self._lock:
            rows = [(cid, self._row[cid]) for cid in ids if cid in self._row]
            if not rows:
                return {}
            got = self._vecs[[r for _c, r in rows]] @ q
            return {
                cid: Scored(cid, int(self._index[r]), self._keys[r], float(s))
                for (cid, r), s in zip(rows, got.tolist())
            }
