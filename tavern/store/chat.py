"""The chat store's public face: everything the session layer and the TUI use.

Import from here (or from `tavern.store`): the names are defined in smaller modules
(`message.py` lines, `chatfile.py` one file, `chatstore.py` the folder, `dates.py` dates and
file names) and gathered here so callers depend on one module.
"""

from __future__ import annotations

from tavern.store.chatfile import (
    Chat,
    ChatChangedError,
    ChatNotFoundError,
    ChatReadOnlyError,
    ChatWriteError,
)
from tavern.store.chatstore import ChatInfo, ChatStore
from tavern.store.dates import (
    chat_file_name,
    format_humanized,
    format_iso,
    format_send_date,
    parse_send_date,
)
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
    "chat_file_name",
    "format_humanized",
    "format_iso",
    "format_send_date",
    "parse_send_date",
]
