"""CHARX archives (character card V3 zip): read `card.json` and the icon, write an archive.

Callers: `tavern.cards.formats` (read_card / read_avatar / write_charx) and
`tavern.cards.sniff`. The layout is the V3 spec's and RisuAI's: `card.json` at the root,
assets under `assets/<type>/<kind>/<name>.<ext>`, referenced from `data.assets` as
`embeded://<path>` (sic).

A zip from the internet is hostile input: the whole archive is refused when it has too many
entries, declares too much uncompressed data or an implausible compression ratio (zip bomb),
has an encrypted entry, or names an entry with `..`, a leading `/` or a drive letter (path
traversal). Only `card.json` and the icon are ever read, each with a size cap.
"""

from __future__ import annotations

import re
import struct
import zipfile
import zlib
from collections.abc import Sequence
from typing import IO

from tavern.cards.wording import cannot_read, mib
from tavern.errors import CardError

MAX_ENTRIES = 4096
MAX_TOTAL_UNCOMPRESSED = 1024 * 1024 * 1024
MAX_CARD_JSON = 32 * 1024 * 1024
MAX_ASSET = 64 * 1024 * 1024
# Real assets (images, audio, JSON, scripts) compress 1:1 to about 1:20. A large entry
# declaring over 1:200 is padding built to explode (deflate's ceiling is about 1:1032).
_MAX_RATIO = 200
_RATIO_FLOOR = 1024 * 1024  # small entries may compress absurdly well (a run of spaces)

# Everything zipfile raises on corrupt input (it has no single error class).
ZIP_ERRORS = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    NotImplementedError,
    RuntimeError,
    ValueError,
    OSError,
    EOFError,
    struct.error,
    zlib.error,
    KeyError,
    IndexError,
    OverflowError,
)

_DRIVE = re.compile(r"^[A-Za-z]:")
_EOCD_SEARCH = 65535  # the end record sits within the last 64 KiB (its comment's maximum)
_MAX_DIRECTORY = MAX_ENTRIES * 1024  # generous: an entry's record is ~50 bytes plus its name


def check_entry_name(name: str, source: str) -> str:
    """The entry name with `/` separators; CardError when it could escape the archive."""
    norm = name.replace("\\", "/")
    if "\0" in norm or norm.startswith("/") or _DRIVE.match(norm):
        raise CardError(f"{source}: archive entry {name!r} has an absolute path")
    if ".." in norm.split("/"):
        raise CardError(f"{source}: archive entry {name!r} points outside the archive (..)")
    return norm


def _check_directory_size(f: IO[bytes], source: str) -> None:
    """Refuse an archive whose central directory is huge before zipfile parses it (zipfile
    builds an object per entry, so a million-entry directory would cost gigabytes)."""
    try:
        f.seek(0, 2)
        size = f.tell()
        tail_start = max(0, size - (_EOCD_SEARCH + 22))
        f.seek(tail_start)
        tail = f.read()
        f.seek(0)
    except OSError as err:
        raise cannot_read(source, err) from None
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or at + 22 > len(tail):
        return  # not a zip we can vet this way; zipfile will say what is wrong
    entries, directory_size = struct.unpack_from("<HI", tail, at + 10)
    if entries > MAX_ENTRIES or directory_size > _MAX_DIRECTORY:
        shown = "over 65535" if entries == 0xFFFF else str(entries)
        raise CardError(f"{source}: CHARX has {shown} entries, over the {MAX_ENTRIES} limit")


