"""The characters folder of the data home, kept the SillyTavern way: one PNG card per
character, the file stem being the character's key (also the name of its chat folder).

Callers: the CLI (`tavern import`, `tavern card ...`), the TUI's character list and the
session (which resolves a key or a typed name to a card). Chats are not touched here, which
is why `rename` changes the display name but never the key.

Listing stays cheap with many cards: name, tags and creator are cached in a small JSON index
(`.tavern-index.json` in the folder) keyed by file name, size and mtime, so only new or
changed PNGs are read. The index is only a cache: delete it and it is rebuilt.

Safety: every write is atomic; a new key is claimed with a hard link, so two imports never
overwrite each other; keys are sanitised file names, so no card name (say "../../evil") can
place a file outside the folder. Deleting moves the PNG to `<root>/../trash/characters/`,
from where `restore` brings it back.
"""

from __future__ import annotations

import builtins
import difflib
import errno
import json
import os
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from tavern.cards import png
from tavern.cards.formats import (
    MAX_IMAGE_FILE,
    card_png_bytes,
    load_card_with_avatar,
    read_card,
    write_atomic,
)
from tavern.cards.index import INDEX_NAME, INDEX_VERSION, CardEntry, card_files, entry_for, load_index
from tavern.cards.model import Card
from tavern.errors import CardError, NotFoundError
from tavern.store.atomic import make_dirs, write_temp
from tavern.store.names import sanitize_file_name

_MAX_KEY_BYTES = 150  # leaves room for "_NN", "-timestamp" and ".png" under the 255-byte limit
_TRASH_SUFFIX = re.compile(r"-\d{8}-\d{6}(?:-\d+)?$")


def key_for_name(name: str) -> str:
    """A file-name-safe key for a character name (the stem of its PNG): the one sanitizer's,
    so a name starting with "." never makes a hidden card (nor chat folder)."""
    return sanitize_file_name(name, "character", max_bytes=_MAX_KEY_BYTES)


def _is_safe_key(key: str) -> bool:
    return (
        bool(key)
        and key not in (".", "..")
        and not any(sep in key for sep in ("/", "\\", "\0"))
        and len(key.encode("utf-8", "surrogatepass")) <= 240
    )


