"""Shared fixtures for the card tests: the fixture folder and a few PNG byte helpers.

The helpers parse and build PNG chunks with their own code (not tavern.cards), so a test
that checks what Tavern wrote does not trust Tavern to read it.
"""

from __future__ import annotations

import base64
import json
import struct
import zlib
from pathlib import Path
from types import SimpleNamespace

import pytest

DATA = Path(__file__).resolve().parent.parent / "data" / "cards"
SIG = b"\x89PNG\r\n\x1a\n"


def png_chunks(data: bytes) -> list[tuple[bytes, bytes, bool]]:
    """(type, body, crc_ok) for each chunk up to IEND."""
    out, pos = [], 8
    while pos + 8 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        ctype = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        out.append((ctype, body, crc == zlib.crc32(ctype + body) & 0xFFFFFFFF))
        pos += 12 + length
        if ctype == b"IEND":
            break
    return out


def make_chunk(ctype: bytes, body: bytes) -> bytes:
    return (
        struct.pack(">I", len(body)) + ctype + body + struct.pack(">I", zlib.crc32(ctype + body) & 0xFFFFFFFF)
    )


def make_png(chunks: list[tuple[bytes, bytes]]) -> bytes:
    return SIG + b"".join(make_chunk(t, b) for t, b in chunks)


def text_json(body: bytes) -> dict:
    """The JSON inside a tEXt chunk body holding base64."""
    return json.loads(base64.b64decode(body.split(b"\0", 1)[1]))


def image_only(data: bytes) -> list[tuple[bytes, bytes]]:
    """The non-text chunks of a PNG, without IEND."""
    return [(t, b) for t, b, _ in png_chunks(data) if t not in (b"tEXt", b"iTXt", b"zTXt", b"IEND")]


def card_png(card_obj: dict, picture: bytes, keyword: str = "chara") -> bytes:
    payload = base64.b64encode(json.dumps(card_obj, ensure_ascii=False).encode())
    return make_png(image_only(picture) + [(b"tEXt", keyword.encode() + b"\0" + payload), (b"IEND", b"")])


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA


@pytest.fixture(scope="session")
def pngkit() -> SimpleNamespace:
    return SimpleNamespace(
        chunks=png_chunks,
        make_png=make_png,
        text_json=text_json,
        image_only=image_only,
        card_png=card_png,
        sig=SIG,
    )


@pytest.fixture(scope="session")
def small_picture() -> bytes:
    """A tiny real PNG picture (the thumbnail inside a constructed fixture)."""
    return make_png(image_only((DATA / "chub_style.png").read_bytes()) + [(b"IEND", b"")])
