"""The keyword index beside the vectors (SQLite FTS5, or the Python BM25 where sqlite3 has no
FTS5), exact search over a chat's own vectors, and rank fusion. A real sqlite3 and a real
persistent Chroma; the vectors are made up (no model needed to store and rank them)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from tavern.memory.chunking import Chunk
from tavern.memory.embedder import DIMENSIONS, Embedder
from tavern.memory.fusion import fuse
from tavern.memory.keyword import KeywordIndex, terms
from tavern.memory.vector import VectorStore

TEXTS = [
    "We walk on through the trees, talking about the weather.",
    "My sister Ilvana lives in Dunmarrow, past the salt marshes.",
    "The weather is fine; we walk on.",
    "Ilvana sent word with the carter.",
    "We talk about the weather again under the trees.",
] + [f"We walk on through the trees, talking about the weather, step {i}." for i in range(40)]


@pytest.fixture(params=["fts5", "python"])
def index(request, tmp_path: Path):
    kw = KeywordIndex(tmp_path / "k.sqlite3" if request.param == "fts5" else None, use_fts5=request.param == "fts5")
    kw.upsert("c", [(f"m{i}.0", i, t) for i, t in enumerate(TEXTS)])
    yield kw
    kw.close()


def test_a_name_finds_its_messages_and_small_talk_words_find_nothing(index: KeywordIndex) -> None:
    # Both of her messages, the shorter first (BM25 weighs a word by the message's length).
    assert [h.id for h in index.search("c", "Any news from Ilvana?", 5)] == ["m3.0", "m1.0"]
    assert index.search("c", "What is the weather like, shall we walk on?", 5) == []  # in every message
    assert [h.id for h in index.search("c", "Ilvana", 5, before=2)] == ["m1.0"]  # the window is left out
    assert index.names("c", "any news from ilvana?") == ["Ilvana"]  # spelled as the chat spells her
    assert index.names("c", "Sister, where do you walk?") == []  # only a capital opening the question


def test_deletes_and_moves_reach_the_keyword_index(index: KeywordIndex) -> None:
    index.delete("c", ["m3.0"])
    index.move("c", {"m1.0": 7})
    assert [(h.id, h.index) for h in index.search("c", "Ilvana", 5)] == [("m1.0", 7)]
    assert index.positions("c")["m1.0"] == 7 and "m3.0" not in index.positions("c")


def test_stop_words_never_search() -> None:
    assert terms("Where does your sister live, and what about you?") == ["sister", "live"]


def test_fusion_prefers_what_both_rankings_place_well() -> None:
    fused = [cid for cid, _s in fuse([["a", "b", "c"], ["c", "d", "b"]])]
    assert fused[:2] == ["c", "b"] and fused == [cid for cid, _s in fuse([["a", "b", "c"], ["c", "d", "b"]])]


def _vector(i: int) -> list[float]:
    v = [0.0] * DIMENSIONS
    v[i % DIMENSIONS] = 1.0
    return v


def test_exact_search_filters_the_window_breaks_ties_and_heals_the_keyword_index(tmp_path: Path) -> None:
    store = VectorStore(Embedder(), path=tmp_path / "memory")
    chunks = [Chunk(f"k{i}", 0, i, "Mira", f"Mira: {t}") for i, t in enumerate(TEXTS)]
    same = _vector(1)
    store.add("c", chunks, [same if i in (2, 3, 30) else _vector(i + 5) for i in range(len(chunks))])
    # Three chunks with the same vector: in message order; the one in the window (30) is not there.
    assert [h.index for h in store.query("c", same, 3, before=20)][:2] == [2, 3]
    assert 30 not in [h.index for h in store.query("c", same, 45, before=20)]
    assert (tmp_path / "memory" / "keywords.sqlite3").is_file()
    assert stat.S_IMODE((tmp_path / "memory" / "keywords.sqlite3").stat().st_mode) == 0o600

    # A memory folder from before the keyword index (or a crash between the two writes): the
    # next process fills it in from Chroma when it loads the chat.
    store.keywords().drop("c")
    again = VectorStore(Embedder(), path=tmp_path / "memory")
    hits = again.hybrid("c", _vector(0), "Ilvana?", 2, names=["Ilvana"])
    assert [h.index for h in hits] == [3, 1] and all(h.keyword for h in hits)
    assert hits[1].text == f"Mira: {TEXTS[1]}"