class CardLibrary:
    """The characters folder `root` (created on first write)."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    @property
    def trash_dir(self) -> Path:
        return self.root.parent / "trash" / "characters"

    # ----------------------------------------------------------------------------------
    # listing and lookup

    def list(self) -> builtins.list[CardEntry]:
        """Every PNG in the folder, sorted by name. Unreadable files are listed with `error`
        set rather than hidden, so the user can see and remove them."""
        if not self.root.is_dir():
            return []
        index = self._load_index()
        fresh: dict[str, dict[str, object]] = {}
        entries: builtins.list[CardEntry] = []
        changed = False
        for filename, path, sig in card_files(self.root):
            cached = index.get(filename)
            if isinstance(cached, dict) and cached.get("sig") == sig:
                row: dict[str, object] = cached
            else:
                row = self._index_row(Path(path), filename[:-4], sig)
                changed = True
            fresh[filename] = row
            entries.append(self._entry(filename, row))
        if changed or fresh.keys() != index.keys():
            self._save_index(fresh)
        entries.sort(key=lambda e: (e.name.casefold(), e.key))
        return entries

    def resolve(self, key_or_name: str) -> str:
        """The key for an exact key, else a case-insensitive key or name, else a unique prefix.
        NotFoundError (with close matches) when nothing or several characters match."""
        query = key_or_name.strip()
        if not query:
            raise NotFoundError("no character name given")
        if _is_safe_key(query) and (self.root / f"{query}.png").is_file():
            return query
        entries = self.list()
        folded = query.casefold()
        exact = _distinct(
            [e for e in entries if e.key.casefold() == folded]
            or [e for e in entries if e.name.casefold() == folded]
        )
        if len(exact) == 1:
            return exact[0].key
        if len(exact) > 1:
            raise NotFoundError(f"'{query}' matches several characters: {_keys(exact)}; give the key")
        prefixed = _distinct(
            [
                e
                for e in entries
                if e.key.casefold().startswith(folded) or e.name.casefold().startswith(folded)
            ]
        )
        if len(prefixed) == 1:
            return prefixed[0].key
        if len(prefixed) > 1:
            raise NotFoundError(f"'{query}' matches several characters: {_keys(prefixed)}")
        names = sorted({e.name for e in entries} | {e.key for e in entries})
        close = difflib.get_close_matches(query, names, n=5, cutoff=0.5)
        hint = f"; did you mean: {', '.join(close)}?" if close else ""
        raise NotFoundError(f"no character '{query}' in {self.root}{hint}")

    def get(self, key_or_name: str) -> Card:
        """The card for a key or name (see `resolve`). NotFoundError or CardError."""
        return read_card(self.path(self.resolve(key_or_name)))

    def get_with_avatar(self, key: str) -> tuple[Card, bytes | None]:
        """The card of `key` and its picture's PNG bytes (the library screen's preview)."""
        return load_card_with_avatar(self.path(key))

    def path(self, key: str) -> Path:
        """The PNG file of an existing character. NotFoundError if there is none."""
        target = self._file(key)
        if not target.is_file():
            raise NotFoundError(f"no character with key '{key}' in {self.root}")
        return target

    def search(
        self, text: str | None = None, tag: str | None = None, creator: str | None = None
    ) -> builtins.list[CardEntry]:
        """Characters matching all given filters, case-insensitively: `text` in the name, key,
        a tag or the creator; `tag` equal to one of the tags; `creator` within the creator."""
        results = []
        for entry in self.list():
            if entry.error is not None:
                continue
            tags = [t.casefold() for t in entry.tags]
            if text:
                needle = text.casefold()
                hay = [entry.name.casefold(), entry.key.casefold(), entry.creator.casefold(), *tags]
                if not any(needle in h for h in hay):
                    continue
            if tag and tag.casefold() not in tags:
                continue
            if creator and creator.casefold() not in entry.creator.casefold():
                continue
            results.append(entry)
        return results

    # ----------------------------------------------------------------------------------
    # changes

    def import_file(self, path: Path | str) -> str:
        """Import a PNG, JSON or CHARX card; returns the new key ("Name", "Name_1", ...).
        The file is fully read and checked before anything is written."""
        card, avatar = load_card_with_avatar(path)
        data = card_png_bytes(card, avatar, str(path))
        return self._write_new(key_for_name(card.name), data)

    def save(self, key: str, card: Card, avatar: bytes | None = None) -> None:
        """Write `card` under `key` (new or existing). With `avatar` None an existing
        character keeps its picture, a new one gets a placeholder."""
        target = self._file(key)
        if avatar is None:
            avatar = self._image_of(target)
        data = card_png_bytes(card, avatar, str(target))
        self._ensure_root()
        write_atomic(target, data)

    def rename(self, key: str, new_name: str) -> None:
        """Change the character's display name. The key (file and chat folder) stays."""
        if not new_name.strip():
            raise CardError(f"{self._file(key)}: a character needs a name")
        card = read_card(self.path(key))
        card.name = new_name
        self.save(key, card)

    def duplicate(self, key: str) -> str:
        """Copy a character (card and picture) under a new key; returns that key."""
        card, avatar = load_card_with_avatar(self.path(key))
        return self._write_new(key, card_png_bytes(card, avatar, str(self._file(key))))

    def delete(self, key: str) -> str:
        """Move the character's PNG to the trash; returns the trash file name for `restore`."""
        source = self.path(key)
        trash = self.trash_dir
        try:
            make_dirs(trash)
        except OSError as err:
            raise CardError(f"{trash}: cannot create the trash folder ({err.strerror or err})") from None
        stamp = time.strftime("%Y%m%d-%H%M%S")
        name = f"{key}-{stamp}.png"
        n = 1
        while (trash / name).exists():
            name = f"{key}-{stamp}-{n}.png"
            n += 1
        _move(source, trash / name)
        return name

    def trash(self) -> builtins.list[str]:
        """File names in the trash, oldest first by name."""
        if not self.trash_dir.is_dir():
            return []
        return sorted(p.name for p in self.trash_dir.glob("*.png") if p.is_file())

    def restore(self, trash_name: str) -> str:
        """Bring a deleted character back; returns its key (a new one if the old is taken)."""
        in_trash = self.trash()
        if trash_name not in in_trash or not _is_safe_key(trash_name):
            close = difflib.get_close_matches(trash_name, in_trash, n=5, cutoff=0.5)
            hint = f"; did you mean: {', '.join(close)}?" if close else ""
            raise NotFoundError(f"no '{trash_name}' in {self.trash_dir}{hint}")
        source = self.trash_dir / trash_name
        base = _TRASH_SUFFIX.sub("", trash_name[: -len(".png")]) or "character"
        self._ensure_root()
        return self._claim(base, lambda target: _move(source, target, exclusive=True))

    # ----------------------------------------------------------------------------------
    # internals

    def _file(self, key: str) -> Path:
        if not _is_safe_key(key):
            raise NotFoundError(f"'{key}' is not a valid character key")
        return self.root / f"{key}.png"

    def _ensure_root(self) -> None:
        try:
            make_dirs(self.root)
        except OSError as err:
            raise CardError(
                f"{self.root}: cannot create the characters folder ({err.strerror or err})"
            ) from None

    def _image_of(self, target: Path) -> bytes | None:
        try:
            if target.stat().st_size > MAX_IMAGE_FILE:
                raise CardError(f"{target}: picture is over the {MAX_IMAGE_FILE // 2**20} MiB limit")
            data = target.read_bytes()
        except OSError:
            return None
        try:
            chunks = png.split_chunks(data, str(target))
        except CardError:
            return None  # a damaged picture is replaced by the placeholder
        return png.join_chunks([c for c in chunks if not png.is_card_chunk(*c)])

    def _write_new(self, base: str, data: bytes) -> str:
        """Write `data` under the first free key among base, base_1, base_2, ..."""
        self._ensure_root()
        try:
            # Whole and fsynced under a hidden temporary name (removed again on any failure, a
            # full disk included), then claimed under a free key by a hard link.
            tmp = write_temp(self.root / ".import", [data])
        except OSError as err:
            raise CardError(f"{self.root}: cannot write ({err.strerror or err})") from None
        try:
            return self._claim(base, lambda target: _move(tmp, target, exclusive=True))
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def _claim(self, base: str, place: Callable[[Path], None]) -> str:
        """Find a free key for `base` and let `place(target)` put the file there; `place`
        raises FileExistsError when another writer took the name first."""
        # Compared without case: on Windows and macOS "Ann" and "ann" are one file (and one
        # chat folder), so a folder must stay valid when it moves there.
        taken = {n[:-4].casefold() for n in os.listdir(self.root) if n.endswith(".png")}
        n = 0
        while True:
            key = base if n == 0 else f"{base}_{n}"
            n += 1
            if key.casefold() in taken:
                continue
            target = self.root / f"{key}.png"
            if target.resolve().parent != self.root.resolve():
                raise CardError(f"{target}: refusing to write outside {self.root}")
            try:
                place(target)
            except FileExistsError:
                taken.add(key.casefold())
                continue
            return key

    # index -------------------------------------------------------------------------

    def _index_row(self, path: Path, key: str, sig: builtins.list[int]) -> dict[str, object]:
        try:
            card = read_card(path)
        except CardError as err:
            return {"sig": sig, "error": str(err)}
        return {"sig": sig, "name": card.name, "tags": card.tags, "creator": card.creator}

    def _entry(self, filename: str, row: dict[str, object]) -> CardEntry:
        return entry_for(self.root, filename, row)

    def _load_index(self) -> dict[str, object]:
        return load_index(self.root)

    def _save_index(self, entries: dict[str, dict[str, object]]) -> None:
        # ASCII with escapes: a name with a lone surrogate still makes a valid file.
        data = json.dumps({"version": INDEX_VERSION, "entries": entries})
        try:
            write_atomic(self.root / INDEX_NAME, data.encode("ascii"))
        except CardError:
            pass  # a read-only folder still lists; it just re-reads the cards next time


