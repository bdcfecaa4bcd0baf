"""Reading and writing card files: PNG (`chara`/`ccv3` text chunks), JSON and CHARX.

Callers: `tavern.cards` re-exports the public functions for the CLI (`tavern import`,
`tavern card show`, `tavern export card`) and the TUI; `tavern.cards.library` uses the
internal `load_card_with_avatar` and `card_png_bytes`.

The format is decided by the file's first bytes, never by its extension. Every failure is
one CardError whose message starts with the file name; nothing else escapes (the fuzz test in
tests/cards checks this). Writes go through the one atomic writer (`tavern.store.atomic`): a
temp file in the same folder, fsync, rename, so a crash leaves either the old file or the new
one. The `write_card_*` functions are exports (a file the user places: umask permissions); the
library's own files are written with `write_atomic`'s default, the user's own 0600.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import math
import os
import stat
from typing import IO, NoReturn

from tavern.cards import charx, png
from tavern.cards.avatar import convert_to_png, placeholder_avatar
from tavern.cards.model import SPEC_V3, Card
from tavern.cards.wording import cannot_read, mib
from tavern.errors import CardError
from tavern.store.atomic import PRIVATE_FILE, USER_FILE, atomic_write_bytes

MAX_JSON_FILE = 32 * 1024 * 1024
MAX_IMAGE_FILE = 64 * 1024 * 1024

_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
_OTHER_IMAGES = (
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"BM", "a BMP image"),
)


# --------------------------------------------------------------------------------------
# bytes -> JSON


def decode_json_bytes(raw: bytes, source: str, what: str) -> object:
    """Parse JSON bytes strictly: UTF-8 (a BOM is dropped; UTF-16 with a BOM is accepted),
    no NaN/Infinity (they would not survive a round trip). CardError names `what`."""
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            text = raw.decode("utf-16")
        except UnicodeDecodeError:
            raise CardError(f"{source}: {what} is not valid UTF-16 text") from None
    else:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise CardError(
                f"{source}: {what} is not UTF-8 text (byte 0x{raw[err.start]:02x} at offset {err.start})"
            ) from None
    text = text.removeprefix("\ufeff")
    try:
        return json.loads(text, parse_constant=_no_constant, parse_float=_finite_float)
    except json.JSONDecodeError as err:
        raise CardError(
            f"{source}: {what} is not valid JSON (line {err.lineno} column {err.colno}: {err.msg})"
        ) from None
    except RecursionError:
        raise CardError(f"{source}: {what} is nested too deeply") from None
    except ValueError as err:  # our number checks, and ints too long for Python
        raise CardError(f"{source}: {what} is not valid JSON ({err})") from None


def _no_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:20]} is out of range")
    return value


def _payload_json(payload: bytes, keyword: str, source: str) -> object:
    """A PNG text payload -> JSON: base64 as SillyTavern writes it, read leniently (line
    breaks, missing padding, the URL-safe alphabet), or raw JSON as some tools write it."""
    text = payload.strip()
    what = f"the '{keyword}' chunk"
    if text.startswith((b"{", b"\xef\xbb\xbf")):
        return decode_json_bytes(text, source, what)
    compact = text.translate(None, b" \t\r\n\x0b\x0c").rstrip(b"=")
    compact = compact.replace(b"-", b"+").replace(b"_", b"/")
    if not compact or len(compact) % 4 == 1:
        raise CardError(f"{source}: {what} is not valid base64")
    try:
        raw = base64.b64decode(compact + b"=" * (-len(compact) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise CardError(f"{source}: {what} is not valid base64") from None
    return decode_json_bytes(raw, source, f"{what} (decoded)")


def _card_from_png_texts(found: png.CardTexts, source: str) -> Card:
    texts = found.texts
    if not texts:
        if found.truncated:
            raise CardError(f"{source}: PNG is truncated and holds no character data")
        raise CardError(f"{source}: PNG holds no character data (no 'chara' or 'ccv3' chunk)")
    first_error: CardError | None = None
    # ccv3 wins over chara (SillyTavern and the V3 spec); if ccv3 is unreadable, the V2 copy
    # in chara is still the same card, so fall back to it rather than refuse the file.
    for keyword in ("ccv3", "chara"):
        if keyword not in texts:
            continue
        try:
            return Card.from_dict(_payload_json(texts[keyword], keyword, source), source)
        except CardError as err:
            first_error = first_error or err
    assert first_error is not None
    raise first_error


# --------------------------------------------------------------------------------------
# reading


def check_regular_file(path: str | os.PathLike[str]) -> None:
    """CardError unless `path` is an existing regular file (opening a FIFO would block)."""
    source = str(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise CardError(f"{source}: file not found") from None
    except OSError as err:
        raise cannot_read(source, err) from None
    if stat.S_ISDIR(mode):
        raise CardError(f"{source}: is a folder, not a card file")
    if not stat.S_ISREG(mode):
        raise CardError(f"{source}: is not a regular file")


def _open(path: str | os.PathLike[str]) -> tuple[IO[bytes], int]:
    source = str(path)
    check_regular_file(path)
    try:
        f = open(path, "rb")  # noqa: SIM115 - returned to the caller, who closes it
    except FileNotFoundError:
        raise CardError(f"{source}: file not found") from None
    except OSError as err:
        raise cannot_read(source, err) from None
    try:
        size = os.fstat(f.fileno()).st_size
    except OSError as err:
        f.close()
        raise cannot_read(source, err) from None
    return f, size


def _sniff(head: bytes) -> str:
    if head.startswith(png.SIGNATURE):
        return "png"
    if head.startswith(_ZIP_MAGIC):
        return "zip"
    return "other"


def _read_limited(f: IO[bytes], size: int, limit: int, source: str, what: str) -> bytes:
    if size > limit:
        raise CardError(f"{source}: {what} is {mib(size)}, over the {mib(limit)} limit")
    try:
        data = f.read(limit + 1)
    except OSError as err:
        raise cannot_read(source, err) from None
    if len(data) > limit:
        raise CardError(f"{source}: {what} is over the {mib(limit)} limit")
    return data


def _card_from_stream(f: IO[bytes], size: int, source: str) -> Card:
    try:
        head = f.read(8)
        if not head:
            raise CardError(f"{source}: file is empty")
        kind = _sniff(head)
        if kind == "png":
            return _card_from_png_texts(png.scan_card_texts(f, size, source), source)
        f.seek(0)
        if kind == "zip":
            raw = charx.read_card_json(f, source)
            return Card.from_dict(decode_json_bytes(raw, source, "card.json"), source)
        for magic, label in _OTHER_IMAGES:
            if head.startswith(magic):
                raise CardError(f"{source}: is {label}; cards are PNG, JSON or CHARX files")
        if head.startswith(b"RIFF") and f.read(12)[8:12] == b"WEBP":
            raise CardError(f"{source}: is a WebP image; cards are PNG, JSON or CHARX files")
        f.seek(0)
        raw = _read_limited(f, size, MAX_JSON_FILE, source, "JSON file")
        if not raw.lstrip(b" \t\r\n\xef\xbb\xbf\xff\xfe\x00").startswith((b"{", b"[")):
            raise CardError(f"{source}: not a character card (not a PNG, JSON or CHARX file)")
        obj = decode_json_bytes(raw, source, "file")
        _refuse_other_kinds(obj, source)
        return Card.from_dict(obj, source)
    except OSError as err:
        raise cannot_read(source, err) from None


def _refuse_other_kinds(obj: object, source: str) -> None:
    """A clear message for the files users most often mistake for cards."""
    from tavern.cards.kinds import kind_of_json

    label = {
        "lorebook": "a lorebook (World Info)",
        "chat": "a chat",
        "preset:sampler": "a sampler preset",
        "preset:instruct": "an instruct preset",
        "preset:context": "a context preset",
        "preset:chat": "a chat-completion preset",
    }.get(kind_of_json(obj))
    if label:
        raise CardError(f"{source}: is {label}, not a character card")


def read_card(path: str | os.PathLike[str]) -> Card:
    """Read a card from a PNG, JSON or CHARX file (detected by content). Raises CardError."""
    f, size = _open(path)
    with f:
        return _card_from_stream(f, size, str(path))


def read_card_bytes(data: bytes, name: str = "<card>") -> Card:
    """Read a card from the bytes of a PNG, JSON or CHARX file; `name` is used in errors."""
    return _card_from_stream(io.BytesIO(data), len(data), name)


def _icon_from_data_uri(card: Card, source: str) -> bytes | None:
    icon = charx.main_icon(card.assets)
    uri = icon.get("uri") if icon else None
    if not isinstance(uri, str) or not uri.startswith("data:") or ";base64," not in uri[:100]:
        return None
    encoded = uri.split(",", 1)[1]
    if len(encoded) > MAX_IMAGE_FILE * 4 // 3 + 4:
        raise CardError(f"{source}: icon asset is over the {mib(MAX_IMAGE_FILE)} limit")
    try:
        return base64.b64decode(encoded, validate=False)
    except (binascii.Error, ValueError):
        raise CardError(f"{source}: icon asset is not valid base64") from None


def load_card_with_avatar(path: str | os.PathLike[str]) -> tuple[Card, bytes | None]:
    """Read the card and its picture in one pass over the file (for importing).

    The picture is PNG bytes for a PNG card (its card chunks removed), the icon asset's bytes
    for CHARX (any image format), a `data:` icon for JSON V3, else None.
    """
    source = str(path)
    f, size = _open(path)
    with f:
        try:
            head = f.read(8)
            f.seek(0)
            kind = _sniff(head)
            if kind == "png":
                data = _read_limited(f, size, MAX_IMAGE_FILE, source, "PNG file")
                buf = io.BytesIO(data)
                buf.seek(len(png.SIGNATURE))
                card = _card_from_png_texts(png.scan_card_texts(buf, len(data), source), source)
                return card, _png_picture(data, source)
            card = _card_from_stream(f, size, source)
            if kind == "zip":
                f.seek(0)
                return card, charx.read_icon(f, card.assets, source)
            return card, _icon_from_data_uri(card, source)
        except OSError as err:
            raise cannot_read(source, err) from None


def _png_picture(data: bytes, source: str) -> bytes:
    chunks = png.split_chunks(data, source)
    return png.join_chunks([c for c in chunks if not png.is_card_chunk(*c)])


def read_avatar(path: str | os.PathLike[str]) -> bytes | None:
    """The card's picture: PNG bytes for a PNG (card text chunks removed; the card itself is
    not parsed), the main icon for CHARX (PNG, WebP, ... as stored), a `data:` URI icon for
    JSON V3, else None. Raises CardError."""
    source = str(path)
    f, size = _open(path)
    with f:
        try:
            if f.read(8).startswith(png.SIGNATURE):
                f.seek(0)
                return _png_picture(_read_limited(f, size, MAX_IMAGE_FILE, source, "PNG file"), source)
        except OSError as err:
            raise cannot_read(source, err) from None
    return load_card_with_avatar(path)[1]


# --------------------------------------------------------------------------------------
# writing


def _json_bytes(obj: object, indent: int | None = None, source: str = "<card>") -> bytes:
    separators = (",", ":") if indent is None else (",", ": ")
    try:
        text = json.dumps(obj, ensure_ascii=False, indent=indent, separators=separators)
        try:
            return text.encode("utf-8")
        except UnicodeEncodeError:
            # A lone surrogate (legal in JSON escapes, not in UTF-8): escape everything.
            return json.dumps(obj, ensure_ascii=True, indent=indent, separators=separators).encode()
    except RecursionError:
        # The indenting encoder is pure Python: it needs more stack than the parser did.
        raise CardError(f"{source}: card JSON is nested too deeply to write; nothing was written") from None


# Tavern never writes a card its own reader refuses: such a card would be lost the moment it
# is saved. The limits are the reader's (a card chunk of `png.MAX_TEXT_CHUNK`, a PNG of
# `MAX_IMAGE_FILE`, a JSON file of `MAX_JSON_FILE`), which bound the memory a hostile file can
# take. A card over one in SillyTavern's full form is written without the top-level V1 copies
# (every V2 reader, SillyTavern's `readFromV2` included, takes the fields from `data`: nothing
# is lost and the text is half the size); over it even so, it is refused before anything is
# written, with one line naming the limit.


def _chunk_length(keyword: str, payload: bytes) -> int:
    """Length of the tEXt chunk holding `payload` in base64, as the reader measures it."""
    return len(keyword) + 1 + 4 * ((len(payload) + 2) // 3)


def _card_texts(card: Card, source: str, image_size: int) -> list[tuple[str, str]]:
    """The `chara` and `ccv3` texts for `card`, in the fullest form Tavern can read back."""
    problem = ""
    for v1_copies in (True, False):
        v2_obj = card.to_v2_dict(source, v1_copies=v1_copies)
        # The ccv3 chunk is the same object with the V3 spec (Card.to_v3_png_dict), built
        # from the V2 one here to serialise the card once.
        v3_obj = {**v2_obj, "spec": SPEC_V3, "spec_version": "3.0"}
        payloads = [
            ("chara", _json_bytes(v2_obj, source=source)),
            ("ccv3", _json_bytes(v3_obj, source=source)),
        ]
        chunk = max(_chunk_length(keyword, payload) for keyword, payload in payloads)
        total = image_size + sum(12 + _chunk_length(keyword, payload) for keyword, payload in payloads)
        if chunk > png.MAX_TEXT_CHUNK:
            problem = (
                f"{source}: card is too big to write: its text would take a {mib(chunk)} PNG chunk, "
                f"over the {mib(png.MAX_TEXT_CHUNK)} limit on reading cards; nothing was written"
            )
        elif total > MAX_IMAGE_FILE:
            problem = (
                f"{source}: card is too big to write: the PNG would be {mib(total)}, "
                f"over the {mib(MAX_IMAGE_FILE)} limit on reading cards; nothing was written"
            )
        else:
            return [(keyword, base64.b64encode(payload).decode("ascii")) for keyword, payload in payloads]
    raise CardError(problem)


def card_png_bytes(card: Card, avatar: bytes | None, source: str = "<card>") -> bytes:
    """The PNG file for `card`: the avatar's chunks, then `chara` (V2) and `ccv3` (V3) tEXt
    chunks before IEND, as SillyTavern writes them. A non-PNG avatar is converted; None gets
    a placeholder. CardError for a card Tavern could not read back (see above)."""
    if avatar is None:
        avatar = placeholder_avatar(card.name)
    elif not avatar.startswith(png.SIGNATURE):
        avatar = convert_to_png(avatar, source)
    chunks = [c for c in png.split_chunks(avatar, f"{source} (avatar)") if not png.is_card_chunk(*c)]
    image_size = len(png.SIGNATURE) + 12 + sum(12 + len(body) for _, body in chunks)
    data = png.with_card_texts(chunks, _card_texts(card, source, image_size))
    _check_reads_back(data, source)
    return data


def _check_reads_back(data: bytes, source: str) -> None:
    """Read the bytes about to be written with the reader itself, so that what the size checks
    do not foresee (a V1 card nested one level deeper once it moves into `data`) is refused too."""
    try:
        _card_from_stream(io.BytesIO(data), len(data), source)
    except CardError as err:
        detail = str(err).removeprefix(f"{source}: ")
        raise CardError(
            f"{source}: Tavern could not read this card back ({detail}); nothing was written"
        ) from None


def _fitting_json(objs: list[tuple[object, int | None]], limit: int, source: str, what: str) -> bytes:
    """The JSON of the first (object, indent) in `objs` that is within `limit`; else CardError."""
    size = 0
    for obj, indent in objs:
        data = _json_bytes(obj, indent=indent, source=source)
        if len(data) + 1 <= limit:
            return data
        size = len(data) + 1
    raise CardError(
        f"{source}: card is too big to write: {what} would be {mib(size)}, "
        f"over the {mib(limit)} limit on reading cards; nothing was written"
    )


def write_atomic(path: str | os.PathLike[str], data: bytes, *, mode: int = PRIVATE_FILE) -> None:
    """Write `data` to `path` through the atomic writer (a new file gets `mode`, an existing
    one keeps its permissions). Raises CardError naming the path on any OS error; no partial
    file and no temporary file is left behind."""
    try:
        atomic_write_bytes(path, data, mode=mode)
    except OSError as err:
        raise CardError(f"{path}: cannot write ({err.strerror or err})") from None


def write_card_png(card: Card, path: str | os.PathLike[str], avatar_png: bytes | None = None) -> None:
    """Write `card` as a PNG card (V2 `chara` + V3 `ccv3`). `avatar_png` None -> placeholder."""
    write_atomic(path, card_png_bytes(card, avatar_png, str(path)), mode=USER_FILE)


def write_card_json(card: Card, path: str | os.PathLike[str], version: int = 2) -> None:
    """Write `card` as a JSON file: version 2 (SillyTavern's shape) or 3 (`chara_card_v3`)."""
    if version not in (2, 3):
        raise CardError(f"{path}: card JSON version must be 2 or 3, not {version!r}")
    source = str(path)
    if version == 2:
        full, compact = card.to_v2_dict(source), card.to_v2_dict(source, v1_copies=False)
    else:
        full = compact = card.to_v3_dict(source)
    data = _fitting_json([(full, 4), (compact, None)], MAX_JSON_FILE, source, "the JSON file")
    write_atomic(path, data + b"\n", mode=USER_FILE)


def write_charx(card: Card, path: str | os.PathLike[str], assets: dict[str, bytes] | None = None) -> None:
    """Write a CHARX: `card.json` (V3) plus `assets` (archive path -> bytes, e.g.
    `assets/icon/image/main.png`). The caller keeps `card.assets` URIs
    (`embeded://assets/...`) in step with the paths."""
    source = str(path)
    v3 = card.to_v3_dict(source)
    card_json = _fitting_json([(v3, 4), (v3, None)], charx.MAX_CARD_JSON, source, "card.json")
    for name, body in (assets or {}).items():
        if len(body) > charx.MAX_ASSET:
            raise CardError(
                f"{source}: asset {name!r} is {mib(len(body))}, over the {mib(charx.MAX_ASSET)} limit "
                "on reading cards; nothing was written"
            )
    out = io.BytesIO()
    charx.build_archive(out, card_json, assets or {}, source)
    write_atomic(path, out.getvalue(), mode=USER_FILE)
