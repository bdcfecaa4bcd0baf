"""PNG chunk reading and writing for character cards, without decoding the image.

Callers: `tavern.cards.formats` (read a card's text chunks, get the avatar image, write a
card PNG) and `tavern.cards.sniff` (is this PNG a card?).

Reading is lenient, as real cards need (SillyTavern.md §1): bad CRCs are ignored, bytes after
`IEND` are ignored, a file cut short after the card chunk still reads, text may sit in `tEXt`,
`iTXt` or `zTXt`, and keywords compare case-insensitively. Memory stays bounded: chunks that
are not card text are skipped with `seek` (the image data is never read), and a card text
chunk over `MAX_TEXT_CHUNK` is refused before it is read.

Writing is strict: every chunk gets a correct CRC, the old `chara`/`ccv3` chunks are dropped
and the new `tEXt` chunks go right before `IEND`, as SillyTavern's writer does.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import IO

from tavern.cards.wording import mib
from tavern.errors import CardError

SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_TEXT_CHUNK = 16 * 1024 * 1024
CARD_KEYWORDS = ("chara", "ccv3")
TEXT_TYPES = (b"tEXt", b"iTXt", b"zTXt")

_MAX_KEYWORD = 79  # PNG spec: keywords are 1-79 bytes
_MAX_CHUNK_LENGTH = 0x7FFFFFFF  # PNG spec: lengths above 2^31-1 are invalid


@dataclass
class CardTexts:
    """What a scan of a PNG found: the first `chara` and `ccv3` text (raw payload bytes)."""

    texts: dict[str, bytes]
    truncated: bool  # the file ended before IEND


def scan_card_texts(f: IO[bytes], size: int, source: str) -> CardTexts:
    """Read the `chara`/`ccv3` text payloads of a PNG opened as `f` (positioned after the
    signature). Only text chunks are read; everything else is skipped with seek."""
    texts: dict[str, bytes] = {}
    pos = f.tell()
    while True:
        header = f.read(8)
        if len(header) < 8:
            return CardTexts(texts, truncated=True)
        length, ctype = struct.unpack(">I4s", header)
        pos += 8
        if ctype == b"IEND":
            return CardTexts(texts, truncated=False)
        if length > _MAX_CHUNK_LENGTH:
            # Garbage length: the rest of the file cannot be walked; keep what we have.
            return CardTexts(texts, truncated=True)
        if ctype in TEXT_TYPES and length > 0:
            peek = f.read(min(length, _MAX_KEYWORD + 1))
            keyword = peek.split(b"\0", 1)[0].decode("latin-1").lower()
            if keyword in CARD_KEYWORDS and keyword not in texts:
                if length > MAX_TEXT_CHUNK:
                    raise CardError(
                        f"{source}: the '{keyword}' text chunk is {mib(length)}, "
                        f"over the {mib(MAX_TEXT_CHUNK)} limit"
                    )
                body = peek + f.read(length - len(peek))
                if len(body) < length:
                    raise CardError(f"{source}: file is truncated inside the '{keyword}' chunk")
                texts[keyword] = decode_text_chunk(ctype, body, keyword, source)
                f.read(4)  # CRC: ignored on purpose (real cards carry bad ones)
                pos += length + 4
                continue
        pos += length + 4
        if pos > size:
            return CardTexts(texts, truncated=True)
        f.seek(pos)


def decode_text_chunk(ctype: bytes, body: bytes, keyword: str, source: str) -> bytes:
    """The text of a tEXt/zTXt/iTXt chunk body as bytes (zlib-inflated, bounded)."""
    _, sep, rest = body.partition(b"\0")
    if not sep:
        raise CardError(f"{source}: the '{keyword}' chunk has no text")
    if ctype == b"tEXt":
        return rest
    if ctype == b"zTXt":
        if not rest or rest[0] != 0:
            raise CardError(f"{source}: the '{keyword}' chunk uses an unknown compression")
        return _inflate(rest[1:], keyword, source)
    # iTXt: compression flag, method, language tag\0, translated keyword\0, text
    if len(rest) < 2:
        raise CardError(f"{source}: the '{keyword}' chunk is malformed")
    flag, method = rest[0], rest[1]
    parts = rest[2:].split(b"\0", 2)
    if len(parts) < 3:
        raise CardError(f"{source}: the '{keyword}' chunk is malformed")
    text = parts[2]
    if flag == 0:
        return text
    if flag != 1 or method != 0:
        raise CardError(f"{source}: the '{keyword}' chunk uses an unknown compression")
    return _inflate(text, keyword, source)


def _inflate(data: bytes, keyword: str, source: str) -> bytes:
    # Bounded: a small zTXt can expand to gigabytes (a zip bomb in a PNG).
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(data, MAX_TEXT_CHUNK + 1)
    except zlib.error as err:
        raise CardError(f"{source}: the '{keyword}' chunk is badly compressed ({err})") from None
    if len(out) > MAX_TEXT_CHUNK or inflater.unconsumed_tail:
        raise CardError(f"{source}: the '{keyword}' chunk inflates to more than {mib(MAX_TEXT_CHUNK)}")
    return out


# --------------------------------------------------------------------------------------
# whole-file chunk lists (for the avatar and for writing)


def split_chunks(data: bytes, source: str) -> list[tuple[bytes, bytes]]:
    """The chunks of an in-memory PNG up to IEND, as (type, body). Lenient: CRCs are not
    checked, bytes after IEND are dropped, a cut-off last chunk is dropped. Raises CardError
    when there is no usable image (no IHDR first, or no complete IDAT)."""
    if not data.startswith(SIGNATURE):
        raise CardError(f"{source}: not a PNG image")
    chunks: list[tuple[bytes, bytes]] = []
    pos = len(SIGNATURE)
    end = len(data)
    while pos + 8 <= end:
        length, ctype = struct.unpack_from(">I4s", data, pos)
        if ctype == b"IEND":
            break
        if length > _MAX_CHUNK_LENGTH or pos + 8 + length > end:
            break
        chunks.append((ctype, data[pos + 8 : pos + 8 + length]))
        pos += 12 + length
    if not chunks or chunks[0][0] != b"IHDR":
        raise CardError(f"{source}: PNG image has no header (IHDR) chunk")
    if not any(ctype == b"IDAT" for ctype, _ in chunks):
        raise CardError(f"{source}: PNG image has no image data (it may be truncated)")
    return chunks


def is_card_chunk(ctype: bytes, body: bytes) -> bool:
    if ctype not in TEXT_TYPES:
        return False
    keyword = body[: _MAX_KEYWORD + 1].split(b"\0", 1)[0]
    return keyword.decode("latin-1").lower() in CARD_KEYWORDS


def text_chunk(keyword: str, text: str) -> tuple[bytes, bytes]:
    return b"tEXt", keyword.encode("latin-1") + b"\0" + text.encode("latin-1")


def join_chunks(chunks: list[tuple[bytes, bytes]]) -> bytes:
    """A PNG file from chunks, with correct CRCs and a final IEND."""
    out = [SIGNATURE]
    for ctype, body in [*chunks, (b"IEND", b"")]:
        out.append(struct.pack(">I", len(body)))
        out.append(ctype)
        out.append(body)
        out.append(struct.pack(">I", zlib.crc32(body, zlib.crc32(ctype)) & 0xFFFFFFFF))
    return b"".join(out)


def with_card_texts(image_chunks: list[tuple[bytes, bytes]], texts: list[tuple[str, str]]) -> bytes:
    """SillyTavern's write: drop every chara/ccv3 text chunk, keep all others in order, and
    put the new tEXt chunks (in the given order) just before IEND."""
    kept = [(ctype, body) for ctype, body in image_chunks if not is_card_chunk(ctype, body)]
    return join_chunks(kept + [text_chunk(keyword, text) for keyword, text in texts])
