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
from tavern.memory.embedder import Embedder, set_offline_env

if TYPE_CHECKING:
    from chromadb.api import ClientAPI
    from chromadb.api.models.Collection import Collection
    from chromadb.api.types import (
        Documents,
        Embeddable,
        EmbeddingFunction,
        Embeddings,
        Include,
        LiteralValue,
        LogicalOperator,
        Metadata,
        PyEmbeddings,
        Space,
        Where,
        WhereOperator,
    )

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
        try:
            client.delete_collection(name)
        except Exception:  # not there: nothing to drop
            pass

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

    def delete(self, human: str, ids: list[str]) -> None:
        if ids:
            self.collection(human).delete(ids=ids)

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

    def count(self, human: str) -> int:
        return int(self.collection(human).count())

    def query(
        self, human: str, vector: list[float], k: int, before: int | None = None, window: int = 0
    ) -> list[Hit]:
        """The k nearest chunks, only of messages with index < `before` when given.

        `window`: about how many chunks sit at or after `before` (the prompt's window). Chroma's
        metadata filter scans SQLite first and cost ~1 s a query at 50,000 chunks here, so the
        nearest k + window are fetched unfiltered (~20 ms) and filtered here; only when that
        leaves fewer than k does the filtered query run."""
        if k <= 0:
            return []
        coll = self.collection(human)
        if before is None:
            return self._query(coll, vector, k, None)
        hits: list[Hit] = []
        total = None
        # A few more than k first (cheap: a wide search costs HNSW time); the window's size next.
        for fetch in dict.fromkeys((4 * k + 16, k + max(0, window))):
            hits = [h for h in self._query(coll, vector, fetch, None, documents=False) if h.index < before]
            if len(hits) >= k:
                break
            total = coll.count() if total is None else total
            if fetch >= total:
                break
        else:
            below: dict[WhereOperator | LogicalOperator, LiteralValue] = {"$lt": int(before)}
            earlier: Where = {"index": below}
            return self._query(coll, vector, k, earlier)
        hits = hits[:k]
        if hits:
            got = coll.get(ids=[h.id for h in hits], include=["documents"])
            docs = dict(zip(got["ids"], got["documents"] or []))
            for h in hits:
                h.text = docs.get(h.id) or ""
        return hits

    def _query(
        self, coll: Collection, vector: list[float], n: int, where: Where | None, documents: bool = True
    ) -> list[Hit]:
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


def _index_of(meta: Metadata | None) -> int:
    """The message index a chunk's metadata holds (-1 when it has none)."""
    value = (meta or {}).get("index", -1)
    if isinstance(value, str | int | float):  # Tavern writes an int
        return int(value)
    raise MemoryError_(f"a memory chunk's index is not a number: {value!r}")


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__
