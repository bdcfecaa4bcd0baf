"""The chats folder of a data home: listing, creating, branching, importing, exporting.

The session layer and the TUI's chat list use `ChatStore(home / "chats")`; `Chat` objects it
returns do the per-message work. The layout is SillyTavern's, so a data home's `chats` folder
can be copied to or from SillyTavern's `data/<user>/chats`:

    <home>/chats/<character key>/<Character name> - 2024-09-15@14h03m22s.jsonl
    <home>/backups/chats/<character key>/<chat name>/<timestamp>.jsonl   (last N versions)
    <home>/trash/chats/<character key>/<chat name>.jsonl                 (deleted chats)

The character key is the card's avatar file name without `.png`, as in SillyTavern.
Branches and checkpoints are whole new chat files, as in SillyTavern: `chat_metadata.main_chat`
names the parent, and the parent's message records the child (`extra.branches`, or
`extra.bookmark_link` for a checkpoint). Tavern adds `chat_metadata.tavern_parent`
({chat, index}) to the child and `tavern_checkpoints` to the parent.
"""

from __future__ import annotations

import copy
import errno
import json
import os
import shutil
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from tavern.errors import ChatStoreError
from tavern.store.atomic import (
    USER_FILE,
    atomic_write_bytes,
    create_exclusive,
    describe_os_error,
    make_dirs,
)
from tavern.store.chatfile import Chat
from tavern.store.dates import chat_file_name, format_humanized
from tavern.store.errors import ChatNotFoundError, ChatReadOnlyError, ChatWriteError
from tavern.store.export import render_markdown, render_text
from tavern.store.jsonl import BOM, encode_message, read_chat_file
from tavern.store.message import ChatHeader, ChatMessage, encode_line
from tavern.store.names import sanitize_file_name
from tavern.store.sidecars import PARTIAL_SUFFIX, RESCUED_SUFFIX

_PREVIEW_BYTES = 256 * 1024
_MAX_IMPORT_BYTES = 1 << 30


@dataclass(frozen=True)
class ChatInfo:
    """One row of a chat list; cheap to compute (no JSON parsing but the last line)."""

    name: str
    path: Path
    message_count: int
    modified: datetime
    preview: str
    size: int


