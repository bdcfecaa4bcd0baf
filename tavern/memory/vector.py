"""Chroma collections for chats: a local PersistentClient or a server, one collection per chat.

Vectors are always computed by Tavern (`Embedder`) and passed in; the collection is still given
an embedding function, Tavern's own (MiniLM from the package), so that Chroma never instantiates
its default one (which downloads an ONNX model). chromadb is imported on first use.
"""

from __future__ import annotations

import hashlib
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar, cast
from urllib.parse import urlparse

from tavern.errors import MemoryError_
from tavern.memory.chunking import Chunk
from tavern.memory.embedder import DIMENSIONS, Embedder, set_offline_env

if TYPE_CHECKING:
    from chromadb.api import ClientAPI
    from chromadb.api.models.Collection import Collection
    from chromadb.api.types import (
        Documents,
        Embeddable,
        EmbeddingFunction,
        Embeddings,
        Include,
        Metadata,
        PyEmbeddings,
        Space,
        Where,
    )

    from tavern.memory.exact import ChatMatrix, Scored
    from tavern.memory.keyword import KeywordIndex

T = TypeVar("T")

EF_NAME = "tavern_minilm"
_SLUG = re.compile(r"[^a-zA-Z0-9]+")


def collection_name(human: str, prefix: str = "chat") -> str:
    """A valid Chroma name (3-512 of [a-zA-Z0-9._-], alphanumeric at both ends) for any chat
    name: a readable ASCII slug plus a hash, so two names never collide."""
    digest = hashlib.sha1(human.encode()).hexdigest()[:16]
    slug = _SLUG.sub("-", human).strip("-")[:48].strip("-")
    return f"{prefix}-{slug}-{digest}" if slug else f"{prefix}-{digest}"


@dataclass
class Hit:
    id: str
    text: str
    index: int
    key: str
    score: float
    """Cosine similarity, 1 = same direction."""
    keyword: bool = False
    """Found by its words too: among the best keyword matches of the query or of a name in it."""
    fused: float = 0.0
    """Its reciprocal-rank-fusion score (tavern.memory.fusion); 0 for a vector-only search."""


def _ef_class() -> type[EmbeddingFunction[Documents]]:
    from chromadb.api.types import Documents, EmbeddingFunction

    class TavernEmbeddingFunction(EmbeddingFunction[Documents]):
        """Chroma's handle on Tavern's embedder (used only if Chroma embeds text itself)."""

        def __init__(self, embedder: Embedder | None = None) -> None:
            self.embedder = embedder or Embedder()

        def __call__(self, input: Documents) -> Embeddings:  # noqa: A002 - Chroma's parameter name
            import numpy as np

            return [np.asarray(v, dtype=np.float32) for v in self.embedder.embed(list(input))]

        @staticmethod
        def name() -> str:
            return EF_NAME

        def get_config(self) -> dict[str, object]:
            return {}

        @staticmethod
        def build_from_config(config: dict[str, object]) -> EmbeddingFunction[Documents]:
            return TavernEmbeddingFunction()

        def default_space(self) -> Space:
            return "cosine"

        def supported_spaces(self) -> list[Space]:
            return ["cosine"]

    return TavernEmbeddingFunction


