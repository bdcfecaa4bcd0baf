"""Keyword search beside the vectors: SQLite FTS5 with BM25, one table pair per chat.

Names, places and rare words matter more in roleplay than in prose, and MiniLM knows little
of a name it never saw ('Ilvana' is a few word pieces): a search for the word itself finds it.
The index holds the same chunks as the chat's Chroma collection (its text without the
'Name: ' speaker prefix, so that who spoke does not match), written with them; it lives in
`keywords.sqlite3` in the memory folder, or in memory when Chroma is a server (nothing of the
chat is written locally then), and `VectorStore` fills in what it lacks from Chroma.

Only informative words search: not stop words, and not words in more than RARE_SHARE of the
chat's chunks ('weather' in a chat of weather talk ranks nothing). Where Python's sqlite3 has
no FTS5, a small BM25 in Python does the same job (in memory, rebuilt from Chroma).
"""

from __future__ import annotations

import hashlib
import math
import re
import sqlite3
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

RARE_SHARE = 0.05
"""A word in more than this share of a chat's chunks (and more than RARE_MIN) does not search."""
RARE_MIN = 3
_WORD = re.compile(r"[^\W_]+")
STOP = frozenset(
    """a about above after again against all am an and any are as at be because been before being
    below between both but by can could did do does doing down during each few for from further had
    has have having he her here hers herself him himself his how i if in into is it its itself just
    let me more most my myself no nor not now of off on once only or other our ours ourselves out
    over own same she should so some such than that the their theirs them themselves then there these
    they this those through to too under until up very was we were what when where which while who
    whom why will with would you your yours yourself yourselves yes oh ah hm well okay ok""".split()
)


def terms(text: str) -> list[str]:
    """The query's searchable words, lowercased, in order, without repeats or stop words."""
    words = (w.lower() for w in _WORD.findall(text))
    return list(dict.fromkeys(w for w in words if len(w) > 1 and w not in STOP))


def _named_inside(text: str, word: str) -> str | None:
    """How `text` spells `word` where it writes it capitalized other than at the start of a
    sentence (a name), else None."""
    for m in re.finditer(rf"\b{re.escape(word)}\b", text, re.IGNORECASE):
        before = text[: m.start()].rstrip()
        if m.group()[0].isupper() and before and before[-1] not in ".!?…\"'*:(":
            return m.group()
    return None


def body(text: str, name: str) -> str:
    """A chunk's text as the keyword index holds it: without its 'Name: ' speaker prefix."""
    prefix = f"{name}: "
    return text[len(prefix) :] if name and text.startswith(prefix) else text


@dataclass(frozen=True)
class KeywordHit:
    id: str
    index: int
    score: float
    """BM25, higher is better."""


@dataclass
class _Doc:
    index: int
    counts: Counter[str]
    length: int
    text: str


@dataclass
class _PyTable:
    docs: dict[str, _Doc] = field(default_factory=dict)
    postings: dict[str, set[str]] = field(default_factory=dict)


def fts5_available() -> bool:
    try:
        con = sqlite3.connect(":memory:")
        try:
            con.execute("CREATE VIRTUAL TABLE t USING fts5(x)")
        finally:
            con.close()
    except sqlite3.Error:
        return False
    return True


