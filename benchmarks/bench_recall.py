"""Recall outside the window (issue #28): Chroma's HNSW then a filter (the old search) against
the exact search and the hybrid one (exact vectors + FTS5 keywords + names, fused), same run.

Run: .venv/bin/python benchmarks/bench_recall.py [--builds 3] [--k 4]

Workloads (tests/memory/needle.py, what tests/memory/test_needle.py asserts):
- `needle`: 600 messages of distinct small talk that all looks alike, five facts said once each
  in the first half; the questions about them asked with the window at the last 40 messages.
- `news`: 300 messages, one user message in four asking about news, the same five facts and a
  rare name ('Ilvana sent word ...'); the question 'Any news from Ilvana?' among the others.

Every chunk is embedded with the packaged MiniLM and written to a real persistent Chroma in a
temp folder, `--builds` times (HNSW's graph differs from build to build); the keyword index
beside it. Printed per workload and method: facts found in the top k (over all builds),
recall@k against the exact top k (the overlap of the k ids), the query latency (median, the
query's embedding excluded: the same for all).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "memory"))

from needle import NEEDLES, RARE, needle_chat  # noqa: E402

from tavern.memory.chunking import MessageRef, chunk_message, message_key  # noqa: E402
from tavern.memory.embedder import Embedder, set_offline_env  # noqa: E402
from tavern.memory.vector import Hit, VectorStore  # noqa: E402

WINDOW = 40


def old_query(store: VectorStore, human: str, vector: list[float], k: int, before: int, window: int) -> list[Hit]:
    """The search recall ran before: the nearest 4k+16 from HNSW unfiltered, filtered by index;
    wider (k + the window's chunks) when that left fewer than k; Chroma's `where` last."""
    coll = store.collection(human)
    hits: list[Hit] = []
    for fetch in dict.fromkeys((4 * k + 16, k + window)):
        hits = [h for h in store._query(coll, vector, fetch, None, documents=False) if h.index < before]
        if len(hits) >= k:
            return hits[:k]
        if fetch >= coll.count():
            return hits[:k]
    return store._query(coll, vector, k, {"index": {"$lt": before}})


def workload(name: str):
    if name == "needle":
        messages, where = needle_chat(600)
        asks = NEEDLES
    else:
        messages, where = needle_chat(300, needles=NEEDLES + [RARE], news=True)
        asks = NEEDLES + [RARE]
    refs = [MessageRef(m.index, m.name, m.text) for m in messages]
    wanted = {message_key(r.name, r.text): r for r in refs}  # as MemoryService.sync_full keys them
    chunks = [c for key, r in wanted.items() for c in chunk_message(key, r)]
    return chunks, where, asks, len(messages)


def run(name: str, embedder: Embedder, builds: int, k: int) -> None:
    chunks, where, asks, n = workload(name)
    t0 = time.perf_counter()
    vectors = embedder.embed([c.text for c in chunks])
    embed_s = time.perf_counter() - t0
    before = n - WINDOW
    questions = [f"User: {a.asked}" for a in asks]
    qvecs = embedder.embed(questions)
    methods = ("old HNSW+filter", "exact", "hybrid")
    found = dict.fromkeys(methods, 0)
    overlap = dict.fromkeys(methods, 0)
    ms: dict[str, list[float]] = {m: [] for m in methods}
    runs_found: dict[str, list[int]] = {m: [] for m in methods}
    for _build in range(builds):
        with tempfile.TemporaryDirectory() as tmp:
            store = VectorStore(embedder, path=Path(tmp) / "memory")
            human = f"bench/{name}"
            store.add(human, chunks, vectors)
            store.matrix(human)  # loaded once per process, as the session does at its first recall
            this = dict.fromkeys(methods, 0)
            for ask, text, v in zip(asks, questions, qvecs):
                truth = {h.id for h in store.query(human, v, k, before=before)}
                for method in methods:
                    t0 = time.perf_counter()
                    if method == "exact":
                        hits = store.query(human, v, k, before=before)
                    elif method == "hybrid":
                        names = store.keywords().names(human, text)
                        hits = store.hybrid(human, v, text, k, before=before, names=names)
                    else:
                        hits = old_query(store, human, v, k, before, WINDOW * 3 // 2 + 8)
                    ms[method].append((time.perf_counter() - t0) * 1000)
                    hit = where[ask.said] in [h.index for h in hits[:k]]
                    found[method] += hit
                    this[method] += hit
                    overlap[method] += len({h.id for h in hits[:k]} & truth)
            for method in methods:
                runs_found[method].append(this[method])
    total = builds * len(asks)
    print(
        f"\n{name}: {n} messages, {len(chunks)} chunks (embedded in {embed_s:.0f} s), window = last {WINDOW}, "
        f"{len(asks)} questions x {builds} builds, top-{k}"
    )
    for method in methods:
        print(
            f"  {method:16} facts in top-{k}: {found[method]}/{total} (per build {runs_found[method]}); "
            f"recall@{k} vs exact {overlap[method] / (k * total):.0%}; "
            f"query median {statistics.median(ms[method]):.1f} ms (p90 {sorted(ms[method])[int(len(ms[method]) * 0.9)]:.1f})"
        )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--builds", type=int, default=3)
    ap.add_argument("-k", type=int, default=4)
    ap.add_argument("--workload", choices=["needle", "news", "both"], default="both")
    args = ap.parse_args()
    set_offline_env()
    embedder = Embedder(threads=1)
    embedder.load()
    for name in ("needle", "news") if args.workload == "both" else (args.workload,):
        run(name, embedder, args.builds, args.k)


if __name__ == "__main__":
    main()
