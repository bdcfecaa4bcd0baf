"""Long-term memory for a data home: indexing, recall and the rolling summary, off the UI thread.

`MemoryService` is owned by `Tavern` (one per process). The chat session calls three hooks,
handing memory a small view of the chat (tavern.memory.ports), never itself:
`attach(chat)` when a chat opens (it then hears every change the chat store makes: append,
edit, insert, delete, truncate, through `Chat.listeners`), `recall(...)` while a prompt is
built, and `turn()` around a reply: while a reply is generated nothing else uses the CPU
(llama.cpp went from 109 to 26 tok/s when sentence-transformers encoded beside it), so
background work (index updates, the summary) waits, and a running summary is cancelled and
retried after the turn.

If Chroma or the embedding model cannot load, memory switches itself off for the process and
reports one warning; the chat goes on without recall.
"""

from __future__ import annotations

import contextlib
import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tavern.errors import MemoryError_, TavernError
from tavern.memory.chunking import Chunk, MessageRef, chunk_message, message_key
from tavern.memory.embedder import Embedder
from tavern.memory.vector import Hit, VectorStore

if TYPE_CHECKING:
    from tavern.config import MemorySettings
    from tavern.engines.base import Engine
    from tavern.memory.ports import ChatHandle, SummarySource
    from tavern.store.chatfile import Chat

Job = tuple[str, str, "tuple[SummarySource, int] | None"]
"""(kind, chat, payload) of one background job: "tail", "full" or "summary" (whose payload is
the chat's summary source and window start)."""

UNIT_CHUNKS = 16
"""Chunks embedded per unit of background work: a turn waits at most for one unit."""
RECALL_CHUNKS = 4 * 64
"""Chunks a turn's recall embeds before it searches (a few long new messages); the rest of a
burst is indexed in the background."""
TAIL = 64
"""Messages checked at the end of the chat before each recall (catch-up of what is missing)."""
FRESH = 32


@dataclass
class Recalled:
    text: str
    index: int
    score: float


def chat_id(handle: ChatHandle) -> str:
    """The human name of a chat's collection: character key / chat file name."""
    return f"{handle.key}/{handle.chat.name}"


def message_refs(chat: Chat, start: int = 0, end: int | None = None) -> list[MessageRef]:
    """The indexable messages of chat[start:end] (hidden/system ones and empty ones are not)."""
    end = len(chat) if end is None else min(end, len(chat))
    out = []
    for i in range(max(0, start), end):
        try:
            m = chat[i]
        except TavernError:  # an unreadable line: nothing to index
            continue
        if m.is_system or not (m.mes or "").strip():
            continue
        out.append(MessageRef(i, m.name, m.mes))
    return out