class KeywordIndex:
    """Chunks of each chat, searchable by word; `path` None keeps it in memory."""

    def __init__(self, path: Path | None, use_fts5: bool | None = None) -> None:
        self.fts5 = fts5_available() if use_fts5 is None else use_fts5
        self._lock = threading.Lock()
        self._py: dict[str, _PyTable] = {}
        self._ready: set[str] = set()
        self._con: sqlite3.Connection | None = None
        if self.fts5:
            target = ":memory:" if path is None else str(path)
            self._con = sqlite3.connect(target, check_same_thread=False, isolation_level=None)
            self._con.execute("PRAGMA journal_mode=WAL" if path is not None else "PRAGMA journal_mode=MEMORY")
            self._con.execute("PRAGMA synchronous=NORMAL")

    def close(self) -> None:
        with self._lock:
            if self._con is not None:
                self._con.close()
                self._con = None

    # -- tables ------------------------------------------------------------------------------

    @staticmethod
    def _names(chat: str) -> tuple[str, str]:
        h = hashlib.sha1(chat.encode()).hexdigest()[:20]
        return f'"c_{h}"', f'"f_{h}"'

    def _con_for(self, chat: str) -> sqlite3.Connection:
        con = self._con
        assert con is not None  # only the FTS5 path calls this
        if chat not in self._ready:
            rows, fts = self._names(chat)
            con.execute(f"CREATE TABLE IF NOT EXISTS {rows} (rowid INTEGER PRIMARY KEY, cid TEXT UNIQUE NOT NULL, idx INTEGER NOT NULL)")
            con.execute(f"CREATE VIRTUAL TABLE IF NOT EXISTS {fts} USING fts5(body, tokenize='porter unicode61 remove_diacritics 2')")
            self._ready.add(chat)
        return con

    def drop(self, chat: str) -> None:
        with self._lock:
            self._py.pop(chat, None)
            if self._con is not None:
                rows, fts = self._names(chat)
                self._con.execute(f"DROP TABLE IF EXISTS {rows}")
                self._con.execute(f"DROP TABLE IF EXISTS {fts}")
                self._ready.discard(chat)

    # -- writes ------------------------------------------------------------------------------

    def upsert(self, chat: str, rows: list[tuple[str, int, str]]) -> None:
        """(chunk id, message index, text without the speaker) for each chunk."""
        if not rows:
            return
        with self._lock:
            if self._con is None:
                self._py_upsert(chat, rows)
                return
            con = self._con_for(chat)
            table, fts = self._names(chat)
            con.execute("BEGIN")
            try:
                for cid, index, text in rows:
                    got = con.execute(f"SELECT rowid FROM {table} WHERE cid = ?", (cid,)).fetchone()
                    if got is None:
                        rowid = con.execute(f"INSERT INTO {table} (cid, idx) VALUES (?, ?)", (cid, index)).lastrowid
                    else:
                        rowid = got[0]
                        con.execute(f"UPDATE {table} SET idx = ? WHERE rowid = ?", (index, rowid))
                        con.execute(f"DELETE FROM {fts} WHERE rowid = ?", (rowid,))
                    con.execute(f"INSERT INTO {fts} (rowid, body) VALUES (?, ?)", (rowid, text))
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise

    def delete(self, chat: str, ids: list[str]) -> None:
        if not ids:
            return
        with self._lock:
            if self._con is None:
                self._py_delete(chat, ids)
                return
            con = self._con_for(chat)
            table, fts = self._names(chat)
            con.execute("BEGIN")
            try:
                for cid in ids:
                    got = con.execute(f"SELECT rowid FROM {table} WHERE cid = ?", (cid,)).fetchone()
                    if got is not None:
                        con.execute(f"DELETE FROM {fts} WHERE rowid = ?", (got[0],))
                        con.execute(f"DELETE FROM {table} WHERE rowid = ?", (got[0],))
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise

    def move(self, chat: str, moves: dict[str, int]) -> None:
        """Chunk id -> its message's new index."""
        if not moves:
            return
        with self._lock:
            if self._con is None:
                table_py = self._py.get(chat)
                for cid, index in moves.items():
                    doc = table_py.docs.get(cid) if table_py else None
                    if doc is not None:
                        doc.index = index
                return
            con = self._con_for(chat)
            table, _fts = self._names(chat)
            con.execute("BEGIN")
            con.executemany(f"UPDATE {table} SET idx = ? WHERE cid = ?", [(i, c) for c, i in moves.items()])
            con.execute("COMMIT")

    def positions(self, chat: str) -> dict[str, int]:
        """Chunk id -> message index of every chunk the chat's index holds."""
        with self._lock:
            if self._con is None:
                table_py = self._py.get(chat)
                return {cid: d.index for cid, d in table_py.docs.items()} if table_py else {}
            table, _fts = self._names(chat)
            return {str(c): int(i) for c, i in self._con_for(chat).execute(f"SELECT cid, idx FROM {table}")}

    # -- search ------------------------------------------------------------------------------

    def informative(self, chat: str, words: list[str]) -> list[str]:
        """The words that appear in the chat, in at most RARE_SHARE of its chunks (or RARE_MIN)."""
        with self._lock:
            df, total = self._doc_freq(chat, words)
        limit = max(RARE_MIN, int(total * RARE_SHARE))
        return [w for w in words if 0 < df.get(w, 0) <= limit]

    def search(self, chat: str, text: str, n: int, before: int | None = None) -> list[KeywordHit]:
        """The `n` chunks best matching the informative words of `text` (BM25), of messages
        with index < `before` when given; ties in message order, then by id."""
        words = self.informative(chat, terms(text))
        if not words or n <= 0:
            return []
        with self._lock:
            if self._con is None:
                return self._py_search(chat, words, n, before)
            con = self._con_for(chat)
            table, fts = self._names(chat)
            match = " OR ".join(f'"{w}"' for w in words)
            limit = before if before is not None else 2**62
            rows = con.execute(
                f"SELECT c.cid, c.idx, bm25({fts}) AS s FROM {fts} JOIN {table} c ON c.rowid = {fts}.rowid "
                f"WHERE {fts} MATCH ? AND c.idx < ? ORDER BY s, c.idx, c.cid LIMIT ?",
                (match, limit, n),
            ).fetchall()
        return [KeywordHit(str(cid), int(idx), -float(s)) for cid, idx, s in rows]

    def names(self, chat: str, text: str) -> list[str]:
        """The characters and places `text` names, as the chat's own text writes them: its
        informative words that the chat writes capitalized inside a sentence ('ilvana' or
        'Ilvana' in the query is Ilvana when the chat says 'my sister Ilvana'; 'Tell' opening
        a question is no name)."""
        found = []
        for word in self.informative(chat, terms(text)):
            spelled = next((n for t in self._texts(chat, word) if (n := _named_inside(t, word))), None)
            if spelled:
                found.append(spelled)
        return found

    def _texts(self, chat: str, word: str, limit: int = 20) -> list[str]:
        with self._lock:
            if self._con is None:
                table_py = self._py.get(chat)
                docs = table_py.postings.get(word, set()) if table_py else set()
                return [table_py.docs[c].text for c in sorted(docs)[:limit]] if table_py else []
            con = self._con_for(chat)
            _table, fts = self._names(chat)
            rows = con.execute(f"SELECT body FROM {fts} WHERE {fts} MATCH ? LIMIT ?", (f'"{word}"', limit))
            return [str(r[0]) for r in rows]

    def _doc_freq(self, chat: str, words: list[str]) -> tuple[dict[str, int], int]:
        if self._con is None:
            table_py = self._py.get(chat)
            if table_py is None:
                return {}, 0
            return {w: len(table_py.postings.get(w, ())) for w in words}, len(table_py.docs)
        con = self._con_for(chat)
        table, fts = self._names(chat)
        total = int(con.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
        df = {w: int(con.execute(f"SELECT count(*) FROM {fts} WHERE {fts} MATCH ?", (f'"{w}"',)).fetchone()[0]) for w in words}
        return df, total

    # -- the Python fallback (no FTS5 in this sqlite3) ---------------------------------------

    def _py_upsert(self, chat: str, rows: list[tuple[str, int, str]]) -> None:
        table = self._py.setdefault(chat, _PyTable())
        for cid, index, text in rows:
            old = table.docs.get(cid)
            for term in old.counts if old else ():
                table.postings.get(term, set()).discard(cid)
            words = [w.lower() for w in _WORD.findall(text)]
            doc = _Doc(index, Counter(words), len(words), text)
            table.docs[cid] = doc
            for term in doc.counts:
                table.postings.setdefault(term, set()).add(cid)

    def _py_delete(self, chat: str, ids: list[str]) -> None:
        table = self._py.get(chat)
        if table is None:
            return
        for cid in ids:
            doc = table.docs.pop(cid, None)
            for term in doc.counts if doc else ():
                table.postings.get(term, set()).discard(cid)

    def _py_search(self, chat: str, words: list[str], n: int, before: int | None) -> list[KeywordHit]:
        """Okapi BM25 (k1 1.2, b 0.75, FTS5's constants and its idf floor)."""
        table = self._py.get(chat)
        if table is None or not table.docs:
            return []
        total = len(table.docs)
        avg = sum(d.length for d in table.docs.values()) / total or 1.0
        scores: dict[str, float] = {}
        for w in words:
            posting = table.postings.get(w, set())
            idf = max(1e-6, math.log((total - len(posting) + 0.5) / (len(posting) + 0.5)))
            for cid in posting:
                doc = table.docs[cid]
                if before is not None and doc.index >= before:
                    continue
                tf = doc.counts[w]
                scores[cid] = scores.get(cid, 0.0) + idf * tf * 2.2 / (tf + 1.2 * (0.25 + 0.75 * doc.length / avg))
        ranked = sorted(scores.items(), key=lambda kv: (-kv[1], table.docs[kv[0]].index, kv[0]))[:n]
        return [KeywordHit(cid, table.docs[cid].index, s) for cid, s in ranked]
