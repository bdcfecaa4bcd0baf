"""A chat file's bytes as lines: reading them on open, writing them back unchanged.

`chatfile.Chat` is the caller: it reads a file with `read_file` and `read_chat_file`, and
rewrites it from `file_chunks`; `encode_message` is the one way a message becomes a line.

Large chats: reading indexes line offsets in the buffer the file was read into; a message is
parsed from JSON only when it is asked for, so opening a 10,000-message chat and showing its
last 40 costs about the same as a small one. Every line gets a cheap shape check on open (starts
with `{`, ends with `}`, no NUL bytes) and the last `TAIL_VERIFY` lines a full parse; a line
that passes the shape check but still fails to parse when first read is shown as an unreadable
placeholder and kept verbatim in the file. Rewrites copy untouched lines as raw bytes, so an
edit costs one sequential write of the file, never a re-encoding of every message.
"""

from __future__ import annotations

import copy
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from tavern.errors import ChatStoreError
from tavern.store.atomic import Chunk, describe_os_error
from tavern.store.dates import format_humanized, format_send_date
from tavern.store.errors import ChatNotFoundError
from tavern.store.message import ChatHeader, ChatMessage, encode_line, looks_like_header

TAIL_VERIFY = 64
_NEWLINE = re.compile(b"\n")
BOM = b"\xef\xbb\xbf"


class Line:
    """One message line: bytes `buf[start:end]`, shared with the buffer the file was read into."""

    __slots__ = ("buf", "end", "saved", "start", "unreadable")

    def __init__(self, buf: bytes, start: int, end: int, saved: bool = True) -> None:
        self.buf = buf
        self.start = start
        self.end = end
        self.saved = saved
        self.unreadable = False

    @classmethod
    def own(cls, raw: bytes) -> Line:
        return cls(raw, 0, len(raw), saved=False)

    def raw(self) -> bytes:
        if self.start == 0 and self.end == len(self.buf):
            return self.buf
        return self.buf[self.start : self.end]


@dataclass
class ChatFileLines:
    """What reading a chat file's bytes found."""

    header: ChatHeader
    header_raw: bytes | None
    """The header line as read; None when the file had none (`header` is then made up)."""
    lines: list[Line]
    needs_rewrite: bool
    """The file is not as Tavern writes it (a BOM, no header line): rewrite it on the next save."""
    corrupt: list[tuple[Line, str]] = field(default_factory=list)
    """Lines found damaged (also in `lines`, marked unreadable), each with the reason to show."""
    warnings: list[str] = field(default_factory=list)


def read_file(path: Path) -> tuple[bytes, os.stat_result]:
    """A chat file's bytes and its stat, from one open: ChatNotFoundError or ChatStoreError."""
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
    return data, st


def read_chat_file(path: Path, data: bytes, *, character_key: str, mtime: float) -> ChatFileLines:
    """Index the lines of a chat file's bytes; `mtime` dates a header made up for a file
    without one. Never raises on damaged content: damaged lines are listed in `corrupt`."""
    warnings: list[str] = []
    needs_rewrite = False
    if data.startswith(BOM):
        # SillyTavern cannot read a header behind a BOM; drop it on the next write.
        data = data[len(BOM) :]
        needs_rewrite = True
    ends_with_newline = data.endswith(b"\n")
    newlines = [m.start() for m in _NEWLINE.finditer(data)]
    starts = [0, *(n + 1 for n in newlines)]
    stops = [*newlines, len(data)]
    if ends_with_newline:
        starts.pop()
        stops.pop()
    has_nul = b"\x00" in data
    corrupt: list[tuple[Line, str]] = []
    header: ChatHeader | None = None
    header_raw: bytes | None = None
    lines: list[Line] = []
    count = len(starts)
    first_tail = max(0, count - TAIL_VERIFY)
    for number, (start, end) in enumerate(zip(starts, stops, strict=True)):
        shape = _shape(data, start, end, has_nul)
        if shape == "blank":
            continue
        torn = number == count - 1 and not ends_with_newline
        if header is None and not lines:
            parsed = parse_json(data[start:end]) if shape == "ok" else None
            if looks_like_header(parsed):
                header = ChatHeader.from_json(parsed)
                header_raw = data[start:end]
                continue
            if not isinstance(parsed, dict):
                lines.append(Line(data, start, end))
                lines[-1].unreadable = True
                corrupt.append((lines[-1], _reason(path, number, torn)))
                continue
            # A file without a header line (some converters write none): keep the line
            # as a message and give the chat a header on the next write.
            warnings.append(f"{path.name} had no header line; Tavern added one")
        if shape == "ok" and number >= first_tail and not isinstance(parse_json(data[start:end]), dict):
            shape = "bad"
        lines.append(Line(data, start, end))
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
    return ChatFileLines(header, header_raw, lines, needs_rewrite, corrupt, warnings)


def read_message(raw: bytes) -> ChatMessage:
    """The message a line holds; ValueError, RecursionError or ChatStoreError when it holds none."""
    return ChatMessage.from_json(json.loads(raw))


def unreadable_placeholder(raw: bytes) -> ChatMessage:
    """What a chat shows in place of a line it cannot read (the line stays in the file)."""
    preview = raw[:300].decode("utf-8", errors="replace")
    return ChatMessage(
        name="Tavern",
        is_user=False,
        is_system=True,
        mes=f"(this line of the chat file could not be read and is kept as it is)\n{preview}",
        extra={"tavern_unreadable": True},
    )


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


def file_chunks(header_raw: bytes, lines: list[Line]) -> Iterator[Chunk]:
    """The file's bytes, copying runs of untouched lines in one slice each."""
    yield header_raw
    yield b"\n"
    run_buf: bytes | None = None
    run_start = run_end = 0
    for line in lines:
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


def parse_json(raw: bytes) -> object:
    """The line's JSON, or None when it is not JSON. A line nested deeper than the parser's
    recursion limit (a hostile or broken file) is just another unreadable line."""
    try:
        parsed: object = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    return parsed


def same_json(raw: bytes, new_raw: bytes) -> bool:
    return raw == new_raw or parse_json(raw) == parse_json(new_raw)


def chat_stem(path: Path) -> str:
    """The file name without `.jsonl`: SillyTavern's chat name."""
    return path.name[: -len(".jsonl")] if path.name.endswith(".jsonl") else path.stem


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


def _reason(path: Path, number: int, torn: bool) -> str:
    if torn:
        return f"the last line of {path.name} was cut short (Tavern was stopped while saving)"
    return f"line {number + 1} of {path.name} is unreadable"


def _character_from_name(path: Path, character_key: str) -> str:
    stem = chat_stem(path)
    return stem.split(" - ")[0] if " - " in stem else character_key
