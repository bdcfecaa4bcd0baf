"""Guess what a SillyTavern-world file is from its content: card, lorebook, chat or preset.

Caller: `tavern import`, which hands the file to the right importer (cards here, lorebooks
to `tavern.lore`, chats to `tavern.store`, presets to `tavern.prompt`). The guess reads as
little as it can: a PNG's text chunks only, a zip's directory only, a chat's first line only.
"""

from __future__ import annotations

import os
import zipfile
from typing import IO

from tavern.cards import charx, png
from tavern.cards.formats import MAX_JSON_FILE, check_regular_file, decode_json_bytes
from tavern.cards.kinds import is_chat_header, kind_of_json
from tavern.cards.wording import cannot_read
from tavern.errors import CardError

_CHAT_HEAD = 1024 * 1024  # a chat's metadata line is small; chats themselves can be huge


def detect_kind(path: str | os.PathLike[str]) -> str:
    """One of "card", "lorebook", "chat", "preset:sampler", "preset:instruct",
    "preset:context", "preset:chat" (chat-completion prompt preset) or "unknown".
    Raises CardError only when the file cannot be read at all."""
    source = str(path)
    check_regular_file(path)
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(8)
            if head.startswith(png.SIGNATURE):
                return _png_kind(f, size, source)
            f.seek(0)
            if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
                return _zip_kind(f, source)
            return _text_kind(f, size, source)
    except FileNotFoundError:
        raise CardError(f"{source}: file not found") from None
    except OSError as err:
        raise cannot_read(source, err) from None


def _png_kind(f: IO[bytes], size: int, source: str) -> str:
    try:
        found = png.scan_card_texts(f, size, source)
    except CardError:
        # Only a card chunk can fail the scan (too big, bad compression): it is a card,
        # and reading it will say what is wrong.
        return "card"
    return "card" if found.texts else "unknown"


def _zip_kind(f: IO[bytes], source: str) -> str:
    # Only the directory is looked at; an unsafe archive is still a "card" here, and
    # reading it says why it is refused.
    try:
        with zipfile.ZipFile(f) as zf:
            return "card" if charx.find_card_json(zf) is not None else "unknown"
    except charx.ZIP_ERRORS:
        return "unknown"


def _text_kind(f: IO[bytes], size: int, source: str) -> str:
    head = f.read(_CHAT_HEAD)
    first_line, newline, rest = head.partition(b"\n")
    if newline and rest.strip():
        # Several lines: JSONL is a chat when its first line is SillyTavern's metadata.
        try:
            first = decode_json_bytes(first_line, source, "first line")
        except CardError:
            first = None
        if isinstance(first, dict) and is_chat_header(first):
            return "chat"
    if size > MAX_JSON_FILE:
        return "unknown"
    try:
        obj = decode_json_bytes(head + f.read(), source, "file")
    except CardError:
        return "unknown"
    return kind_of_json(obj)


__all__ = ["detect_kind", "kind_of_json"]