def _distinct(entries: list[CardEntry]) -> list[CardEntry]:
    seen: dict[str, CardEntry] = {}
    for entry in entries:
        seen.setdefault(entry.key, entry)
    return list(seen.values())


def _keys(entries: list[CardEntry]) -> str:
    shown = ", ".join(e.key for e in entries[:8])
    return shown + (f" and {len(entries) - 8} more" if len(entries) > 8 else "")


def _move(source: Path, target: Path, *, exclusive: bool = False) -> None:
    """Move a file. With `exclusive`, never replace an existing target (FileExistsError):
    a hard link claims the name atomically; where links are unsupported, check then rename."""
    try:
        if exclusive:
            try:
                os.link(source, target)
            except FileExistsError:
                raise
            except OSError as err:
                if err.errno == errno.EEXIST:
                    raise FileExistsError(str(target)) from None
                if target.exists():
                    raise FileExistsError(str(target)) from None
                shutil.move(str(source), str(target))
                return
            os.unlink(source)
            return
        try:
            os.replace(source, target)
        except OSError as err:
            if err.errno != errno.EXDEV:
                raise
            shutil.move(str(source), str(target))  # trash on another file system
    except FileExistsError:
        raise
    except OSError as err:
        raise CardError(f"{target}: cannot move {source.name} here ({err.strerror or err})") from None
