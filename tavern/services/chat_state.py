"""`ChatState`: which chat of each character was opened last, and each chat's unsent text.

SillyTavern remembers the last opened chat in the character card's top-level `chat` field and
keeps what was typed in the input while the page lives. Tavern keeps both in one small file of
the data home, `chat_state.json`, so that neither a card nor a chat file changes when a chat is
merely opened (SillyTavern reads those files too):

    {"last_opened": {"<character key>": "<chat name>"},
     "drafts": {"<character key>": {"<chat name>": "<unsent text>"}}}

`last_opened` is written when a chat is opened; drafts live in memory and are written by
`save` (the TUI calls it when a chat screen closes). A missing, unreadable or malformed file is
an empty state: it is a convenience, never a reason to refuse a chat.
"""

from __future__ import annotations

import json
from pathlib import Path

from tavern.errors import ChatStoreError

FILE_NAME = "chat_state.json"
MAX_FILE_BYTES = 8 << 20
"""A state file larger than this is not read (it is then rewritten from what this run keeps)."""
MAX_DRAFT_CHARS = 1 << 20
"""A longer draft stays in memory for this run but is not written."""


class ChatState:
    def __init__(self, path: Path, read_only: bool = False) -> None:
        self.path = path
        self.read_only = read_only
        self._last: dict[str, str] = {}
        self._drafts: dict[str, dict[str, str]] = {}
        self._loaded = False
        self._dirty = False

    # -- the last opened chat ----------------------------------------------------------------------

    def last_opened(self, key: str) -> str | None:
        self._load()
        return self._last.get(key)

    def opened(self, key: str, chat_name: str) -> None:
        """Remember `chat_name` as the character's last opened chat (written now)."""
        self._load()
        if self._last.get(key) == chat_name:
            return
        self._last[key] = chat_name
        self._dirty = True
        self.save()

    # -- drafts ------------------------------------------------------------------------------------

    def draft(self, key: str, chat_name: str) -> str:
        self._load()
        return self._drafts.get(key, {}).get(chat_name, "")

    def keep_draft(self, key: str, chat_name: str, text: str) -> None:
        """Keep the unsent text of a chat in memory ("" forgets it); `save` writes it."""
        self._load()
        drafts = self._drafts.get(key, {})
        if drafts.get(chat_name, "") == text:
            return
        if text:
            self._drafts[key] = {**drafts, chat_name: text}
        else:
            drafts.pop(chat_name, None)
            if not drafts:
                self._drafts.pop(key, None)
        self._dirty = True

    # -- chats renamed or deleted ------------------------------------------------------------------

    def renamed(self, key: str, old: str, new: str) -> None:
        self._load()
        changed = False
        if self._last.get(key) == old:
            self._last[key] = new
            changed = True
        drafts = self._drafts.get(key, {})
        if old in drafts:
            drafts[new] = drafts.pop(old)
            changed = True
        if changed:
            self._dirty = True
            self.save()

    def forget(self, key: str, chat_name: str) -> None:
        self._load()
        changed = self._last.get(key) == chat_name or chat_name in self._drafts.get(key, {})
        if self._last.get(key) == chat_name:
            del self._last[key]
        self._drafts.get(key, {}).pop(chat_name, None)
        if changed:
            self._dirty = True
            self.save()

    # -- the file ----------------------------------------------------------------------------------

    def save(self) -> None:
        """Write the state if it changed. Raises ChatStoreError (one line) when it cannot."""
        if not self._dirty or self.read_only:
            return
        from tavern.store.atomic import atomic_write_text, describe_os_error

        drafts = {
            key: {name: text for name, text in chats.items() if len(text) <= MAX_DRAFT_CHARS}
            for key, chats in self._drafts.items()
        }
        data = {"last_opened": self._last, "drafts": {k: v for k, v in drafts.items() if v}}
        try:
            # Not fsynced: losing the last second of UI state in a crash costs nothing.
            atomic_write_text(self.path, json.dumps(data, ensure_ascii=False, indent=1), durable=False)
        except OSError as err:
            raise ChatStoreError(f"could not save {self.path.name}: {describe_os_error(err)}") from err
        self._dirty = False

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        try:
            with open(self.path, "rb") as fh:
                raw = fh.read(MAX_FILE_BYTES + 1)
        except OSError:
            return
        if len(raw) > MAX_FILE_BYTES:
            return
        try:
            data = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            return
        if not isinstance(data, dict):
            return
        self._last = _strings(data.get("last_opened"))
        drafts = data.get("drafts")
        if isinstance(drafts, dict):
            for key, chats in drafts.items():
                kept = _strings(chats)
                if isinstance(key, str) and kept:
                    self._drafts[key] = kept


def _strings(value: object) -> dict[str, str]:
    """The string-to-string entries of a JSON object (anything else in it is dropped)."""
    if not isinstance(value, dict):
        return {}
    return {k: v for k, v in value.items() if isinstance(k, str) and isinstance(v, str)}
