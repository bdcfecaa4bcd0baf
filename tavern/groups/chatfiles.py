"""Group chat files: `group chats/<chat id>.jsonl`, as SillyTavern writes them.

A chat id is the chat's name and its file stem: `humanizedDateTime()` when the chat was made
("2024-09-15@14h03m22s"), or what the user renamed it to. Since 1.13 (src/endpoints/chats.js
`/group/save`, group-chats.js `saveGroupChat`) line 1 is a header,
`{"chat_metadata": {...}, "user_name": "unused", "character_name": "unused"}`, whose metadata
carries an `integrity` id that SillyTavern checks before it overwrites the file; older files
start with the first message and keep their metadata in the group file
(`Group.legacy_chat_metadata`). Each later line is one message; a character's reply carries its
`name` and `original_avatar` (the card file name) and a `force_avatar` thumbnail URL, so the chat
shows who spoke even after the member leaves. Lines are joined by "\\n" with none at the end.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from tavern.groups.jsvalues import st_json
from tavern.groups.model import GroupError

# What encodeURIComponent leaves as it is, besides letters and digits.
_URI_SAFE = "-_.!~*'()"
UNUSED = "unused"
"""The header's `user_name` and `character_name` in a group chat: the speakers are per message."""


def chat_header(metadata: Mapping[str, object] | None = None) -> dict[str, object]:
    """A group chat's first line; `metadata` gets an `integrity` id if it has none."""
    meta = dict(metadata or {})
    meta.setdefault("integrity", str(uuid.uuid4()))
    return {"chat_metadata": meta, "user_name": UNUSED, "character_name": UNUSED}


def is_header(line: object) -> bool:
    """SillyTavern's test: the first line is a header when it has `chat_metadata`."""
    return isinstance(line, dict) and "chat_metadata" in line


def thumbnail_url(avatar: str) -> str:
    """script.js `getThumbnailUrl('avatar', file)`: a reply's `force_avatar` in a group."""
    return "/thumbnail?type=avatar&file=" + quote(avatar, safe=_URI_SAFE)


def member_message(name: str, avatar: str, mes: str, send_date: str, gen_id: float | None = None) -> dict[str, object]:
    """A member's message with the keys SillyTavern gives a group greeting
    (`getFirstCharacterMessage`); `send_date` as the caller's chat format writes it."""
    extra: dict[str, object] = {} if gen_id is None else {"gen_id": gen_id}
    return {
        "is_user": False,
        "is_system": False,
        "name": name,
        "send_date": send_date,
        "original_avatar": avatar,
        "extra": extra,
        "mes": mes,
        "force_avatar": thumbnail_url(avatar),
    }


def encode_chat(lines: Sequence[Mapping[str, object]]) -> bytes:
    """The file's bytes: one `JSON.stringify` per line, joined by newlines, no final newline."""
    return "\n".join(st_json(line) for line in lines).encode("utf-8")


@dataclass
class GroupChatFile:
    """One group chat as read: its header (None in a pre-1.13 file) and its messages."""

    chat_id: str
    exists: bool
    header: dict[str, object] | None = None
    messages: list[dict[str, object]] = field(default_factory=list)
    unreadable: int = 0
    """Lines that were not JSON objects; SillyTavern drops them when it loads the chat."""

    @property
    def metadata(self) -> dict[str, object]:
        meta = self.header.get("chat_metadata") if self.header else None
        return dict(meta) if isinstance(meta, dict) else {}


def read_chat_file(path: Path, chat_id: str) -> GroupChatFile:
    """The chat at `path`; a missing file is an empty chat (`exists` False), as ST treats it."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return GroupChatFile(chat_id, exists=False)
    except OSError as err:
        raise GroupError(f"group chat '{chat_id}': cannot read it ({err.strerror or err})") from None
    chat = GroupChatFile(chat_id, exists=True)
    for number, raw in enumerate(data.removeprefix(b"\xef\xbb\xbf").split(b"\n")):
        if not raw.strip():
            continue
        line = _parse_line(raw)
        if line is None:
            chat.unreadable += 1
        elif number == 0 and is_header(line):
            chat.header = line
        else:
            chat.messages.append(line)
    return chat


def _parse_line(raw: bytes) -> dict[str, object] | None:
    try:
        value: object = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return None
    return {str(k): v for k, v in value.items()} if isinstance(value, dict) else None


@dataclass(frozen=True)
class GroupChatInfo:
    """A line of the group's chat list (ST's `/group/info`)."""

    chat_id: str
    file_name: str
    exists: bool
    size: int = 0
    message_count: int = 0
    last_message: str = ""
    last_date: object = None
    """The last message's `send_date` as written (any of ST's forms), or None."""
    mtime: float | None = None


def chat_info(path: Path, chat_id: str) -> GroupChatInfo:
    """Size, message count and last message of one chat; cheap on a long chat (one line parsed)."""
    try:
        stat = os.stat(path)
        data = path.read_bytes()
    except FileNotFoundError:
        return GroupChatInfo(chat_id, path.name, exists=False)
    except OSError as err:
        raise GroupError(f"group chat '{chat_id}': cannot read it ({err.strerror or err})") from None
    lines = [raw for raw in data.removeprefix(b"\xef\xbb\xbf").split(b"\n") if raw.strip()]
    count = len(lines) - (1 if lines and is_header(_parse_line(lines[0])) else 0)
    last = _parse_line(lines[-1]) if count else None
    text = last.get("mes") if last else None
    return GroupChatInfo(
        chat_id,
        path.name,
        exists=True,
        size=stat.st_size,
        message_count=count,
        last_message=text if isinstance(text, str) else "",
        last_date=last.get("send_date") if last else None,
        mtime=stat.st_mtime,
    )


__all__ = [
    "GroupChatFile",
    "GroupChatInfo",
    "UNUSED",
    "chat_header",
    "chat_info",
    "encode_chat",
    "is_header",
    "member_message",
    "read_chat_file",
    "thumbnail_url",
]