class ChatStore:
    """The `chats` folder of a data home. `read_only` when another Tavern holds the home."""

    def __init__(self, root: Path | str, *, read_only: bool = False, keep_backups: int = 3) -> None:
        self.root = Path(root)
        self.home = self.root.parent
        self.read_only = read_only
        self.keep_backups = keep_backups
        self.backup_root = self.home / "backups" / "chats"
        self.trash_root = self.home / "trash" / "chats"

    # ----------------------------------------------------------------------------- finding

    def folder(self, character_key: str) -> Path:
        """The folder holding one character's chats."""
        return self.root / _component(character_key, "character key")

    def list_chats(self, character_key: str) -> list[ChatInfo]:
        """The character's chats, most recently changed first."""
        folder = self.folder(character_key)
        infos = []
        try:
            entries = list(os.scandir(folder))
        except FileNotFoundError:
            return []
        except OSError as err:
            raise ChatStoreError(f"cannot list chats in {folder}: {describe_os_error(err)}") from err
        for entry in entries:
            if entry.name.startswith(".") or not entry.name.endswith(".jsonl"):
                continue
            try:
                if not entry.is_file():
                    continue
                st = entry.stat()
                count, preview = _count_and_preview(Path(entry.path), st.st_size)
            except OSError:
                continue  # vanished or unreadable: not listed, never fatal
            infos.append(
                ChatInfo(
                    name=entry.name[: -len(".jsonl")],
                    path=Path(entry.path),
                    message_count=count,
                    modified=datetime.fromtimestamp(st.st_mtime),
                    preview=preview,
                    size=st.st_size,
                )
            )
        infos.sort(key=lambda info: (info.modified, info.name), reverse=True)
        return infos

    def open(self, character_key: str, chat_name: str, *, read_only: bool = False) -> Chat:
        """Open a chat by name (with or without `.jsonl`); `read_only` for a reader that must
        write nothing (no repair, no cleanup), whoever holds the home."""
        return self._open_path(self._path(character_key, chat_name), character_key, read_only)

    def latest(self, character_key: str, *, read_only: bool = False) -> Chat | None:
        """The most recently changed chat of a character, or None if it has none."""
        newest: tuple[float, str] | None = None
        try:
            entries = list(os.scandir(self.folder(character_key)))
        except OSError:
            return None
        for entry in entries:
            if entry.name.startswith(".") or not entry.name.endswith(".jsonl"):
                continue
            try:
                mtime = entry.stat().st_mtime
            except OSError:
                continue
            if newest is None or (mtime, entry.name) > newest:
                newest = (mtime, entry.name)
        return None if newest is None else self.open(character_key, newest[1], read_only=read_only)

    # ----------------------------------------------------------------------------- creating

    def create(
        self,
        character_key: str,
        character_name: str,
        user_name: str,
        greeting: ChatMessage | None = None,
        *,
        metadata: dict[str, object] | None = None,
    ) -> Chat:
        """Start a new chat, named as SillyTavern names it, with the greeting as message 0."""
        self._check_writable()
        stem, body = self._new_chat_body(character_name, user_name, greeting, metadata)
        path = self._create_unique(self.folder(character_key), stem, body)
        return self._open_path(path, character_key)

    def draft(
        self, character_key: str, character_name: str, user_name: str, greeting: ChatMessage | None = None
    ) -> Chat:
        """The chat `create` would start, in memory only and read-only: what a read-only
        command (`tavern prompt`) shows for a character without a chat, writing nothing."""
        stem, body = self._new_chat_body(character_name, user_name, greeting, None)
        path = self.folder(character_key) / f"{stem}.jsonl"
        read = read_chat_file(path, body, character_key=character_key, mtime=datetime.now().timestamp())
        return Chat(path, read, character_key=character_key, read_only=True, backup_dir=None, keep_backups=0)

    def _new_chat_body(
        self,
        character_name: str,
        user_name: str,
        greeting: ChatMessage | None,
        metadata: dict[str, object] | None,
    ) -> tuple[str, bytes]:
        now = datetime.now()
        header = ChatHeader(
            user_name=user_name,
            character_name=character_name,
            create_date=format_humanized(now),
            chat_metadata=copy.deepcopy(metadata or {}),
        )
        body = encode_line(header.to_json()) + b"\n"
        if greeting is not None:
            body += encode_message(greeting) + b"\n"
        return chat_file_name(character_name, now)[: -len(".jsonl")], body

    def branch(self, chat: Chat, at_index: int, name: str | None = None) -> Chat:
        """A new chat holding messages 0..at_index of `chat`, linked to it as SillyTavern does."""
        self._check_writable()
        i = chat._index(at_index)
        child = self._copy_prefix(chat, i, name or f"Branch #{i} - {format_humanized()}")
        msg = chat[i]
        branches = msg.extra.get("branches")
        msg.extra["branches"] = [*(branches if isinstance(branches, list) else []), child.name]
        self._mark_parent(chat, i, msg, child)
        return child

    def checkpoint(self, chat: Chat, at_index: int, label: str = "") -> Chat:
        """A named checkpoint: a branch called "<label> - <date>" ("Checkpoint #N - <date>"
        without a label), recorded on the parent's message and in its metadata."""
        self._check_writable()
        i = chat._index(at_index)
        label = label.strip()
        if label:
            base = label
        else:
            names = [info.name for info in self.list_chats(chat.character_key)]
            number = len(names)
            while any(n.startswith(f"Checkpoint #{number} - ") for n in names):
                number += 1
            base = f"Checkpoint #{number}"
        child = self._copy_prefix(chat, i, f"{base} - {format_humanized()}")
        msg = chat[i]
        msg.extra["bookmark_link"] = child.name
        checkpoints = chat.header.chat_metadata.get("tavern_checkpoints")
        chat.header.chat_metadata["tavern_checkpoints"] = [
            *(checkpoints if isinstance(checkpoints, list) else []),
            {"name": child.name, "index": i, "label": label},
        ]
        self._mark_parent(chat, i, msg, child)
        return child

    def _copy_prefix(self, chat: Chat, last: int, name: str) -> Chat:
        metadata = copy.deepcopy(chat.header.chat_metadata)
        metadata.pop("tavern_checkpoints", None)  # those indexes belong to the parent
        metadata["main_chat"] = chat.name
        metadata["tavern_parent"] = {"chat": chat.name, "index": last}
        header = ChatHeader(
            user_name=chat.header.user_name,
            character_name=chat.header.character_name,
            create_date=format_humanized(),
            chat_metadata=metadata,
            other=copy.deepcopy(chat.header.other),
        )
        # Messages are copied as the bytes they are, so the branch holds them exactly.
        body = b"".join(
            [encode_line(header.to_json()), b"\n"] + [line.raw() + b"\n" for line in chat._lines[: last + 1]]
        )
        stem = sanitize_file_name(name, "Branch")
        path = self._create_unique(self.folder(chat.character_key), stem, body)
        return self._open_path(path, chat.character_key)

    def _mark_parent(self, chat: Chat, index: int, msg: ChatMessage, child: Chat) -> None:
        try:
            chat.replace(index, msg)
        except ChatStoreError as err:
            # The child exists and says who its parent is; the parent's marker is a convenience.
            child.warnings.append(f"could not record the link in '{chat.name}': {err}")

    # ----------------------------------------------------------------------------- managing

    def rename(self, chat: Chat, new_name: str) -> None:
        """Rename a chat file (and its sidecars and backups); refuses to overwrite another."""
        self._check_writable()
        stem = sanitize_file_name(_strip_suffix(new_name), "")
        if not stem:
            raise ChatStoreError(f"cannot rename chat '{chat.name}': the new name is empty")
        if stem == chat.name:
            return
        target = chat.path.with_name(stem + ".jsonl")
        old_name, old_path = chat.name, chat.path
        try:
            os.link(old_path, target)
        except FileExistsError:
            raise ChatStoreError(f"cannot rename chat '{old_name}': '{stem}' already exists") from None
        except OSError as err:
            if err.errno not in (errno.EPERM, errno.ENOTSUP, errno.EXDEV, errno.EMLINK):
                raise ChatWriteError(
                    f"cannot rename chat '{old_name}': {describe_os_error(err)}", err.errno
                ) from err
            if target.exists():
                raise ChatStoreError(f"cannot rename chat '{old_name}': '{stem}' already exists") from None
            os.rename(old_path, target)
        else:
            os.unlink(old_path)
        chat.path = target
        for suffix in (RESCUED_SUFFIX, PARTIAL_SUFFIX):
            _move_quietly(old_path.with_name(old_path.name + suffix), target.with_name(target.name + suffix))
        if chat.backup_dir is not None:
            _move_quietly(chat.backup_dir / old_name, chat.backup_dir / stem)

    def delete(self, chat: Chat) -> Path:
        """Move a chat to `<home>/trash/chats/<character>/`; returns where it went."""
        self._check_writable()
        folder = self.trash_root / chat.character_key
        try:
            make_dirs(folder)
            target = _free_name(folder, chat.name)
            shutil.move(chat.path, target)
        except OSError as err:
            raise ChatWriteError(
                f"could not move chat '{chat.name}' to the trash: {describe_os_error(err)}", err.errno
            ) from err
        for suffix in (RESCUED_SUFFIX, PARTIAL_SUFFIX):
            _move_quietly(
                chat.path.with_name(chat.path.name + suffix), target.with_name(target.name + suffix)
            )
        chat.path = target
        chat.read_only = True  # the object now describes a file in the trash
        return target

    def restore(self, trashed: Path, character_key: str) -> Chat:
        """Bring a deleted chat back from the trash (under a free name)."""
        self._check_writable()
        trashed = Path(trashed)
        folder = self.folder(character_key)
        try:
            make_dirs(folder)
            target = _free_name(folder, _strip_suffix(trashed.name))
            shutil.move(trashed, target)
        except OSError as err:
            raise ChatWriteError(
                f"could not restore {trashed.name}: {describe_os_error(err)}", err.errno
            ) from err
        return self._open_path(target, character_key)

    # ----------------------------------------------------------------------------- import/export

    def import_jsonl(self, path: Path | str, character_key: str, name: str | None = None) -> Chat:
        """Copy a SillyTavern chat file into the character's folder; returns the new chat.

        Validates the file (UTF-8, JSON lines, a header or at least one message); unreadable
        lines are skipped with a warning (the source file is left untouched). A clean file is
        copied byte for byte.
        """
        self._check_writable()
        src = Path(path)
        data = _read_import(src)
        if data.startswith(BOM):
            data = data[len(BOM) :]  # SillyTavern could not read the header behind a BOM
        read = read_chat_file(src, data, character_key=character_key, mtime=src.stat().st_mtime)
        chat = Chat(src, read, character_key=character_key, read_only=True, backup_dir=None, keep_backups=0)
        chat._drop_corrupt_lines()
        unreadable = chat.verify()
        skipped = len(chat._corrupt) + len(unreadable)
        if chat._header_raw is None and not chat._lines:
            raise ChatStoreError(f"{src.name} is not a SillyTavern chat: no readable chat lines")
        warnings = [reason for _, reason in chat._corrupt] + chat.warnings
        if skipped or chat._needs_rewrite:
            for i in reversed(unreadable):
                del chat._lines[i]
            chat._needs_rewrite = False
            body = chat.to_bytes()
        else:
            body = data
        stem = sanitize_file_name(_strip_suffix(name) if name else _strip_suffix(src.name), "Imported chat")
        target = self._create_unique(self.folder(character_key), stem, body)
        imported = self._open_path(target, character_key)
        imported.warnings[:0] = [f"import: {w}" for w in warnings]
        return imported

    def export_jsonl(self, chat: Chat, path: Path | str) -> None:
        """Write the chat as a SillyTavern JSONL file (the saved file byte for byte)."""
        data = chat.path.read_bytes() if chat.matches_disk() else chat.to_bytes()
        self._export(path, data, chat)

    def export_markdown(self, chat: Chat, path: Path | str, include_hidden: bool = False) -> None:
        """Write the chat as Markdown; hidden messages only with `include_hidden`."""
        text = render_markdown(chat.header, chat.name, chat, include_hidden=include_hidden)
        self._export(path, text.encode("utf-8"), chat)

    def export_text(self, chat: Chat, path: Path | str) -> None:
        """Write the chat as plain text, as SillyTavern's .txt export does."""
        self._export(path, render_text(chat).encode("utf-8"), chat)

    def _export(self, path: Path | str, data: bytes, chat: Chat) -> None:
        try:
            atomic_write_bytes(path, data, mode=USER_FILE)  # the user's file, where they put it
        except OSError as err:
            raise ChatWriteError(
                f"could not export chat '{chat.name}' to {path}: {describe_os_error(err)}", err.errno
            ) from err

    # ----------------------------------------------------------------------------- helpers

    def _path(self, character_key: str, chat_name: str) -> Path:
        stem = _component(_strip_suffix(chat_name), "chat name")
        return self.folder(character_key) / f"{stem}.jsonl"

    def _open_path(self, path: Path, character_key: str, read_only: bool = False) -> Chat:
        try:
            return Chat.open(
                path,
                character_key=character_key,
                read_only=self.read_only or read_only,
                backup_dir=self.backup_root / character_key,
                keep_backups=self.keep_backups,
            )
        except ChatNotFoundError:
            raise ChatNotFoundError(
                f"no chat '{_strip_suffix(path.name)}' for character '{character_key}'"
            ) from None

    def _create_unique(self, folder: Path, stem: str, body: bytes) -> Path:
        try:
            make_dirs(folder)
            for n in range(1, 1000):
                candidate = folder / (f"{stem}.jsonl" if n == 1 else f"{stem} ({n}).jsonl")
                if create_exclusive(candidate, body):
                    return candidate
        except OSError as err:
            raise ChatWriteError(
                f"could not create chat '{stem}': {describe_os_error(err)}", err.errno
            ) from err
        raise ChatStoreError(f"could not create chat '{stem}': too many chats with that name")

    def _check_writable(self) -> None:
        if self.read_only:
            raise ChatReadOnlyError(
                f"the chats in {self.root} are read-only (another Tavern is using this data home)"
            )


