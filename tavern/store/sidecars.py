"""The files kept beside a chat file: the streaming reply, lines set aside, old versions.

`chatfile.Chat` is the only caller; `chatstore.ChatStore` moves the sidecars with their chat.

- `<chat>.jsonl.partial`: the text of a reply while it streams, so a kill loses at most a
  quarter second of it; it holds the index the reply will take, which tells on the next open
  whether the reply was appended before the kill.
- `<chat>.jsonl.rescued`: lines that were unreadable when they left the chat file (set aside on
  open, or edited or deleted), appended, never overwritten.
- `<home>/backups/chats/<character>/<chat>/<timestamp>.jsonl`: the file as it was before each
  rewrite, the last few kept.
"""

from __future__ import annotations

import copy
import json
import os
import time
from datetime import datetime
from pathlib import Path

from tavern.errors import ChatStoreError
from tavern.store.atomic import append_bytes_durable, atomic_write_bytes, copy_file, make_dirs
from tavern.store.message import ChatMessage, encode_line

PARTIAL_SUFFIX = ".partial"
RESCUED_SUFFIX = ".rescued"


def partial_path(chat_path: Path) -> Path:
    return chat_path.with_name(chat_path.name + PARTIAL_SUFFIX)


def rescued_path(chat_path: Path) -> Path:
    return chat_path.with_name(chat_path.name + RESCUED_SUFFIX)


class ReplyDraft:
    """The reply being streamed and its `.partial` sidecar, which only ever holds a copy."""

    def __init__(self) -> None:
        self.message: ChatMessage | None = None
        self.stale = False
        """The sidecar may hold a reply the chat file has now: remove it at the next chance."""
        self._written = 0.0

    def begin(self, msg: ChatMessage) -> None:
        self.message = copy.deepcopy(msg)
        self._written = 0.0

    def write(self, path: Path, index: int, interval: float, *, force: bool = False) -> None:
        """Write the sidecar, at most every `interval` seconds unless `force`."""
        now = time.monotonic()
        if self.message is None or (not force and now - self._written < interval):
            return
        self._written = now
        try:
            write_partial(path, index, self.message)
            self.stale = False
        except OSError:
            pass  # losing the draft of a streaming reply is acceptable; the chat is untouched

    def remove(self, path: Path) -> None:
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        except OSError:
            return
        self.stale = False


def write_partial(path: Path, index: int, reply: ChatMessage) -> None:
    """Keep the streaming reply that will become message `index`; raises OSError.

    No fsync: the sidecar only has to survive the process, not a power cut.
    """
    record = {"tavern_partial": 1, "index": index, "message": reply.to_json()}
    atomic_write_bytes(path, encode_line(record), durable=False)


def read_partial(raw: bytes) -> tuple[ChatMessage, int] | None:
    """The reply a sidecar's bytes hold and the index it was to take; None when unreadable."""
    try:
        record: object = json.loads(raw)
        if not isinstance(record, dict):
            return None
        reply = ChatMessage.from_json(record["message"])
        index = record["index"]
        if not isinstance(index, str | int | float):
            return None  # null, a list, an object: int() refuses it
        return reply, int(index)
    except (ValueError, TypeError, KeyError, OverflowError, RecursionError, ChatStoreError):
        return None  # OverflowError: an index of Infinity


def append_rescued(chat_path: Path, raws: list[bytes]) -> Path:
    """Append lines to the chat's rescued sidecar and make them durable; raises OSError."""
    target = rescued_path(chat_path)
    append_bytes_durable(target, b"".join(raw + b"\n" for raw in raws))
    return target


def keep_backup(chat_path: Path, folder: Path, keep: int) -> Path:
    """Keep the file about to be replaced in `folder`: a hard link (free), else a copy; only
    the newest `keep` stay. Raises OSError."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    make_dirs(folder)
    target = folder / f"{stamp}.jsonl"
    n = 1
    while target.exists():
        n += 1
        target = folder / f"{stamp}-{n}.jsonl"
    try:
        os.link(chat_path, target)
    except OSError:
        copy_file(chat_path, target)
    for old in sorted(folder.glob("*.jsonl"))[:-keep]:
        old.unlink(missing_ok=True)
    return target
