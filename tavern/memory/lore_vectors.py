"""Lorebook entries marked `vectorized` (SillyTavern's flag) also activate by similarity.

After the key scan, each vectorized entry that did not fire is compared (MiniLM, cosine) with
the latest messages; those at or above `[memory] lore_threshold` are added to the scan result,
best first, while the lore budget has room, with the reason "similarity 0.62". They go where
their position says, as key-activated entries do. Entry vectors are computed once per content
and kept in memory (a lorebook is small; a content edit gives a new vector).

Not handled (yet): sticky/cooldown timers and inclusion groups for similarity activations;
recursion does not scan their text.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tavern.lore.model import Lorebook, LoreEntry
    from tavern.lore.scan import ActivatedEntry, ScanResult
    from tavern.memory.service import MemoryService


def vectorized_entries(books: Sequence[tuple[str, Lorebook]]) -> list[tuple[str, Lorebook, LoreEntry]]:
    """(kind, book, entry) for every enabled vectorized entry with content."""
    return [
        (kind, book, entry)
        for kind, book in books
        for entry in book.entries
        if entry.vectorized and not entry.disable and entry.content.strip()
    ]


def activate_by_similarity(
    memory: MemoryService,
    result: ScanResult,
    books: Sequence[tuple[str, Lorebook]],
    queries: list[str],
    count: Callable[[str], int],
    macro: Callable[[str], str] | None = None,
) -> list[ActivatedEntry]:
    """Add similarity activations to `result` (a ScanResult); returns the entries added."""
    from tavern.lore.scan import ActivatedEntry

    candidates = vectorized_entries(books)
    fired = {(a.book, a.uid) for a in result.activated}
    candidates = [(k, b, e) for k, b, e in candidates if (b.name, e.uid) not in fired]
    queries = [q for q in queries if q.strip()]
    if not candidates or not queries:
        return []
    vectors = memory.embed_cached([e.content for _k, _b, e in candidates] + queries)
    entry_vecs, query_vecs = vectors[: len(candidates)], vectors[len(candidates) :]
    scored: list[tuple[float, str, Lorebook, LoreEntry]] = []
    for (kind, book, entry), ev in zip(candidates, entry_vecs):
        score = max(sum(a * b for a, b in zip(ev, qv)) for qv in query_vecs)
        if score >= memory.settings.lore_threshold:
            scored.append((score, kind, book, entry))
    added: list[ActivatedEntry] = []
    used = result.tokens_used
    for score, kind, book, entry in sorted(scored, key=lambda s: -s[0]):
        content = macro(entry.content) if macro else entry.content
        cost = count(content + "\n")
        if used + cost >= result.budget:
            continue
        used += cost
        item = ActivatedEntry(
            book=book.name,
            uid=entry.uid,
            comment=entry.comment,
            content=entry.content,
            position=entry.position if isinstance(entry.position, int) else 0,
            depth=int(entry.depth) if entry.depth is not None else 4,
            role=int(entry.role) if entry.role is not None else 0,
            order=entry.order,
            reason=f"similarity {score:.2f} (vectorized)",
            kind=kind,
            entry=entry,
        )
        result.activated.append(item)
        added.append(item)
    result.tokens_used = used
    return added