class VectorStore:
    """One Chroma client (local folder or server URL) and the chats' collections."""

    def __init__(self, embedder: Embedder, path: Path | None = None, url: str = ""):
        self.embedder = embedder
        self.path = path
        self.url = url
        self._client: ClientAPI | None = None
        self._ef: EmbeddingFunction[Documents] | None = None
        self._collections: dict[str, Collection] = {}
        self._lock = threading.Lock()
        self._matrices: dict[str, ChatMatrix] = {}
        """Per chat, its vectors for exact search (loaded on its first search in this process)."""
        self._keywords: KeywordIndex | None = None
        self._load_lock = threading.Lock()

    def connect(self) -> ClientAPI:
        with self._lock:
            if self._client is None:
                self._client = self._make_client()
                self._ef = _ef_class()(self.embedder)
            return self._client

    def _make_client(self) -> ClientAPI:
        set_offline_env()
        try:
            import chromadb
            from chromadb.config import Settings as ChromaSettings
        except ImportError as err:
            raise MemoryError_(f"chromadb cannot load: {err}") from None
        settings = ChromaSettings(anonymized_telemetry=False)
        try:
            if self.url:
                u = urlparse(self.url if "//" in self.url else f"http://{self.url}")
                if not u.hostname:
                    raise MemoryError_(f"memory.chroma_url: not a URL: {self.url!r}")
                port = u.port or (443 if u.scheme == "https" else 8000)
                client = chromadb.HttpClient(
                    host=u.hostname, port=port, ssl=u.scheme == "https", settings=settings
                )
                client.heartbeat()
                return client
            assert self.path is not None
            from tavern.store.atomic import make_dirs

            make_dirs(self.path)  # 0700: the user's chats, embedded, are as private as the chats
            return chromadb.PersistentClient(path=str(self.path), settings=settings)
        except MemoryError_:
            raise
        except Exception as err:
            where = self.url or str(self.path)
            raise MemoryError_(f"Chroma at {where} unavailable: {_one_line(err)}") from None

    def collection(self, human: str) -> Collection:
        name = collection_name(human)
        coll = self._collections.get(name)
        if coll is None:
            client = self.connect()
            coll = client.get_or_create_collection(
                name,
                metadata={"tavern_name": human},
                configuration={"hnsw": {"space": "cosine"}},
                # Chroma's signature asks for a function of any input; Tavern only ever stores
                # documents (Chroma types its own default text function the same way).
                embedding_function=cast("EmbeddingFunction[Embeddable] | None", self._ef),
            )
            self._collections[name] = coll
        return coll

    def drop(self, human: str) -> None:
        client = self.connect()
        name = collection_name(human)
        self._collections.pop(name, None)
        self._matrices.pop(human, None)
        self.keywords().drop(human)
        try:
            client.delete_collection(name)
        except Exception:  # not there: nothing to drop
            pass

    def keywords(self) -> KeywordIndex:
        """The keyword index: `keywords.sqlite3` in the local Chroma folder, in memory for a server."""
        with self._lock:
            if self._keywords is None:
                from tavern.memory.keyword import KeywordIndex

                file = None
                if not self.url and self.path is not None:
                    from tavern.store.atomic import make_dirs

                    make_dirs(self.path)
                    file = self.path / "keywords.sqlite3"
                    _touch_private(file)
                self._keywords = KeywordIndex(file)
            return self._keywords

    # -- records ----------------------------------------------------------------------------

    def manifest(self, human: str) -> dict[str, tuple[int, list[str]]]:
        """key -> (index, chunk ids) of what the collection holds."""
        coll = self.collection(human)
        got = coll.get(include=["metadatas"])
        out: dict[str, tuple[int, list[str]]] = {}
        for cid, meta in zip(got["ids"], got["metadatas"] or []):
            key = str((meta or {}).get("key", cid.rsplit(".", 1)[0]))
            out.setdefault(key, (_index_of(meta), []))[1].append(cid)
        return out

    def add(self, human: str, chunks: list[Chunk], vectors: list[list[float]]) -> None:
        if not chunks:
            return
        coll = self.collection(human)
        for start in range(0, len(chunks), 4000):  # under Chroma's max batch size
            part = chunks[start : start + 4000]
            embeddings: PyEmbeddings = list(vectors[start : start + 4000])
            coll.upsert(
                ids=[c.id for c in part],
                embeddings=embeddings,
                documents=[c.text for c in part],
                metadatas=[{"index": c.index, "key": c.key, "name": c.name} for c in part],
            )
        from tavern.memory.keyword import body

        self.keywords().upsert(human, [(c.id, c.index, body(c.text, c.name)) for c in chunks])
        matrix = self._matrices.get(human)
        if matrix is not None:
            matrix.upsert([c.id for c in chunks], [c.index for c in chunks], [c.key for c in chunks], vectors)

    def delete(self, human: str, ids: list[str]) -> None:
        if ids:
            self.collection(human).delete(ids=ids)
            self.keywords().delete(human, ids)
            matrix = self._matrices.get(human)
            if matrix is not None:
                matrix.delete(ids)

    def reindex_positions(self, human: str, moves: dict[str, tuple[int, list[str]]]) -> None:
        """Update the `index` of chunks whose message moved (no re-embedding)."""
        ids: list[str] = []
        metas: list[Metadata] = []
        for key, (index, chunk_ids) in moves.items():
            for cid in chunk_ids:
                ids.append(cid)
                metas.append({"index": index, "key": key})
        if ids:
            self.collection(human).update(ids=ids, metadatas=metas)
            by_id = {cid: index for index, chunk_ids in moves.values() for cid in chunk_ids}
            self.keywords().move(human, by_id)
            matrix = self._matrices.get(human)
            if matrix is not None:
                matrix.move(by_id)

    def count(self, human: str) -> int:
        return int(self.collection(human).count())

    # -- search -----------------------------------------------------------------------------

    def matrix(self, human: str) -> ChatMatrix:
        """The chat's vectors for exact search, loaded from Chroma on first use in this process
        (and again when Chroma holds another number of chunks: another process wrote to it),
        with the keyword index brought in line with the collection at the same time."""
        coll = self.collection(human)
        total = int(coll.count())
        matrix = self._matrices.get(human)
        if matrix is not None and len(matrix) == total:
            return matrix
        with self._load_lock:
            matrix = self._matrices.get(human)
            if matrix is None or len(matrix) != total:
                matrix = self._load(human, coll)
                self._matrices[human] = matrix
            return matrix

    def _load(self, human: str, coll: Collection) -> ChatMatrix:
        from tavern.memory.exact import ChatMatrix

        matrix = ChatMatrix(DIMENSIONS)
        positions: dict[str, int] = {}
        offset = 0
        while True:
            got = coll.get(include=["embeddings", "metadatas"], limit=5000, offset=offset)
            ids = list(got["ids"])
            if not ids:
                break
            metas: list[Metadata | None] = _metas(got["metadatas"], len(ids))
            embeddings = got["embeddings"]
            if embeddings is None:
                raise MemoryError_("Chroma returned no embeddings for a chat's chunks")
            indexes = [_index_of(m) for m in metas]
            keys = [str((m or {}).get("key", cid.rsplit(".", 1)[0])) for cid, m in zip(ids, metas)]
            matrix.upsert(ids, indexes, keys, [list(map(float, e)) for e in embeddings])
            positions.update(zip(ids, indexes))
            offset += len(ids)
        self._reconcile_keywords(human, coll, positions)
        return matrix

    def _reconcile_keywords(self, human: str, coll: Collection, positions: dict[str, int]) -> None:
        """The keyword index holds exactly the collection's chunks (a memory folder from before
        the keyword index, a server's collection, a crash between the two writes)."""
        from tavern.memory.keyword import body

        keywords = self.keywords()
        held = keywords.positions(human)
        keywords.delete(human, [cid for cid in held if cid not in positions])
        keywords.move(human, {cid: i for cid, i in positions.items() if cid in held and held[cid] != i})
        missing = [cid for cid in positions if cid not in held]
        for start in range(0, len(missing), 1000):
            got = coll.get(ids=missing[start : start + 1000], include=["documents", "metadatas"])
            metas: list[Metadata | None] = _metas(got["metadatas"], len(got["ids"]))
            rows = [
                (cid, positions[cid], body(doc or "", str((meta or {}).get("name", ""))))
                for cid, doc, meta in zip(got["ids"], got["documents"] or [], metas)
            ]
            keywords.upsert(human, rows)

    def query(self, human: str, vector: list[float], k: int, before: int | None = None) -> list[Hit]:
        """The k nearest chunks, exactly (only of messages with index < `before` when given)."""
        if k <= 0:
            return []
        found = self.matrix(human).top(vector, k, before)
        return self._with_text(human, [Hit(s.id, "", s.index, s.key, s.score) for s in found])

    def hybrid(
        self, human: str, vector: list[float], text: str, k: int, before: int | None = None,
        names: list[str] | None = None,
    ) -> list[Hit]:
        """The k best chunks by reciprocal rank fusion of the exact vector ranking, the keyword
        ranking of `text` and one keyword ranking per name in `names` (each searched on its
        own, so that a message naming 'Ilvana' ranks first there whatever else the query says).
        Every hit carries its cosine similarity; `keyword` marks those among the first k of a
        name's ranking (recall takes them below the similarity threshold too). The words of
        `text` only reorder: 'living' matching 'lives' is no reason to recall a message."""
        if k <= 0:
            return []
        from tavern.memory.fusion import fuse

        depth = max(4 * k, 32)
        matrix = self.matrix(human)
        by_vector = matrix.top(vector, depth, before)
        keywords = self.keywords()
        by_names = [keywords.search(human, name, depth, before) for name in names or []]
        worded = [w for w in [keywords.search(human, text, depth, before), *by_names] if w]
        fused = fuse([[s.id for s in by_vector]] + [[h.id for h in w] for w in worded])[:k]
        top_words = {h.id for w in by_names for h in w[:k]}
        scored: dict[str, Scored] = {s.id: s for s in by_vector}
        scored.update(matrix.scores(vector, [cid for cid, _f in fused if cid not in scored]))
        hits = [
            Hit(cid, "", scored[cid].index, scored[cid].key, scored[cid].score, cid in top_words, f)
            for cid, f in fused
            if cid in scored
        ]
        return self._with_text(human, hits)

    def _with_text(self, human: str, hits: list[Hit]) -> list[Hit]:
        if hits:
            got = self.collection(human).get(ids=[h.id for h in hits], include=["documents"])
            docs = dict(zip(got["ids"], got["documents"] or []))
            for h in hits:
                h.text = docs.get(h.id) or ""
        return hits

    def _query(
        self, coll: Collection, vector: list[float], n: int, where: Where | None, documents: bool = True
    ) -> list[Hit]:
        """Chroma's own search (HNSW, approximate; `where` filters in SQLite first). Recall no
        longer uses it: benchmarks/bench_recall.py measures it as the baseline."""
        include: Include = ["metadatas", "distances"]
        if documents:
            include.append("documents")
        query: PyEmbeddings = [vector]
        res = coll.query(query_embeddings=query, n_results=n, where=where, include=include)
        ids = res["ids"][0]
        docs = _first(res["documents"], "documents") if documents else [""] * len(ids)
        metas, dists = _first(res["metadatas"], "metadatas"), _first(res["distances"], "distances")
        hits = []
        for cid, doc, meta, dist in zip(ids, docs, metas, dists):
            key = str((meta or {}).get("key", ""))
            hits.append(Hit(cid, doc or "", _index_of(meta), key, 1.0 - float(dist)))
        return hits


def _first(batches: list[list[T]] | None, what: str) -> list[T]:
    """The first query's column of a field the query included (Chroma returns each one)."""
    if batches is None:
        raise MemoryError_(f"Chroma returned no {what} for a query that asked for them")
    return batches[0]


def _metas(metas: list[Metadata] | None, n: int) -> list[Metadata | None]:
    """A get's metadata column, or n Nones where Chroma returned none."""
    return list(metas) if metas is not None else [None] * n


def _index_of(meta: Metadata | None) -> int:
    """The message index a chunk's metadata holds (-1 when it has none)."""
    value = (meta or {}).get("index", -1)
    if isinstance(value, str | int | float):  # Tavern writes an int
        return int(value)
    raise MemoryError_(f"a memory chunk's index is not a number: {value!r}")


def _touch_private(file: Path) -> None:
    """Create the file 0600 before sqlite3 does (with the umask's mode): it holds the chats' words."""
    from tavern.store.atomic import create_exclusive

    if not file.exists():
        create_exclusive(file, b"")  # an empty file is a database sqlite3 starts from


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__
