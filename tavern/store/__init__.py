"""Tavern's chat store: SillyTavern-compatible JSONL chats that survive crashes and full disks.

- `chat.py`: the public names (ChatStore, Chat, ChatMessage, ChatHeader, dates), re-exported here.
- `atomic.py`: temp-file-and-rename rewrites and fsynced appends, for anything that must never
  be left half written.
- `lock.py`: one Tavern per data home (`acquire_home_lock`).

Pure standard library; importing it costs a few milliseconds.
"""

from tavern.store.chat import (
    Chat,
    ChatChangedError,
    ChatHeader,
    ChatInfo,
    ChatMessage,
    ChatNotFoundError,
    ChatReadOnlyError,
    ChatStore,
    ChatWriteError,
    chat_file_name,
    format_humanized,
    format_iso,
    format_send_date,
    parse_send_date,
)
from tavern.store.lock import HomeLock, HomeLockedError, acquire_home_lock

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
