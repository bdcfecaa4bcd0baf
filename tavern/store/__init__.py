"""Tavern's chat store: SillyTavern-compatible JSONL chats that survive crashes and full disks.

The public names are gathered here, so callers depend on the package: `ChatStore` (the chats
folder, `chatstore.py`), `Chat` (one open file, `chatfile.py`), `ChatMessage` and `ChatHeader`
(its lines, `message.py`), the store's errors (`errors.py`) and dates (`dates.py`).
- `jsonl.py`: a chat file's bytes as lines; `sidecars.py`: the files kept beside a chat.
- `atomic.py`: temp-file-and-rename rewrites and fsynced appends, for anything that must never
  be left half written.
- `lock.py`: one Tavern per data home (`acquire_home_lock`).

Pure standard library; importing it costs a few milliseconds.
"""

from tavern.store.chatfile import Chat
from tavern.store.chatstore import ChatInfo, ChatStore
from tavern.store.dates import (
    chat_file_name,
    format_humanized,
    format_iso,
    format_send_date,
    parse_send_date,
)
from tavern.store.errors import ChatChangedError, ChatNotFoundError, ChatReadOnlyError, ChatWriteError
from tavern.store.lock import HomeLock, HomeLockedError, acquire_home_lock
from tavern.store.message import ChatHeader, ChatMessage

__all__ = [
    "Chat",
    "ChatChangedError",
    "ChatHeader",
    "ChatInfo",
    "ChatMessage",
    "ChatNotFoundError",
    "ChatReadOnlyError",
    "ChatStore",
    "ChatWriteError",
    "HomeLock",
    "HomeLockedError",
    "acquire_home_lock",
    "chat_file_name",
    "format_humanized",
    "format_iso",
    "format_send_date",
    "parse_send_date",
]