def _component(value: str, what: str) -> str:
    if not isinstance(value, str) or value in ("", ".", "..") or any(c in value for c in "/\\\x00"):
        raise ChatStoreError(f"invalid {what} {value!r}: it must be a plain file name")
    return value


def header_character_name(path: Path | str, limit: int = 1 << 20) -> str | None:
    """The `character_name` a SillyTavern chat file's header line names, or None (no header,
    or not readable as one): `tavern import chat.jsonl` needs no --character when it is there."""
    try:
        with open(path, "rb") as fh:
            first = fh.readline(limit)
    except OSError:
        return None
    try:
        header = json.loads(first.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError, RecursionError):  # too deep: not a header either
        return None
    name = header.get("character_name") if isinstance(header, dict) else None
    if not isinstance(name, str) or not name.strip() or "mes" in header:
        return None
    return name.strip()


def _strip_suffix(name: str) -> str:
    return name.removesuffix(".jsonl")


def _free_name(folder: Path, stem: str) -> Path:
    target = folder / f"{stem}.jsonl"
    n = 1
    while target.exists():
        n += 1
        target = folder / f"{stem} ({n}).jsonl"
    return target


def _move_quietly(src: Path, dst: Path) -> None:
    try:
        if src.exists() and not dst.exists():
            os.rename(src, dst)
    except OSError:
        pass


