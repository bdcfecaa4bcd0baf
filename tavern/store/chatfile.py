"""One chat: a SillyTavern JSONL file, opened lazily and saved crash-safely.

`ChatStore` (chatstore.py) opens and creates these; the session layer reads messages from them
and calls `append` / `replace` / `delete` / `set_metadata` as the user chats. Nothing else
writes chat files.

How a chat is kept safe:
- New messages are appended with O_APPEND and fsync; `append` returns only once the line is
  on disk. A streaming reply is not written until it is finished (or cancelled); its growing
  text may go to a `<chat>.jsonl.partial` sidecar (`begin_reply` / `update_partial`), which a
  kill cannot use to damage the chat file.
- Anything else (edit, delete, swipe on an old message, metadata) rewrites the file through a
  temp file, fsync and rename, after hard-linking the previous version into
  `<home>/backups/chats/<character>/<chat>/` (the last `keep_backups` are kept).
- On open, a line cut short by a crash or otherwise unreadable is copied to
  `<chat>.jsonl.rescued` (appended, never overwritten) and the file is repaired by a rewrite;
  `warnings` says so. A complete line is never dropped.
- A failed write (full disk, read-only file) raises ChatWriteError with one line for the user;
  the message stays in memory (`pending`) and `flush()` retries. The file is left as it was.
- Before each write the file's identity (inode, size, mtime) is checked: if another program
  changed it since we read it, ChatChangedError is raised rather than overwriting its work.

Large chats: opening reads the file once and indexes line offsets (`jsonl.py`); a message is
parsed from JSON only when it is asked for (`chat[i]`, `tail(n)`), and a rewrite copies
untouched lines as the bytes they are. The sidecar files are `sidecars.py`'s.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import overload

from tavern.errors import ChatStoreError
from tavern.store import sidecars
from tavern.store.atomic import (
    append_bytes_durable,
    describe_os_error,
    replace_durable,
    stray_temp_files,
    write_temp,
)
from tavern.store.errors import ChatChangedError, ChatReadOnlyError, ChatWriteError
from tavern.store.jsonl import (
    ChatFileLines,
    Line,
    chat_stem,
    encode_message,
    file_chunks,
    read_chat_file,
    read_file,
    read_message,
    same_json,
    unreadable_placeholder,
)
from tavern.store.message import ChatMessage, encode_line
from tavern.store.sidecars import ReplyDraft

ChatListener = Callable[["Chat", str, int], None]


class Chat:
    """An open chat file. Index it like a list of ChatMessage (each access returns a fresh
    object; change a message by passing it to `replace`). Not thread-safe: use one Chat from
    one thread at a time (the session's generation worker, say)."""

    # Seconds between two writes of the streaming sidecar.
    partial_interval = 0.25

    def __init__(
        self,
        path: Path,
        read: ChatFileLines,
        *,
        character_key: str,
        read_only: bool,
        backup_dir: Path | None,
        keep_backups: int,
    ) -> None:
        self.path = path
        self.header = read.header
        self.character_key = character_key
        self.read_only = read_only
        self.backup_dir = backup_dir
        self.keep_backups = keep_backups
        self.warnings: list[str] = list(read.warnings)
        # Called as fn(chat, kind, index) after each change of the messages is saved (kind:
        # append, replace, insert, delete, truncate): the one place long-term memory hears of
        # edits, wherever they come from.
        self.listeners: list[ChatListener] = []
        self.reloads = 0
        """How often the file was re-read after another program changed it (a view redraws)."""
        # A reply that was streaming when Tavern last stopped; see `discard_reply`.
        self.recovered_reply: ChatMessage | None = None
        self._lines = read.lines
        self._header_raw = read.header_raw
        self._header_saved = self.header.to_json() if read.header_raw is not None else None
        self._needs_rewrite = read.needs_rewrite
        self._disk: tuple[int, int, int] | None = None
        self._reply = ReplyDraft()
        # Lines found damaged on open, waiting to be set aside: (raw bytes, why).
        self._corrupt = read.corrupt

    # ----------------------------------------------------------------------------- opening

    @classmethod
    def open(
        cls,
        path: Path | str,
        *,
        character_key: str | None = None,
        read_only: bool = False,
        backup_dir: Path | None = None,
        keep_backups: int = 3,
    ) -> Chat:
        """Open a chat file, repairing a torn or corrupted line unless `read_only`."""
        path = Path(path)
        data, st = read_file(path)
        key = character_key or path.parent.name
        read = read_chat_file(path, data, character_key=key, mtime=st.st_mtime)
        chat = cls(
            path,
            read,
            character_key=key,
            read_only=read_only,
            backup_dir=backup_dir,
            keep_backups=keep_backups,
        )
        chat._disk = (st.st_ino, st.st_size, st.st_mtime_ns)
        if not read_only:
            chat._clean_stray_temp_files()
        chat._recover_partial()
        if chat._corrupt and read_only:
            chat.warnings.extend(f"{reason}; not repaired (read-only)" for _, reason in chat._corrupt)
            chat._drop_corrupt_lines()
        elif chat._corrupt:
            chat._set_aside_and_repair()
        elif chat._needs_rewrite and not read_only:
            chat._repair_quietly()
        return chat

    def _drop_corrupt_lines(self) -> None:
        """Leave the damaged lines out of the chat (they are set aside, or we only read)."""
        damaged = {id(line) for line, _ in self._corrupt}
        self._lines = [line for line in self._lines if id(line) not in damaged]

    def _set_aside_and_repair(self) -> None:
        try:
            rescued = sidecars.append_rescued(self.path, [line.raw() for line, _ in self._corrupt])
        except OSError as err:
            # Without a safe copy elsewhere the lines must stay in the file: they stay in place
            # as unreadable placeholders, written back verbatim by every rewrite.
            for _, reason in self._corrupt:
                self.warnings.append(
                    f"{reason}; it could not be set aside ({describe_os_error(err)}) and stays in the file"
                )
            self._corrupt = []
            return
        for _, reason in self._corrupt:
            self.warnings.append(f"{reason}; it was set aside in {rescued.name}")
        self._drop_corrupt_lines()
        self._corrupt = []
        self._needs_rewrite = True
        self._repair_quietly()

    def _repair_quietly(self) -> None:
        """Rewrite a damaged file now; on failure keep going and retry on the next write."""
        try:
            self._rewrite()
        except ChatStoreError as err:
            self.warnings.append(f"could not repair {self.path.name} yet: {err}")

    def _clean_stray_temp_files(self) -> None:
        for stray in [*stray_temp_files(self.path), *stray_temp_files(self.partial_path)]:
            try:
                stray.unlink()
            except OSError:
                pass

    # ----------------------------------------------------------------------------- reading

    @property
    def name(self) -> str:
        """The file name without `.jsonl`: SillyTavern's chat name."""
        return chat_stem(self.path)

    @property
    def rescued_path(self) -> Path:
        return sidecars.rescued_path(self.path)

    @property
    def partial_path(self) -> Path:
        return sidecars.partial_path(self.path)

    def __len__(self) -> int:
        return len(self._lines)

    @overload
    def __getitem__(self, index: int) -> ChatMessage: ...

    @overload
    def __getitem__(self, index: slice) -> list[ChatMessage]: ...

    def __getitem__(self, index: int | slice) -> ChatMessage | list[ChatMessage]:
        if isinstance(index, slice):
            return [self._message(i) for i in range(*index.indices(len(self._lines)))]
        return self._message(self._index(index))

    def __iter__(self) -> Iterator[ChatMessage]:
        for i in range(len(self._lines)):
            yield self._message(i)

    def tail(self, n: int) -> list[ChatMessage]:
        """The last `n` messages, oldest first (what a chat screen shows first)."""
        return [self._message(i) for i in range(max(0, len(self._lines) - n), len(self._lines))]

    def messages(self) -> list[ChatMessage]:
        """Every message; parses the whole chat."""
        return list(self)

    def verify(self) -> list[int]:
        """Parse every line now; return the indexes of unreadable ones (also in `warnings`)."""
        for i in range(len(self._lines)):
            self._message(i)
        return [i for i, line in enumerate(self._lines) if line.unreadable]

    def is_unreadable(self, index: int) -> bool:
        """True when message `index` is a placeholder for a line that could not be parsed."""
        line = self._lines[self._index(index)]
        if not line.unreadable:
            self._message(self._index(index))
        return line.unreadable

    def _index(self, index: int) -> int:
        size = len(self._lines)
        if not -size <= index < size:
            raise IndexError(f"chat {self.name!r} has {size} messages, no message {index}")
        return index % size

    def _message(self, i: int) -> ChatMessage:
        line = self._lines[i]
        raw = line.raw()
        if not line.unreadable:
            try:
                return read_message(raw)
            except (ValueError, RecursionError, ChatStoreError):
                line.unreadable = True
                self.warnings.append(
                    f"message {i + 1} of {self.path.name} is unreadable; it is kept unchanged in the file"
                )
        return unreadable_placeholder(raw)

    # ----------------------------------------------------------------------------- state

    @property
    def pending(self) -> list[ChatMessage]:
        """Messages added or changed in memory that are not on disk yet (after a failed write)."""
        return [self._message(i) for i, line in enumerate(self._lines) if not line.saved]

    @property
    def unsaved(self) -> bool:
        """True while anything in memory differs from the file; `flush()` saves it."""
        return self._needs_rewrite or self._header_changed() or any(not line.saved for line in self._lines)

    def _header_changed(self) -> bool:
        return self._header_saved is None or self.header.to_json() != self._header_saved

    # ----------------------------------------------------------------------------- writing

    def append(self, msg: ChatMessage) -> int:
        """Add a message at the end and make it durable; returns its index.

        An empty `send_date` is filled with now. On a write error the message stays in the
        chat (`pending`) and ChatWriteError is raised; `flush()` retries.
        """
        self._check_writable()
        self._lines.append(Line.own(self._encode(msg)))
        try:
            self._save()
        except ChatChangedError:
            # Another program wrote the file meanwhile: take its version and append after it.
            if not self.reload():
                raise
            self._save()
        self._notify("append", len(self._lines) - 1)
        return len(self._lines) - 1

    def replace(self, index: int, msg: ChatMessage) -> None:
        """Put `msg` in place of message `index` (an edit, a swipe) and rewrite the file."""
        self._check_writable()
        i = self._current(index)
        raw = self._encode(msg)
        old = self._lines[i]
        if not old.unreadable and old.saved and same_json(old.raw(), raw):
            return
        self._rescue([old])
        self._lines[i] = Line.own(raw)
        self._needs_rewrite = True
        self._save()
        self._notify("replace", i)

    def insert(self, index: int, msg: ChatMessage) -> None:
        """Insert a message before `index` (len(chat) appends) and rewrite the file."""
        self._check_writable()
        if index == len(self._lines):
            self.append(msg)
            return
        self._lines.insert(self._current(index), Line.own(self._encode(msg)))
        self._needs_rewrite = True
        self._save()
        self._notify("insert", index)

    def delete(self, index: int) -> None:
        """Remove message `index` and rewrite the file (the old file goes to the backups)."""
        self._check_writable()
        i = self._current(index)
        self._rescue([self._lines[i]])
        del self._lines[i]
        self._needs_rewrite = True
        self._save()
        self._notify("delete", i)

    def truncate(self, count: int) -> None:
        """Keep the first `count` messages, removing the rest."""
        self._check_writable()
        if count >= len(self._lines):
            return
        self._rescue(self._lines[max(0, count) :])
        del self._lines[max(0, count) :]
        self._needs_rewrite = True
        self._save()
        self._notify("truncate", count)

    def _current(self, index: int) -> int:
        """Where message `index` (as this chat shows it) is in the file as it is now.

        Another program (a second Tavern, an editor, SillyTavern) may have written the file
        since we read it: an edit must not fail on that, nor overwrite its work. So the file is
        read again and the message looked up by its bytes: at the same place (messages appended
        after it), or wherever its one copy now is (messages removed before it). Only a message
        that was itself changed or removed is a conflict. When the file cannot be re-read here
        (unsaved edits in memory), the save's own check raises ChatChangedError as before.
        """
        i = self._index(index)
        if self._disk is None or self.matches_disk():
            return i
        seen = self._lines[i].raw()
        if not self.reload():
            return i
        if i < len(self._lines) and self._lines[i].raw() == seen:
            return i
        found = [j for j, line in enumerate(self._lines) if line.raw() == seen]
        if len(found) == 1:
            return found[0]
        raise ChatChangedError(
            f"chat '{self.name}': message {i + 1} was changed by another program meanwhile; "
            "the chat was reloaded, nothing was lost: make the change again"
        )

    def _notify(self, kind: str, index: int) -> None:
        for listener in list(self.listeners):
            listener(self, kind, index)

    def set_metadata(self, **values: object) -> None:
        """Set chat_metadata keys (author's note, variables, chat lorebook...) and save."""
        self.update_metadata(values)

    def update_metadata(self, values: Mapping[str, object]) -> None:
        """Merge `values` into chat_metadata and save (the header is line 1: a rewrite)."""
        self._check_writable()
        self.header.chat_metadata.update(copy.deepcopy(values))
        try:
            self._save()
        except ChatChangedError:
            if not self.reload(keep_header=False):
                raise
            self.header.chat_metadata.update(copy.deepcopy(values))
            self._save()

    def reload(self, keep_header: bool = True) -> bool:
        """Read the file again after another program changed it, keeping the messages
        appended here and not saved yet (they go after what the file now holds). False, and
        nothing changes, when an edit in memory cannot be replayed on the new file (an edited
        or deleted message; unsaved metadata unless `keep_header` is False) or the file is gone."""
        if self._needs_rewrite or (keep_header and self._header_changed()):
            return False
        pending = [line for line in self._lines if not line.saved]
        try:
            fresh = Chat.open(self.path, character_key=self.character_key, read_only=True)
        except ChatStoreError:
            return False
        self._lines = fresh._lines + pending
        self.header = fresh.header
        self._header_raw = fresh._header_raw
        self._header_saved = fresh._header_saved
        self._needs_rewrite = fresh._needs_rewrite
        self._disk = fresh._disk
        self.warnings.append(f"chat '{self.name}' was changed by another program: reloaded")
        self.reloads += 1
        return True

    def remove_metadata(self, *keys: str) -> None:
        """Remove chat_metadata keys and save."""
        self._check_writable()
        for key in keys:
            self.header.chat_metadata.pop(key, None)
        self._save()

    def flush(self) -> None:
        """Write whatever a failed write left in memory; a no-op when all is saved."""
        self._check_writable()
        if self.unsaved:
            self._save()
        elif self._reply.stale:
            self._reply.remove(self.partial_path)

    # ----------------------------------------------------------------------- streaming

    def begin_reply(self, msg: ChatMessage) -> None:
        """Start a streaming reply: `msg` is kept in a sidecar, never in the chat file."""
        self._check_writable()
        # An empty send_date is filled when the reply is appended: SillyTavern dates a reply
        # by when it finished.
        self._reply.begin(msg)
        self._write_partial(force=True)

    def update_partial(self, text: str) -> None:
        """The streaming reply's text so far; written to the sidecar at most every
        `partial_interval` seconds."""
        if self._reply.message is None:
            raise ChatStoreError("no reply is streaming; call begin_reply first")
        self._reply.message.mes = text
        self._write_partial()

    def finish_reply(self, msg: ChatMessage | None = None) -> ChatMessage:
        """Append the finished (or cancelled, partial) reply: `msg`, or the streamed one."""
        final = msg if msg is not None else self._reply.message
        if final is None:
            raise ChatStoreError("no reply is streaming; nothing to finish")
        self._reply.message = None
        self._reply.stale = True
        index = self.append(final)  # on failure the sidecar stays: a crash still recovers it
        self._reply.remove(self.partial_path)
        return self._message(index)

    def discard_reply(self) -> None:
        """Drop the streaming reply (or the one recovered on open) and its sidecar."""
        self._reply.message = None
        self.recovered_reply = None
        if not self.read_only:
            self._reply.remove(self.partial_path)

    def _write_partial(self, force: bool = False) -> None:
        # `index` is where the reply will go: if the chat already has a message there on the
        # next open, the kill came after the append and the sidecar is stale.
        self._reply.write(self.partial_path, len(self._lines), self.partial_interval, force=force)

    def _recover_partial(self) -> None:
        try:
            raw = self.partial_path.read_bytes()
        except OSError:
            return
        found = sidecars.read_partial(raw)
        if found is None:
            self.warnings.append(f"{self.partial_path.name} holds an unreadable unfinished reply")
            return
        reply, index = found
        if not reply.mes or index < len(self._lines):
            # Stopped before the first token, or after the finished reply was appended.
            if not self.read_only:
                self._reply.remove(self.partial_path)
            return
        self.recovered_reply = reply
        self.warnings.append(
            "a reply that was still being written when Tavern stopped was recovered "
            f"({len(self.recovered_reply.mes)} characters)"
        )

    # ----------------------------------------------------------------------- internals

    def _check_writable(self) -> None:
        if self.read_only:
            raise ChatReadOnlyError(
                f"chat '{self.name}' is open read-only (another Tavern is using this data home); "
                "nothing was saved"
            )

    def _encode(self, msg: ChatMessage) -> bytes:
        return encode_message(msg)

    def _save(self) -> None:
        if self._needs_rewrite or self._header_changed():
            self._rewrite()
            return
        first = len(self._lines)
        while first > 0 and not self._lines[first - 1].saved:
            first -= 1
        if first == len(self._lines):
            return
        self._check_disk()
        payload = b"".join(line.raw() + b"\n" for line in self._lines[first:])
        old_size = self._disk[1] if self._disk else None
        try:
            append_bytes_durable(self.path, payload, create=False)
        except OSError as err:
            # The failed append was cut back, which still moved the file's mtime: the file is
            # ours as before. Should the cut have failed too, the next save rewrites it whole.
            self._after_write()
            if self._disk is None or self._disk[1] != old_size:
                self._needs_rewrite = True
            raise self._write_error(err) from err
        for line in self._lines[first:]:
            line.saved = True
        self._after_write()

    def _rewrite(self) -> None:
        self._check_disk()
        header, header_raw = self._header_line()
        try:
            tmp = write_temp(self.path, file_chunks(header_raw, self._lines))
        except OSError as err:
            self._needs_rewrite = True
            raise self._write_error(err) from err
        backup = self._backup()
        try:
            replace_durable(tmp, self.path)
        except OSError as err:
            if backup is not None:
                backup.unlink(missing_ok=True)
            self._needs_rewrite = True
            raise self._write_error(err) from err
        self._needs_rewrite = False
        self._header_raw = header_raw
        self._header_saved = header
        for line in self._lines:
            line.saved = True
        self._after_write()

    def to_bytes(self) -> bytes:
        """The chat as a JSONL file, as it is in memory (saved or not)."""
        return b"".join(file_chunks(self._header_line()[1], self._lines))

    def _header_line(self) -> tuple[dict[str, object], bytes]:
        """The header's JSON and its line: the bytes read while it is unchanged."""
        header = self.header.to_json()
        if self._header_raw is not None and header == self._header_saved:
            return header, self._header_raw
        return header, encode_line(header)

    def matches_disk(self) -> bool:
        """True when everything is saved and the file is still the one we wrote or read."""
        if self.unsaved or self._corrupt:
            return False
        try:
            st = os.stat(self.path)
        except OSError:
            return False
        return (st.st_ino, st.st_size, st.st_mtime_ns) == self._disk

    def _backup(self) -> Path | None:
        """Keep the file about to be replaced: a hard link (free), else a copy."""
        if self.backup_dir is None or self.keep_backups <= 0:
            return None
        try:
            return sidecars.keep_backup(self.path, self.backup_dir / self.name, self.keep_backups)
        except OSError as err:
            self.warnings.append(f"could not back up {self.path.name}: {describe_os_error(err)}")
            return None

    def _rescue(self, lines: list[Line]) -> None:
        """Copy unreadable lines to the rescued sidecar before they leave the file."""
        unreadable = [line.raw() for line in lines if line.unreadable and line.saved]
        if not unreadable:
            return
        try:
            sidecars.append_rescued(self.path, unreadable)
        except OSError as err:
            raise self._write_error(err) from err

    def _check_disk(self) -> None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            raise ChatChangedError(
                f"chat '{self.name}' is gone from disk ({self.path}); unsaved messages are kept in memory"
            ) from None
        except OSError as err:
            raise self._write_error(err) from err
        if self._disk is not None and (st.st_ino, st.st_size, st.st_mtime_ns) != self._disk:
            raise ChatChangedError(
                f"chat '{self.name}' was changed on disk by another program since Tavern read it; "
                "reopen it before saving (unsaved messages are kept in memory)"
            )

    def _after_write(self) -> None:
        try:
            st = os.stat(self.path)
            self._disk = (st.st_ino, st.st_size, st.st_mtime_ns)
        except OSError:
            self._disk = None
        if self._reply.stale and self._reply.message is None:
            self._reply.remove(self.partial_path)

    def _write_error(self, err: OSError) -> ChatWriteError:
        pending = any(not line.saved for line in self._lines)
        return ChatWriteError.saving(err, self.name, self.path.parent, pending)

    def __repr__(self) -> str:
        return f"<Chat {self.character_key}/{self.name} ({len(self)} messages)>"
