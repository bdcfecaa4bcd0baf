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

Large chats: opening reads the file once and indexes line offsets; a message is parsed from
JSON only when it is asked for (`chat[i]`, `tail(n)`), so opening a 10,000-message chat and
showing its last 40 costs about the same as a small one. Every line gets a cheap shape check
on open (starts with `{`, ends with `}`, no NUL bytes) and the last `TAIL_VERIFY` lines a full
parse; a line that passes the shape check but still fails to parse when first read is shown as
an unreadable placeholder and kept verbatim in the file. Rewrites copy untouched lines as raw
bytes, so an edit costs one sequential write of the file, never a re-encoding of every message.
"""

from __future__ import annotations

import copy
import errno
import json
import os
import re
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, overload

from tavern.errors import ChatStoreError, NotFoundError
from tavern.store.atomic import (
    Chunk,
    append_bytes_durable,
    atomic_write_bytes,
    copy_file,
    describe_os_error,
    make_dirs,
    replace_durable,
    stray_temp_files,
    write_temp,
)
from tavern.store.dates import format_humanized, format_send_date
from tavern.store.message import ChatHeader, ChatMessage, encode_line, looks_like_header

TAIL_VERIFY = 64
PARTIAL_SUFFIX = ".partial"
RESCUED_SUFFIX = ".rescued"
_NEWLINE = re.compile(b"\n")
_BOM = b"\xef\xbb\xbf"


class ChatWriteError(ChatStoreError):
    """Saving failed (full disk, unwritable file...); the change is kept in memory."""

    def __init__(self, message: str, errno: int | None = None, on_exit: str = "") -> None:
        super().__init__(message)
        self.errno = errno
        self.on_exit = on_exit or message
        """The same failure said by a process that exits now (the CLI): nothing stays in memory,
        so it says what was not saved and what to fix before trying again."""


class ChatReadOnlyError(ChatStoreError):
    """The chat was opened read-only (another Tavern holds the data home)."""


class ChatChangedError(ChatStoreError):
    """The file changed on disk behind our back; reopen the chat before writing again."""


class ChatNotFoundError(NotFoundError, ChatStoreError):
    title = "Chat not found"


class _Line:
    """One message line: bytes `buf[start:end]`, shared with the buffer the file was read into."""

    __slots__ = ("buf", "end", "saved", "start", "unreadable")

    def __init__(self, buf: bytes, start: int, end: int, saved: bool = True) -> None:
        self.buf = buf
        self.start = start
        self.end = end
        self.saved = saved
        self.unreadable = False

    @classmethod
    def own(cls, raw: bytes) -> _Line:
        return cls(raw, 0, len(raw), saved=False)

    def raw(self) -> bytes:
        if self.start == 0 and self.end == len(self.buf):
            return self.buf
        return self.buf[self.start : self.end]


class Chat:
    """An open chat file. Index it like a list of ChatMessage (each access returns a fresh
    object; change a message by passing it to `replace`). Not thread-safe: use one Chat from
    one thread at a time (the session's generation worker, say)."""

    # Seconds between two writes of the streaming sidecar.
    partial_interval = 0.25

    def __init__(
        self,
        path: Path,
        header: ChatHeader,
        header_raw: bytes | None,
        lines: list[_Line],
        *,
        character_key: str,
        read_only: bool,
        backup_dir: Path | None,
        keep_backups: int,
    ) -> None:
        self.path = path
        self.header = header
        self.character_key = character_key
        self.read_only = read_only
        self.backup_dir = backup_dir
        self.keep_backups = keep_backups
        self.warnings: list[str] = []
        # Called as fn(chat, kind, index) after each change of the messages is saved (kind:
        # append, replace, insert, delete, truncate): the one place long-term memory hears of
        # edits, wherever they come from.
        self.listeners: list[Any] = []
        self.reloads = 0
        """How often the file was re-read after another program changed it (a view redraws)."""
        # A reply that was streaming when Tavern last stopped; see `discard_reply`.
        self.recovered_reply: ChatMessage | None = None
        self._lines = lines
        self._header_raw = header_raw
        self._header_saved: dict[str, Any] | None = header.to_json() if header_raw is not None else None
        self._needs_rewrite = header_raw is None
        self._disk: tuple[int, int, int] | None = None
        self._partial: ChatMessage | None = None
        self._partial_written = 0.0
        self._partial_stale = False
        # Lines found damaged on open, waiting to be set aside: (raw bytes, why).
        self._corrupt: list[tuple[_Line, str]] = []

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
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            raise ChatNotFoundError(f"chat file {path} does not exist") from None
        except OSError as err:
            raise ChatStoreError(f"cannot read chat {path}: {describe_os_error(err)}") from err
        try:
            st = os.fstat(fd)
            with os.fdopen(fd, "rb", closefd=False) as handle:
                data = handle.read()
        except OSError as err:
            raise ChatStoreError(f"cannot read chat {path}: {describe_os_error(err)}") from err
        finally:
            os.close(fd)
        chat = cls._from_bytes(
            path,
            data,
            character_key=character_key or path.parent.name,
            read_only=read_only,
            backup_dir=backup_dir,
            keep_backups=keep_backups,
            mtime=st.st_mtime,
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

    @classmethod
    def _from_bytes(
        cls,
        path: Path,
        data: bytes,
        *,
        character_key: str,
        read_only: bool,
        backup_dir: Path | None,
        keep_backups: int,
        mtime: float,
    ) -> Chat:
        extra_warnings: list[str] = []
        needs_rewrite = False
        if data.startswith(_BOM):
            # SillyTavern cannot read a header behind a BOM; drop it on the next write.
            data = data[len(_BOM) :]
            needs_rewrite = True
        ends_with_newline = data.endswith(b"\n")
        newlines = [m.start() for m in _NEWLINE.finditer(data)]
        starts = [0, *(n + 1 for n in newlines)]
        stops = [*newlines, len(data)]
        if ends_with_newline:
            starts.pop()
            stops.pop()
        has_nul = b"\x00" in data
        corrupt: list[tuple[_Line, str]] = []
        header: ChatHeader | None = None
        header_raw: bytes | None = None
        lines: list[_Line] = []
        count = len(starts)
        first_tail = max(0, count - TAIL_VERIFY)
        for number, (start, end) in enumerate(zip(starts, stops, strict=True)):
            shape = _shape(data, start, end, has_nul)
            if shape == "blank":
                continue
            torn = number == count - 1 and not ends_with_newline
            if header is None and not lines:
                parsed = _parse(data[start:end]) if shape == "ok" else None
                if looks_like_header(parsed):
                    header = ChatHeader.from_json(parsed)
                    header_raw = data[start:end]
                    continue
                if not isinstance(parsed, dict):
                    lines.append(_Line(data, start, end))
                    lines[-1].unreadable = True
                    corrupt.append((lines[-1], _reason(path, number, torn)))
                    continue
                # A file without a header line (some converters write none): keep the line
                # as a message and give the chat a header on the next write.
                extra_warnings.append(f"{path.name} had no header line; Tavern added one")
            if shape == "ok" and number >= first_tail and not isinstance(_parse(data[start:end]), dict):
                shape = "bad"
            lines.append(_Line(data, start, end))
            if shape != "ok":
                lines[-1].unreadable = True
                corrupt.append((lines[-1], _reason(path, number, torn)))
        if header is None:
            header = ChatHeader(
                user_name="User",
                character_name=_character_from_name(path, character_key),
                create_date=format_humanized(datetime.fromtimestamp(mtime)),
            )
            needs_rewrite = True
            header_raw = None
        chat = cls(
            path,
            header,
            header_raw,
            lines,
            character_key=character_key,
            read_only=read_only,
            backup_dir=backup_dir,
            keep_backups=keep_backups,
        )
        chat._needs_rewrite = needs_rewrite
        chat._corrupt = corrupt
        chat.warnings.extend(extra_warnings)
        return chat

    def _drop_corrupt_lines(self) -> None:
        """Leave the damaged lines out of the chat (they are set aside, or we only read)."""
        damaged = {id(line) for line, _ in self._corrupt}
        self._lines = [line for line in self._lines if id(line) not in damaged]

    def _set_aside_and_repair(self) -> None:
        rescued = self.rescued_path
        try:
            append_bytes_durable(rescued, b"".join(line.raw() + b"\n" for line, _ in self._corrupt))
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
        return _stem(self.path)

    @property
    def rescued_path(self) -> Path:
        return self.path.with_name(self.path.name + RESCUED_SUFFIX)

    @property
    def partial_path(self) -> Path:
        return self.path.with_name(self.path.name + PARTIAL_SUFFIX)

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
                return ChatMessage.from_json(json.loads(raw))
            except (ValueError, RecursionError, ChatStoreError):
                line.unreadable = True
                self.warnings.append(
                    f"message {i + 1} of {self.path.name} is unreadable; it is kept unchanged in the file"
                )
        preview = raw[:300].decode("utf-8", errors="replace")
        return ChatMessage(
            name="Tavern",
            is_user=False,
            is_system=True,
            mes=f"(this line of the chat file could not be read and is kept as it is)\n{preview}",
            extra={"tavern_unreadable": True},
        )

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
        self._lines.append(_Line.own(self._encode(msg)))
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
        if not old.unreadable and old.saved and _same_json(old.raw(), raw):
            return
        self._rescue([old])
        self._lines[i] = _Line.own(raw)
        self._needs_rewrite = True
        self._save()
        self._notify("replace", i)

    def insert(self, index: int, msg: ChatMessage) -> None:
        """Insert a message before `index` (len(chat) appends) and rewrite the file."""
        self._check_writable()
        if index == len(self._lines):
            self.append(msg)
            return
        self._lines.insert(self._current(index), _Line.own(self._encode(msg)))
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

    def update_metadata(self, values: dict[str, Any]) -> None:
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
        elif self._partial_stale:
            self._remove_partial_file()

    # ----------------------------------------------------------------------- streaming

    def begin_reply(self, msg: ChatMessage) -> None:
        """Start a streaming reply: `msg` is kept in a sidecar, never in the chat file."""
        self._check_writable()
        # An empty send_date is filled when the reply is appended: SillyTavern dates a reply
        # by when it finished.
        self._partial = copy.deepcopy(msg)
        self._partial_written = 0.0
        self._write_partial(force=True)

    def update_partial(self, text: str) -> None:
        """The streaming reply's text so far; written to the sidecar at most every
        `partial_interval` seconds."""
        if self._partial is None:
            raise ChatStoreError("no reply is streaming; call begin_reply first")
        self._partial.mes = text
        self._write_partial()

    def finish_reply(self, msg: ChatMessage | None = None) -> ChatMessage:
        """Append the finished (or cancelled, partial) reply: `msg`, or the streamed one."""
        final = msg if msg is not None else self._partial
        if final is None:
            raise ChatStoreError("no reply is streaming; nothing to finish")
        self._partial = None
        self._partial_stale = True
        index = self.append(final)  # on failure the sidecar stays: a crash still recovers it
        self._remove_partial_file()
        return self._message(index)

    def discard_reply(self) -> None:
        """Drop the streaming reply (or the one recovered on open) and its sidecar."""
        self._partial = None
        self.recovered_reply = None
        if not self.read_only:
            self._remove_partial_file()

    def _write_partial(self, force: bool = False) -> None:
        now = time.monotonic()
        if self._partial is None or (not force and now - self._partial_written < self.partial_interval):
            return
        self._partial_written = now
        try:
            # No fsync: the sidecar only has to survive the process, not a power cut.
            # `index` is where the reply will go: if the chat already has a message there on
            # the next open, the kill came after the append and the sidecar is stale.
            record = {"tavern_partial": 1, "index": len(self._lines), "message": self._partial.to_json()}
            atomic_write_bytes(self.partial_path, encode_line(record), durable=False)
            self._partial_stale = False
        except OSError:
            pass  # losing the draft of a streaming reply is acceptable; the chat is untouched

    def _remove_partial_file(self) -> None:
        try:
            self.partial_path.unlink()
        except FileNotFoundError:
            pass
        except OSError:
            return
        self._partial_stale = False

    def _recover_partial(self) -> None:
        try:
            raw = self.partial_path.read_bytes()
        except OSError:
            return
        try:
            record = json.loads(raw)
            reply = ChatMessage.from_json(record["message"])
            index = int(record["index"])
        except (ValueError, TypeError, KeyError, RecursionError, ChatStoreError):
            self.warnings.append(f"{self.partial_path.name} holds an unreadable unfinished reply")
            return
        if not reply.mes or index < len(self._lines):
            # Stopped before the first token, or after the finished reply was appended.
            if not self.read_only:
                self._remove_partial_file()
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
        header = self.header.to_json()
        if self._header_raw is not None and header == self._header_saved:
            header_raw = self._header_raw
        else:
            header_raw = encode_line(header)
        try:
            tmp = write_temp(self.path, self._chunks(header_raw))
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

    def _chunks(self, header_raw: bytes) -> Iterator[Chunk]:
        """The file's bytes, copying runs of untouched lines in one slice each."""
        yield header_raw
        yield b"\n"
        run_buf: bytes | None = None
        run_start = run_end = 0
        for line in self._lines:
            if line.buf is run_buf and line.start == run_end + 1:
                run_end = line.end
                continue
            if run_buf is not None:
                yield memoryview(run_buf)[run_start:run_end]
                yield b"\n"
            run_buf, run_start, run_end = line.buf, line.start, line.end
        if run_buf is not None:
            yield memoryview(run_buf)[run_start:run_end]
            yield b"\n"

    def to_bytes(self) -> bytes:
        """The chat as a JSONL file, as it is in memory (saved or not)."""
        header = self.header.to_json()
        if self._header_raw is not None and header == self._header_saved:
            header_raw = self._header_raw
        else:
            header_raw = encode_line(header)
        return b"".join(self._chunks(header_raw))

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
        folder = self.backup_dir / self.name
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S-%f")
        try:
            make_dirs(folder)
            target = folder / f"{stamp}.jsonl"
            n = 1
            while target.exists():
                n += 1
                target = folder / f"{stamp}-{n}.jsonl"
            try:
                os.link(self.path, target)
            except OSError:
                copy_file(self.path, target)
            for old in sorted(folder.glob("*.jsonl"))[: -self.keep_backups]:
                old.unlink(missing_ok=True)
            return target
        except OSError as err:
            self.warnings.append(f"could not back up {self.path.name}: {describe_os_error(err)}")
            return None

    def _rescue(self, lines: list[_Line]) -> None:
        """Copy unreadable lines to the rescued sidecar before they leave the file."""
        unreadable = [line.raw() for line in lines if line.unreadable and line.saved]
        if not unreadable:
            return
        try:
            append_bytes_durable(self.rescued_path, b"".join(raw + b"\n" for raw in unreadable))
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
        if self._partial_stale and self._partial is None:
            self._remove_partial_file()

    def _write_error(self, err: OSError) -> ChatWriteError:
        what = "the message is" if any(not line.saved for line in self._lines) else "the change is"
        if err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            fix = "free some space"
        elif err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            fix = f"make {self.path.parent} writable"
        else:
            fix = "fix the problem"
        head = f"could not save chat '{self.name}': {describe_os_error(err)}"
        unsaved = "the message was" if what == "the message is" else "the change was"
        return ChatWriteError(
            f"{head}; {what} kept in memory, {fix}, then save again",
            err.errno,
            on_exit=f"{head}; {unsaved} not saved: {fix}, then run the command again",
        )

    def __repr__(self) -> str:
        return f"<Chat {self.character_key}/{self.name} ({len(self)} messages)>"


def encode_message(msg: ChatMessage) -> bytes:
    """A message's line as it will be stored: `send_date` filled with now when empty."""
    if not isinstance(msg, ChatMessage):
        raise ChatStoreError(f"expected a ChatMessage, got {type(msg).__name__}")
    if not msg.send_date:
        msg = copy.copy(msg)
        msg.send_date = format_send_date()
    try:
        return encode_line(msg.to_json())
    except RecursionError:
        # A line the C parser read can still be too deep for the copy in to_json: refuse the
        # write (the line on disk stays as it is) rather than crash the session.
        raise ChatStoreError("this message is nested too deeply to be saved; nothing was changed") from None


def _shape(data: bytes, start: int, end: int, has_nul: bool) -> str:
    """'ok', 'blank' or 'bad' from a look at a line's first and last bytes only."""
    if end > start and data[start] == 0x7B and data[end - 1] == 0x7D:
        ok = True
    else:
        stripped = data[start:end].strip()
        if not stripped:
            return "blank"
        ok = stripped[:1] == b"{" and stripped[-1:] == b"}"
    if ok and has_nul and data.find(b"\x00", start, end) != -1:
        ok = False
    return "ok" if ok else "bad"


def _parse(raw: bytes) -> object:
    """The line's JSON, or None when it is not JSON. A line nested deeper than the parser's
    recursion limit (a hostile or broken file) is just another unreadable line."""
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        return None


def _same_json(raw: bytes, new_raw: bytes) -> bool:
    return raw == new_raw or _parse(raw) == _parse(new_raw)


def _reason(path: Path, number: int, torn: bool) -> str:
    if torn:
        return f"the last line of {path.name} was cut short (Tavern was stopped while saving)"
    return f"line {number + 1} of {path.name} is unreadable"


def _stem(path: Path) -> str:
    return path.name[: -len(".jsonl")] if path.name.endswith(".jsonl") else path.stem


def _character_from_name(path: Path, character_key: str) -> str:
    stem = _stem(path)
    return stem.split(" - ")[0] if " - " in stem else character_key
