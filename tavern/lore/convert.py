"""Lorebook files in and out: SillyTavern world JSON (`worlds/<name>.json`).

Callers: the CLI (`tavern lore ...`), the import service, the TUI's lore screens, the prompt
builder (`load_lorebook_cached`, every turn) and tests. The scan never reads files; it gets
`Lorebook` objects.

World JSON: `{"entries": {"<uid>": entry, ...}, ...}`. Read leniently, as files in the wild
come from many tools (`tavern.lore.fields`): `entries` may be a list, keys may be one
comma-separated string (`/regex/` keys may contain commas), numbers may be strings, fields may
be missing. Write strictly: the entry object keyed by uid, SillyTavern's key names. A file
written by SillyTavern comes back out key for key (`source_keys` remembers which keys it had);
unknown keys ride along in `extra`.

A missing field means what it means to SillyTavern's scan, which reads the file as is: a
missing `selective` or `useProbability` is false there (the editor template says true, but the
scan sees `undefined`). Those two differ from a new entry's defaults; everything else uses them.

A card JSON or a bare `character_book` handed to `lorebook_from_dict` is read as the card's
book (`tavern.lore.card_book`).
"""

from __future__ import annotations

import copy
import json
import os
import threading
from pathlib import Path

from tavern.errors import LoreError
from tavern.lore.card_book import lorebook_from_character_book
from tavern.lore.fields import ABSENT_DEFAULTS, BadField, coerce, int_or_none, new_entry, read_entries
from tavern.lore.gcpause import paused_gc
from tavern.lore.model import ATTR_BY_ST_NAME, OPTIONAL_ST_FIELDS, ST_NAMES, Lorebook, LoreEntry
from tavern.store.atomic import atomic_write_text, make_dirs

__all__ = [
    "load_lorebook",
    "load_lorebook_cached",
    "lorebook_from_dict",
    "lorebook_to_world_dict",
    "save_lorebook",
]


def _entry_from_world(obj: object, fallback_uid: int) -> LoreEntry:
    """One world entry; `fallback_uid` (its key in `entries`, else its index) when it has no
    usable uid."""
    if not isinstance(obj, dict):
        raise BadField(f"is not an object ({type(obj).__name__})")
    values: dict[str, object] = {}
    extra: dict[str, object] = {}
    for name, raw in obj.items():
        attr = ATTR_BY_ST_NAME.get(name)
        if attr is None:
            extra[name] = raw
            continue
        try:
            values[attr] = coerce(attr, raw)
        except BadField as err:
            raise BadField(f"'{name}' {err}") from None
    for attr, default in ABSENT_DEFAULTS.items():
        if attr not in values and attr not in OPTIONAL_ST_FIELDS:
            # Only the containers need a copy (15 deepcopy calls an entry were a tenth of the load).
            values[attr] = copy.deepcopy(default) if isinstance(default, (list, dict)) else default
    if "uid" not in obj or values.get("uid") is None or isinstance(values.get("uid"), bool):
        values["uid"] = fallback_uid
    if values.get("order") is None:
        values["order"] = 100
    return new_entry(values, extra, tuple(obj.keys()))


def lorebook_from_dict(obj: object, name: str, *, source: str | None = None) -> Lorebook:
    """Build a `Lorebook` from a parsed world JSON object (or a card's `character_book`).

    `source` names the file in error messages (default: the book name). Raises LoreError.
    """
    where = source or name
    if not isinstance(obj, dict):
        raise LoreError(f"{where}: not a lorebook (expected a JSON object, got {type(obj).__name__})")
    # A whole character card: take its embedded book.
    data = obj.get("data")
    if "entries" not in obj and isinstance(data, dict) and "spec" in obj:
        book = data.get("character_book")
        if not isinstance(book, dict):
            raise LoreError(f"{where}: character card has no embedded lorebook (character_book)")
        return lorebook_from_character_book(book, name, source=where)
    if "entries" not in obj:
        raise LoreError(f"{where}: not a SillyTavern lorebook (no 'entries')")
    entries_raw = obj["entries"]
    if _is_character_book(entries_raw):
        return lorebook_from_character_book(obj, name, source=where)
    items: list[tuple[object, object]]  # (key in the file, entry); a list has no keys
    if isinstance(entries_raw, dict):
        items = list(entries_raw.items())
    elif isinstance(entries_raw, list):
        items = [(None, item) for item in entries_raw]
    else:
        raise LoreError(f"{where}: 'entries' must be an object or a list, got {type(entries_raw).__name__}")
    labelled = (_world_item(index, dict_key, raw) for index, (dict_key, raw) in enumerate(items))
    entries = read_entries(labelled, _entry_from_world, where)
    extra = {k: v for k, v in obj.items() if k != "entries"}
    return Lorebook(name=name, entries=entries, extra=extra)


def _world_item(index: int, dict_key: object, raw: object) -> tuple[str, object, int]:
    """(label, entry, fallback uid) of the entry at `index`, keyed `dict_key` in the file."""
    fallback = int_or_none(dict_key)
    label = dict_key if dict_key is not None else str(index)
    return f"entry {label}", raw, index if fallback is None else fallback


