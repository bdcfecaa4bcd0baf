"""Messages to indexable chunks, and the stable keys that identify them in a collection.

A message is identified by a hash of its speaker and text (plus an occurrence number when the
same text appears twice), not by its position: deleting message 5 of a long chat shifts every
later index, but their keys stay, so the index only updates their `index` metadata instead of
embedding them again. Long messages are split at paragraph, then sentence, boundaries so that
each chunk stays within what MiniLM reads (256 word pieces; ~1,000 characters is safely under).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

MAX_CHARS = 900
MAX_CHUNKS = 64
"""Chunks indexed of one message (about 57,000 characters): a longer one (a pasted book, a
hostile 10 MB message) is recalled by its start; embedding it whole took 20 minutes on a CPU."""
_SENTENCE_END = re.compile(r"(?<=[.!?…])\s+")


@dataclass(frozen=True)
class Chunk:
    key: str
    """The message's key (shared by all its chunks)."""
    part: int
    index: int
    """The message's position in the chat when indexed."""
    name: str
    text: str
    """The chunk's text, as stored (and recalled): 'Name: words'."""

    @property
    def id(self) -> str:
        return f"{self.key}.{self.part}"


@dataclass(frozen=True)
class MessageRef:
    index: int
    name: str
    text: str


def message_key(name: str, text: str) -> str:
    return hashlib.blake2b(f"{name}\x1f{text}".encode(), digest_size=10).hexdigest()


def keyed(messages: Iterable[MessageRef], seen: dict[str, int] | None = None) -> list[tuple[str, MessageRef]]:
    """(key, message) pairs; a repeated text gets '~2', '~3'... so every key is unique.
    `seen` carries the occurrence counts across calls (for incremental indexing)."""
    seen = {} if seen is None else seen
    out = []
    for m in messages:
        base = message_key(m.name, m.text)
        n = seen.get(base, 0) + 1
        seen[base] = n
        out.append((base if n == 1 else f"{base}~{n}", m))
    return out


def split_text(text: str, limit: int = MAX_CHARS) -> list[str]:
    """Pieces of at most `limit` characters, cut at paragraphs, then sentences, then words."""
    text = text.strip()
    if len(text) <= limit:
        return [text] if text else []
    pieces: list[str] = []
    for para in (p.strip() for p in text.split("\n")):
        if not para:
            continue
        units = _SENTENCE_END.split(para) if len(para) > limit else [para]
        for unit in units:
            while len(unit) > limit:  # a run-on sentence: cut at the last space before the limit
                cut = unit.rfind(" ", 0, limit)
                cut = cut if cut > limit // 2 else limit
                pieces.append(unit[:cut].strip())
                unit = unit[cut:].strip()
            if unit:
                pieces.append(unit)
    # Merge small neighbours back up to the limit: fewer, fuller chunks embed better.
    merged: list[str] = []
    for piece in pieces:
        if merged and len(merged[-1]) + 1 + len(piece) <= limit:
            merged[-1] = f"{merged[-1]} {piece}"
        else:
            merged.append(piece)
    return merged


def chunk_message(key: str, message: MessageRef, limit: int = MAX_CHARS) -> list[Chunk]:
    prefix = f"{message.name}: " if message.name else ""
    # Only the start that can fill MAX_CHUNKS is split (twice that, for the merging's slack):
    # the split of a 10 MB message would cost more than it is worth and is thrown away anyway.
    text = message.text[: 2 * MAX_CHUNKS * limit]
    pieces = split_text(text, limit - len(prefix))[:MAX_CHUNKS]
    return [Chunk(key, part, message.index, message.name, prefix + piece) for part, piece in enumerate(pieces)]


def chunks_for(pairs: Sequence[tuple[str, MessageRef]]) -> list[Chunk]:
    return [c for key, m in pairs for c in chunk_message(key, m)]