class MemoryService:
    def __init__(
        self, settings: MemorySettings, path: Path | None, engine_getter: Callable[[], Engine] | None = None
    ) -> None:
        self.settings = settings  # the [memory] section
        self.embedder = Embedder(threads=settings.threads)
        self.store = VectorStore(self.embedder, path=path, url=settings.chroma_url)
        self.engine_getter = engine_getter
        self.failed: str | None = None
        self.summary_error: str | None = None
        self.on_warning: Callable[[str], None] | None = None
        self._warned = False
        self._taken = False
        self._cv = threading.Condition()
        self._jobs: deque[Job] = deque()
        self._busy = 0
        self._running = False
        self._cancel_bg = threading.Event()
        self._worker: threading.Thread | None = None
        self._closed = False
        self._chats: dict[str, ChatHandle] = {}
        self._dirty_from: dict[str, int] = {}
        """Per chat, the first message appended since its index was last complete."""
        self._vec_cache: dict[str, list[float]] = {}
        self._fresh: dict[str, tuple[int, list[float]]] = {}
        """Vectors of the newest messages' chunks (text -> (message index, vector), a few dozen):
        recall's queries are the latest messages, whose one-chunk text is the same, so they are
        not embedded twice."""
        self._fresh_lock = threading.Lock()
        self._synced: set[str] = set()
        """Chats whose full sync was started in this process."""
        self._recall_cache: tuple[tuple[str, int, tuple[str, ...], int], list[Recalled]] | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.settings.enabled) and self.failed is None

    # -- failure: once, then off --------------------------------------------------------------

    def _fail(self, err: BaseException) -> None:
        if self.failed is None:
            self.failed = str(err) if isinstance(err, TavernError) else f"memory off: {err}"
        self._warn()

    def _warn(self) -> None:
        if self.failed and not self._warned:
            self._warned = True
            if self.on_warning:
                self.on_warning(f"long-term memory is off: {self.failed}")

    def take_warning(self) -> str | None:
        """The failure, the first time it is asked for (the prompt's warnings show it once)."""
        if self.failed and not self._taken:
            self._taken = True
            return f"long-term memory is off: {self.failed}"
        return None

    # -- foreground turns and the background worker --------------------------------------------

    @contextlib.contextmanager
    def turn(self) -> Iterator[None]:
        """Around a reply: background work pauses (a running summary is cancelled)."""
        with self._cv:
            self._busy += 1
            self._cancel_bg.set()
            while self._running:
                self._cv.wait()
        try:
            yield
        finally:
            with self._cv:
                self._busy -= 1
                if self._busy == 0:
                    self._cancel_bg.clear()
                self._cv.notify_all()

    def _submit(self, kind: str, human: str, payload: tuple[SummarySource, int] | None = None) -> None:
        # The summary needs only the engine: it goes on when Chroma or the embedder failed.
        if not self.settings.enabled or self._closed or (self.failed and kind != "summary"):
            return
        with self._cv:
            # One pending job per (kind, chat): a newer one replaces it (a full sync covers a tail one).
            for job in list(self._jobs):
                if job[1] == human and (job[0] == kind or (kind == "full" and job[0] == "tail")):
                    self._jobs.remove(job)
            self._jobs.append((kind, human, payload))
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._work, name="tavern-memory", daemon=True)
                self._worker.start()
            self._cv.notify_all()

    def _work(self) -> None:
        while True:
            with self._cv:
                while not self._jobs or self._busy:
                    if self._closed or (not self._cv.wait(timeout=30) and not self._jobs):
                        self._worker = None
                        return
                job = self._jobs.popleft()
                self._running = True
            again = False
            try:
                again = self._run(job)
            except MemoryError_ as err:
                self._fail(err)
            except Exception as err:  # never kill the worker: report once, go on without memory
                self._fail(err)
            finally:
                with self._cv:
                    self._running = False
                    if again and (self.enabled or job[0] == "summary"):
                        self._jobs.appendleft(job)
                    self._cv.notify_all()

    def _run(self, job: Job) -> bool:
        """One unit of a job; True when there is more to do."""
        kind, human, payload = job
        if kind == "summary":
            from tavern.memory.summary import summarize_step

            if payload is None:  # never: only `schedule_summary` submits one, with its source
                return False

            try:
                return summarize_step(payload, self.settings, self._cancel_bg)
            except TavernError as err:  # the summary waits for the next turn; recall stays on
                self.summary_error = str(err)
                return False
        session = self._chats.get(human)
        if session is None:
            return False
        if kind == "tail":
            return self.sync_tail(session, limit=UNIT_CHUNKS)
        return self.sync_full(session, limit=UNIT_CHUNKS)

    def close(self, timeout: float = 30.0) -> bool:
        """Stop the background worker before the process exits: pending jobs are dropped (the
        next run brings the index up to date again), a running summary is cancelled, the unit of
        indexing under way finishes. A daemon thread still inside torch or Chroma while Python
        shuts down can kill the process with SIGSEGV after its last line was printed. True when
        the worker stopped within `timeout` seconds."""
        with self._cv:
            self._closed = True
            self._jobs.clear()
            self._cancel_bg.set()
            self._cv.notify_all()
            worker = self._worker
        if worker is not None:
            worker.join(timeout)
            return not worker.is_alive()
        return True

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until the background queue is empty (tests, the CLI before exit)."""
        with self._cv:
            return self._cv.wait_for(lambda: not self._jobs and not self._running, timeout)

    # -- chats ------------------------------------------------------------------------------

    def attach(self, session: ChatHandle) -> None:
        """Follow a chat's changes. The first recall brings the whole index up to date in the
        background (a command that only reads the summary costs nothing)."""
        if not self.settings.enabled:
            return
        human = chat_id(session)
        self._chats[human] = session
        listeners = session.chat.listeners
        if self._on_change not in listeners:
            listeners.append(self._on_change)

    def _human_of(self, chat: Chat) -> str | None:
        for human, session in self._chats.items():
            if session.chat is chat:
                return human
        return None

    def _on_change(self, chat: Chat, kind: str, index: int) -> None:
        """Chat.listeners callback: every write of the chat store comes through here."""
        human = self._human_of(chat)
        if human is None:
            return
        self._recall_cache = None
        if human not in self._synced:
            # A short chat fits its window: no recall yet, so no model or Chroma in this
            # process (a headless one-turn chat stays light). Once it grows, index it all.
            if len(chat) >= TAIL:
                self._synced.add(human)
                self._submit("full", human)
            return
        if kind == "append":
            self._dirty_from[human] = min(self._dirty_from.get(human, index), index)
        self._submit("tail" if kind == "append" else "full", human)

    # -- indexing ---------------------------------------------------------------------------

    def _embed_and_add(self, human: str, refs: list[tuple[str, MessageRef]], limit: int | None) -> bool:
        """Embed and add messages' chunks, at most about `limit` chunks; True if some are left."""
        chunks: list[Chunk] = []
        done = 0
        for key, ref in refs:
            new = chunk_message(key, ref)
            if limit is not None and chunks and len(chunks) + len(new) > limit:
                break
            chunks.extend(new)
            done += 1
        if chunks:
            vectors = self.embedder.embed([c.text for c in chunks])
            self.store.add(human, chunks, vectors)
            with self._fresh_lock:
                fresh = self._fresh
                for chunk, vector in zip(chunks, vectors):
                    fresh[chunk.text] = (chunk.index, vector)
                if len(fresh) > FRESH:  # keep the newest messages' (older batches come later)
                    newest = sorted(fresh.items(), key=lambda kv: kv[1][0])[-FRESH:]
                    self._fresh = dict(newest)
        return done < len(refs)

    def sync_tail(self, session: ChatHandle, limit: int | None = None) -> bool:
        """Index what is missing among the messages appended since the last sync (and the
        last TAIL ones): the common case, an append, without reading the whole chat."""
        human = chat_id(session)
        chat = session.chat
        end = len(chat)
        start = min(self._dirty_from.get(human, end), end - TAIL)
        refs = message_refs(chat, start, end)
        # A repeated text ('*nods*', look-alike small talk) is one chunk, at its latest place
        # as in sync_full: Chroma refuses a get or an upsert naming an id twice.
        keyed = list({message_key(r.name, r.text): r for r in refs}.items())
        if not keyed:
            return False
        coll = self.store.collection(human)
        have: set[str] = set()
        for i in range(0, len(keyed), 1000):
            ids = [f"{k}.0" for k, _ in keyed[i : i + 1000]]
            have.update(coll.get(ids=ids, include=[])["ids"])
        missing = [(k, r) for k, r in keyed if f"{k}.0" not in have]
        more = self._embed_and_add(human, missing, limit)
        if not more:
            # Messages appended meanwhile (from `end` on) are still to do; appends only ever
            # lower this mark to their own index.
            self._dirty_from[human] = end
        return more

    def sync_full(self, session: ChatHandle, limit: int | None = None) -> bool:
        """Make the collection match the whole chat: drop what is gone, move what moved (a
        metadata update), embed only what is new."""
        human = chat_id(session)
        wanted: dict[str, MessageRef] = {}
        for r in message_refs(session.chat):
            wanted[message_key(r.name, r.text)] = r  # a repeated text: its latest place
        held = self.store.manifest(human)
        gone = [cid for key, (_i, ids) in held.items() if key not in wanted for cid in ids]
        self.store.delete(human, gone)
        moved = {k: (wanted[k].index, ids) for k, (i, ids) in held.items() if k in wanted and wanted[k].index != i}
        self.store.reindex_positions(human, moved)
        missing = [(k, r) for k, r in wanted.items() if k not in held]
        missing.sort(key=lambda kr: -kr[1].index)  # newest first: the likeliest to be asked about soon
        return self._embed_and_add(human, missing, limit)

    def reindex(self, session: ChatHandle) -> int:
        """Drop the chat's collection and build it again (synchronously); returns the chunk count."""
        human = chat_id(session)
        self.store.drop(human)
        self.sync_full(session)
        return self.store.count(human)

    # -- recall -----------------------------------------------------------------------------

    def search(
        self, session: ChatHandle, text: str, k: int | None = None, before: int | None = None, hybrid: bool = True
    ) -> list[Hit]:
        """The best chunks for `text` with their scores (no threshold): recall's own search
        (exact vectors fused with keywords and the names `text` mentions) or, `hybrid` False,
        the exact vector search alone."""
        k = self.settings.top_k if k is None else k
        vector = self.embedder.embed([text])[0]
        return self._search(chat_id(session), vector, text, k, before, hybrid)

    def _search(self, human: str, vector: list[float], text: str, k: int, before: int | None, hybrid: bool) -> list[Hit]:
        if not hybrid:
            return self.store.query(human, vector, k, before=before)
        names = self.store.keywords().names(human, text)
        return self.store.hybrid(human, vector, text, k, before=before, names=names)

    def recall(
        self, session: ChatHandle, queries: list[str], window_start: int, count: Callable[[str], int]
    ) -> list[Recalled]:
        """What to put in the prompt: chunks of messages before the window (not already in
        the prompt), at most top_k and token_cap tokens, oldest first. A chunk qualifies by its
        similarity (score >= score_threshold) or by its words (among the best keyword matches of
        a query or of a name it mentions: 'Ilvana' finds 'Ilvana' when MiniLM does not).

        `queries`: the latest messages, newest first. Each is searched on its own (exact vectors
        over the chat's chunks outside the window, fused with keywords, tavern.memory.fusion),
        and their results are taken in turns (each query's best, then each one's second...):
        one long query mixing the user's question with the previous reply found the reply's
        small talk rather than the answer to the question."""
        s = self.settings
        queries = [q for q in queries if q.strip()]
        if not (self.enabled and s.recall) or s.top_k <= 0 or window_start <= 0 or not queries:
            return []
        key = (chat_id(session), len(session.chat), tuple(queries), window_start)
        if self._recall_cache and self._recall_cache[0] == key:
            return self._recall_cache[1]
        try:
            human = chat_id(session)
            if human not in self._synced:  # an imported or long-closed chat: index the rest too
                self._synced.add(human)
                self._submit("full", human)
            # What the prompt needs now is what left the window, indexed already; a burst of
            # new messages (a paste, an import) waits for the background, bounded here.
            if self.sync_tail(session, limit=RECALL_CHUNKS):
                self._submit("tail", human)
            vectors = self._query_vectors(queries)
            ranked = [self._search(human, v, q, s.top_k, window_start, True) for q, v in zip(queries, vectors)]
        except Exception as err:  # Chroma or the model failed: recall is off, the chat goes on
            self._fail(err)
            return []
        picked: list[Recalled] = []
        seen: set[str] = set()
        used = 0
        for rank in range(s.top_k):
            for hits in ranked:
                if rank >= len(hits) or len(picked) >= s.top_k:
                    continue
                hit = hits[rank]
                if (hit.score < s.score_threshold and not hit.keyword) or hit.id in seen:
                    continue
                cost = count(hit.text)
                if used + cost > s.token_cap:
                    continue
                seen.add(hit.id)
                used += cost
                picked.append(Recalled(hit.text, hit.index, hit.score))
        picked.sort(key=lambda r: r.index)
        self._recall_cache = (key, picked)
        return picked

    def _query_vectors(self, queries: list[str]) -> list[list[float]]:
        """The queries' vectors: those just indexed as chunks are reused, the rest embedded."""
        with self._fresh_lock:
            known = {q: self._fresh[q][1] for q in queries if q in self._fresh}
        missing = [q for q in dict.fromkeys(queries) if q not in known]
        if missing:
            known.update(zip(missing, self.embedder.embed(missing)))
        return [known[q] for q in queries]

    def embed_cached(self, texts: list[str]) -> list[list[float]]:
        """Vectors for short texts used again and again (lore entries, the latest messages)."""
        cache = self._vec_cache
        missing = list(dict.fromkeys(t for t in texts if t not in cache))
        if missing:
            for text, vec in zip(missing, self.embedder.embed(missing)):
                cache[text] = vec
            while len(cache) > 4096:
                cache.pop(next(iter(cache)))
        return [cache[t] for t in texts]

    # -- summary ----------------------------------------------------------------------------

    def schedule_summary(self, session: SummarySource, window_start: int) -> None:
        """After a reply: summarize what left the window, in the background."""
        from tavern.memory.summary import summary_due

        if not (self.settings.enabled and self.settings.summary):
            return
        if summary_due(session, window_start, self.settings):
            self._submit("summary", chat_id(session), (session, window_start))