def _is_character_book(entries: object) -> bool:
    return (
        isinstance(entries, list)
        and bool(entries)
        and all(isinstance(e, dict) for e in entries)
        and any("keys" in e or "insertion_order" in e for e in entries)
        and not any("key" in e for e in entries)
    )


def _entry_to_world(entry: LoreEntry) -> dict[str, object]:
    """One entry as SillyTavern writes it (keys the source had, in its order; new ones after)."""
    fresh: dict[str, object] = {}
    for attr, name in ST_NAMES.items():
        value = getattr(entry, attr)
        if attr in OPTIONAL_ST_FIELDS and value is None:
            continue
        fresh[name] = copy.deepcopy(value)
    if entry.source_keys is None:
        out = fresh
        out.update(copy.deepcopy(entry.extra))
        return out
    out = {}
    for name in entry.source_keys:
        if name in fresh:
            out[name] = fresh[name]
        elif name in entry.extra:
            out[name] = copy.deepcopy(entry.extra[name])
    # Fields the source lacked: write only those that no longer mean "absent".
    for attr, name in ST_NAMES.items():
        if name in out or name not in fresh:
            continue
        if (
            attr in ABSENT_DEFAULTS
            and fresh[name] == ABSENT_DEFAULTS[attr]
            and type(fresh[name]) is type(ABSENT_DEFAULTS[attr])
        ):
            continue
        out[name] = fresh[name]
    for name, value in entry.extra.items():
        if name not in out:
            out[name] = copy.deepcopy(value)
    return out


def lorebook_to_world_dict(book: Lorebook) -> dict[str, object]:
    """The SillyTavern world JSON object for `book` (`entries` keyed by uid, then `extra`)."""
    entries = {str(entry.uid): _entry_to_world(entry) for entry in book.entries}
    out: dict[str, object] = {"entries": entries}
    for name, value in book.extra.items():
        if name != "entries":
            out[name] = copy.deepcopy(value)
    return out


def load_lorebook(path: str | os.PathLike[str]) -> Lorebook:
    """Read a SillyTavern world JSON file (or a card JSON / bare `character_book`).

    The book's name is the file name without `.json`, as in SillyTavern (a `name` key inside
    the file is kept in `extra`). Raises LoreError naming the file for anything unreadable.
    """
    file = Path(path)
    try:
        raw = file.read_bytes()
    except FileNotFoundError:
        raise LoreError(f"{file}: lorebook file not found") from None
    except IsADirectoryError:
        raise LoreError(f"{file}: is a folder, not a lorebook file") from None
    except OSError as err:
        raise LoreError(f"{file}: cannot read lorebook ({err.strerror or err})") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise LoreError(f"{file}: not UTF-8 text (byte {err.start})") from None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as err:
        raise LoreError(
            f"{file}: not valid JSON ({err.msg} at line {err.lineno} column {err.colno})"
        ) from None
    except RecursionError:
        raise LoreError(f"{file}: JSON nested too deeply") from None
    with paused_gc():  # a big book is millions of new objects: see tavern.lore.gcpause
        return lorebook_from_dict(obj, file.stem, source=str(file))


# Books read by `load_lorebook_cached`, by resolved path: (mtime_ns, size, book).
_LOADED: dict[Path, tuple[int, int, Lorebook]] = {}
_LOADED_LOCK = threading.Lock()
_LOADED_SIZE = 16


def load_lorebook_cached(path: str | os.PathLike[str]) -> Lorebook:
    """`load_lorebook`, but the same object again while the file is unchanged (same mtime and
    size). For callers that scan every turn: the scan's compiled index is cached per book
    object, so a fresh object each turn would rebuild it (hundreds of ms for 10,000 entries).
    Treat the result as read-only; an editor should use `load_lorebook`.
    """
    file = Path(path)
    try:
        info = file.stat()
        key = file.resolve()
    except OSError:
        return load_lorebook(file)  # raises the right LoreError
    with _LOADED_LOCK:
        found = _LOADED.get(key)
        if found is not None and found[0] == info.st_mtime_ns and found[1] == info.st_size:
            return found[2]
    book = load_lorebook(file)
    with _LOADED_LOCK:
        _LOADED.pop(key, None)
        _LOADED[key] = (info.st_mtime_ns, info.st_size, book)
        while len(_LOADED) > _LOADED_SIZE:
            del _LOADED[next(iter(_LOADED))]
    return book


def save_lorebook(book: Lorebook, path: str | os.PathLike[str]) -> None:
    """Write `book` as SillyTavern world JSON through the atomic writer (temp, fsync, rename):
    a new lorebook is the user's own (0600), an edited one keeps its permissions."""
    file = Path(path)
    data = json.dumps(lorebook_to_world_dict(book), ensure_ascii=False, indent=4)
    try:
        make_dirs(file.parent)
        atomic_write_text(file, data)
    except OSError as err:
        raise LoreError(f"{file}: cannot write lorebook ({err.strerror or err})") from None
