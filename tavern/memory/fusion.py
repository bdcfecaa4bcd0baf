"""Reciprocal rank fusion: several rankings of the same chunks into one.

Each ranking gives a chunk 1 / (RRF_K + rank), rank counted from 1, and a chunk's fused score
is the sum over the rankings it is in (Cormack, Clarke and Büttcher 2009). It needs no common
scale: a cosine similarity and a BM25 score are not comparable, their ranks are. RRF_K = 60 is
the paper's constant: large enough that the first few places of one ranking do not drown
the others (place 1 scores 0.0164, place 10 0.0143), so a chunk both rankings place well
beats one that only one ranking places first.
"""

from __future__ import annotations

from collections.abc import Sequence

RRF_K = 60


def fuse(rankings: Sequence[Sequence[str]], k: int = RRF_K) -> list[tuple[str, float]]:
    """(id, fused score), best first; equal scores keep the order of their first appearance
    (the first ranking's, then the next one's), so the result is the same every run."""
    scores: dict[str, float] = {}
    for ranking in rankings:
        for rank, cid in enumerate(ranking, start=1):
            scores[cid] = scores.get(cid, 0.0) + 1.0 / (k + rank)
    order = {cid: n for n, cid in enumerate(scores)}
    return sorted(scores.items(), key=lambda kv: (-kv[1], order[kv[0]]))