def _read_import(src: Path) -> bytes:
    try:
        size = src.stat().st_size
        if size > _MAX_IMPORT_BYTES:
            raise ChatStoreError(f"{src.name} is too large to import ({size >> 20} MiB)")
        data = src.read_bytes()
    except FileNotFoundError:
        raise ChatNotFoundError(f"chat file {src} does not exist") from None
    except OSError as err:
        raise ChatStoreError(f"cannot read {src}: {describe_os_error(err)}") from err
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ChatStoreError(
            f"{src.name} is not a SillyTavern chat: not UTF-8 text (byte {err.start})"
        ) from None
    return data


def _count_and_preview(path: Path, size: int) -> tuple[int, str]:
    """Messages (lines minus the header) and the last message's text, reading little."""
    if size == 0:
        return 0, ""
    newlines = 0
    last = b""
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            newlines += chunk.count(b"\n")
            last = chunk[-1:]
        lines = newlines + (0 if last == b"\n" else 1)
        handle.seek(max(0, size - _PREVIEW_BYTES))
        tail = handle.read()
    preview = ""
    for raw in reversed(tail.split(b"\n")):
        if not raw.strip():
            continue
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError):  # a line too deeply nested is unreadable too
            continue
        if isinstance(data, dict) and "mes" in data:
            preview = " ".join(str(data.get("mes") or "").split())[:160]
        break
    return max(0, lines - 1), preview