def open_archive(f: IO[bytes], source: str) -> zipfile.ZipFile:
    """Open and vet a CHARX archive; refuses the whole file on any unsafe entry."""
    _check_directory_size(f, source)
    try:
        zf = zipfile.ZipFile(f)
        infos = zf.infolist()
    except ZIP_ERRORS as err:
        raise CardError(f"{source}: not a valid CHARX (zip) file ({err})") from None
    if len(infos) > MAX_ENTRIES:
        raise CardError(f"{source}: CHARX has {len(infos)} entries, over the {MAX_ENTRIES} limit")
    total = 0
    for info in infos:
        check_entry_name(info.filename, source)
        if info.flag_bits & 0x1:
            raise CardError(f"{source}: CHARX entry {info.filename!r} is encrypted")
        total += info.file_size
        ratio = info.file_size // max(info.compress_size, 1)
        if info.file_size > _RATIO_FLOOR and ratio > _MAX_RATIO:
            raise CardError(
                f"{source}: CHARX entry {info.filename!r} claims a {ratio}:1 compression ratio (zip bomb)"
            )
    if total > MAX_TOTAL_UNCOMPRESSED:
        raise CardError(
            f"{source}: CHARX unpacks to {mib(total)}, over the {mib(MAX_TOTAL_UNCOMPRESSED)} limit"
        )
    return zf


def read_entry(zf: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int, source: str) -> bytes:
    """One entry's bytes, refusing more than `limit` even if the header lies about its size."""
    if info.file_size > limit:
        raise CardError(
            f"{source}: CHARX entry {info.filename!r} is {mib(info.file_size)}, over the {mib(limit)} limit"
        )
    try:
        with zf.open(info) as fh:
            data = fh.read(limit + 1)
    except ZIP_ERRORS as err:
        raise CardError(f"{source}: CHARX entry {info.filename!r} is corrupt ({err})") from None
    if len(data) > limit:
        raise CardError(f"{source}: CHARX entry {info.filename!r} is over the {mib(limit)} limit")
    return data


def find_card_json(zf: zipfile.ZipFile) -> zipfile.ZipInfo | None:
    infos = zf.infolist()
    for info in infos:
        if info.filename == "card.json":
            return info
    for info in infos:
        if info.filename.lower() == "card.json":
            return info
    return None


def read_card_json(f: IO[bytes], source: str) -> bytes:
    """The raw bytes of `card.json` from a CHARX archive."""
    zf = open_archive(f, source)
    with zf:
        info = find_card_json(zf)
        if info is None:
            raise CardError(f"{source}: CHARX has no card.json")
        return read_entry(zf, info, MAX_CARD_JSON, source)


def embedded_path(uri: object) -> str | None:
    """The archive path of an `embeded://` asset URI (also the correct spelling), else None."""
    if not isinstance(uri, str):
        return None
    for prefix in ("embeded://", "embedded://"):
        if uri.startswith(prefix):
            return uri[len(prefix) :]
    return None


def main_icon(assets: Sequence[dict[str, object]]) -> dict[str, object] | None:
    """The icon asset the V3 spec says to show: the `icon` named `main`, else the first icon."""
    icons = [a for a in assets if a.get("type") == "icon"]
    for asset in icons:
        if asset.get("name") == "main":
            return asset
    return icons[0] if icons else None


def read_icon(f: IO[bytes], assets: Sequence[dict[str, object]], source: str) -> bytes | None:
    """The bytes of the card's main icon stored in the archive, or None (e.g. `ccdefault:`)."""
    zf = open_archive(f, source)
    with zf:
        candidates = [main_icon(assets)] + [a for a in assets if a.get("type") == "icon"]
        for asset in candidates:
            path = embedded_path(asset.get("uri")) if asset else None
            if not path:
                continue
            try:
                info = zf.getinfo(path)
            except KeyError:
                continue
            return read_entry(zf, info, MAX_ASSET, source)
    return None


def build_archive(f: IO[bytes], card_json: bytes, assets: dict[str, bytes], source: str) -> None:
    """Write a CHARX to `f`: assets first, then `card.json` (RisuAI's order)."""
    for name in assets:
        norm = check_entry_name(name, source)
        if norm == "card.json" or not norm or norm.endswith("/"):
            raise CardError(f"{source}: {name!r} is not a usable asset path")
    with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in assets.items():
            zf.writestr(name.replace("\\", "/"), data)
        zf.writestr("card.json", card_json)
