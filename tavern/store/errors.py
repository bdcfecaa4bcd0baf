"""The chat store's errors, each with a line the user can act on.

Raised by `chatfile.Chat` and `chatstore.ChatStore`; all are ChatStoreError (tavern.errors), so a
front that shows a TavernError's message shows these too.
"""

from __future__ import annotations

import errno as errnos
from pathlib import Path

from tavern.errors import ChatStoreError, NotFoundError
from tavern.store.atomic import describe_os_error


class ChatWriteError(ChatStoreError):
    """Saving failed (full disk, unwritable file...); the change is kept in memory."""

    def __init__(self, message: str, errno: int | None = None, on_exit: str = "") -> None:
        super().__init__(message)
        self.errno = errno
        self.on_exit = on_exit or message
        """The same failure said by a process that exits now (the CLI): nothing stays in memory,
        so it says what was not saved and what to fix before trying again."""

    @classmethod
    def saving(cls, err: OSError, chat_name: str, folder: Path, message_pending: bool) -> ChatWriteError:
        """A failed save of chat `chat_name` in `folder`: what failed, what is kept, what to fix.
        `message_pending`: a message (not some other change) is what was not saved."""
        what = "the message is" if message_pending else "the change is"
        if err.errno in (errnos.ENOSPC, errnos.EDQUOT, errnos.EFBIG):
            fix = "free some space"
        elif err.errno in (errnos.EACCES, errnos.EPERM, errnos.EROFS):
            fix = f"make {folder} writable"
        else:
            fix = "fix the problem"
        head = f"could not save chat '{chat_name}': {describe_os_error(err)}"
        unsaved = "the message was" if message_pending else "the change was"
        return cls(
            f"{head}; {what} kept in memory, {fix}, then save again",
            err.errno,
            on_exit=f"{head}; {unsaved} not saved: {fix}, then run the command again",
        )


class ChatReadOnlyError(ChatStoreError):
    """The chat was opened read-only (another Tavern holds the data home)."""


class ChatChangedError(ChatStoreError):
    """The file changed on disk behind our back; reopen the chat before writing again."""


class ChatNotFoundError(NotFoundError, ChatStoreError):
    title = "Chat not found"
