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
from typing import Any
from urllib.parse import urlparse

from tavern.errors import MemoryError_
from tavern.memory.chunking import Chunk
from tavern.memory.embedder import Embedder, set_offline_env

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


def _ef_class() -> type:
    from chromadb.api.types import EmbeddingFunction

    class TavernEmbeddingFunction(EmbeddingFunction):
        """Chroma's handle on Tavern's embedder (used only if Chroma embeds text itself)."""

        def __init__(self, embedder: Embedder | None = None) -> None:
            self.embedder = embedder or Embedder()

        def __call__(self, input: Any) -> Any:  # noqa: A002 - Chroma's parameter name
            import numpy as np

            return [np.asarray(v, dtype=np.float32) for v in self.embedder.embed(list(input))]

        @staticmethod
        def name() -> str:
            return EF_NAME

        def get_config(self) -> dict[str, Any]:
            return {}

        @staticmethod
        def build_from_config(config: dict[str, Any]) -> Any:
            return TavernEmbeddingFunction()

        def default_space(self) -> Any:
            return "cosine"

        def supported_spaces(self) -> Any:
            return ["cosine"]

    return TavernEmbeddingFunction


class VectorStore:
    """One Chroma client (local folder or server URL) and the chats' collections."""

    def __init__(self, embedder: Embedder, path: Path | None = None, url: str = ""):
        self.embedder = embedder
        self.path = path
        self.url = url
        self._client: Any = None
        self._ef: Any = None
        self._collections: dict[str, Any] = {}
        self._lock = threading.Lock()

    def connect(self) -> Any:
        with self._lock:
            if self._client is None:
                self._client = self._make_client()
                self._ef = _ef_class()(self.embedder)
            return self._client

    def _make_client(self) -> Any:
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

    def collection(self, human: str) -> Any:
        name = collection_name(human)
        coll = self._collections.get(name)
        if coll is None:
            client = self.connect()
            coll = client.get_or_create_collection(
                name,
                metadata={"tavern_name": human},
                configuration={"hnsw": {"space": "cosine"}},
                embedding_function=self._ef,
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
            index = int((meta or {}).get("index", -1))
            out.setdefault(key, (index, []))[1].append(cid)
        return out

    def add(self, human: str, chunks: list[Chunk], vectors: list[list[float]]) -> None:
        if not chunks:
            return
        coll = self.collection(human)
        for start in range(0, len(chunks), 4000):  # under Chroma's max batch size
            part = chunks[start : start + 4000]
            coll.upsert(
                ids=[c.id for c in part],
                embeddings=vectors[start : start + 4000],
                documents=[c.text for c in part],
                metadatas=[{"index": c.index, "key": c.key, "name": c.name} for c in part],
            )

    def delete(self, human: str, ids: list[str]) -> None:
        if ids:
            self.collection(human).delete(ids=ids)

    def reindex_positions(self, human: str, moves: dict[str, tuple[int, list[str]]]) -> None:
        """Update the `index` of chunks whose message moved (no re-embedding)."""
        ids, metas = [], []
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
            return self._query(coll, vector, k, {"index": {"$lt": int(before)}})
        hits = hits[:k]
        if hits:
            got = coll.get(ids=[h.id for h in hits], include=["documents"])
            docs = dict(zip(got["ids"], got["documents"] or []))
            for h in hits:
                h.text = docs.get(h.id) or ""
        return hits

    def _query(self, coll: Any, vector: list[float], n: int, where: Any, documents: bool = True) -> list[Hit]:
        include = ["metadatas", "distances"] + (["documents"] if documents else [])
        res = coll.query(query_embeddings=[vector], n_results=n, where=where, include=include)
        docs = res["documents"][0] if documents else [""] * len(res["ids"][0])
        hits = []
        for cid, doc, meta, dist in zip(res["ids"][0], docs, res["metadatas"][0], res["distances"][0]):
            meta = meta or {}
            hits.append(
                Hit(cid, doc or "", int(meta.get("index", -1)), str(meta.get("key", "")), 1.0 - float(dist))
            )
        return hits


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__
