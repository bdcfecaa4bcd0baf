"""Lorebook files in and out: SillyTavern world JSON and the V2/V3 card `character_book`.

Callers: the CLI (`tavern lore ...`), the card importer/exporter (embedded books), the TUI's
lore screens and tests. The scan never reads files; it gets `Lorebook` objects.

World JSON (SillyTavern `worlds/<name>.json`): `{"entries": {"<uid>": entry, ...}, ...}`.
Read leniently, as files in the wild come from many tools: `entries` may be a list, keys may be
one comma-separated string (`/regex/` keys may contain commas), numbers may be strings, fields
may be missing. Write strictly: the entry object keyed by uid, SillyTavern's key names. A file
written by SillyTavern comes back out key for key (`source_keys` remembers which keys it had);
unknown keys ride along in `extra`.

A missing field means what it means to SillyTavern's scan, which reads the file as is: a
missing `selective` or `useProbability` is false there (the editor template says true, but the
scan sees `undefined`). Those two differ from a new entry's defaults; everything else uses them.

Card books follow SillyTavern's `convertCharacterBook` (card -> world) and
`convertWorldInfoToCharacterBook` (world -> card). SillyTavern keeps the original card book as
`originalData` in the world file it makes from a card; so do we, and the way back to a card
starts from that original: every field whose value did not change keeps its original spelling
(a `probability: null` stays null), so card -> lorebook -> card gives back the same object.
World fields the card mapping lacks (`addMemo`, `characterFilter`, unknown keys) are carried
in the card entry's `extensions`, so world -> card -> world is lossless too. V3 `use_regex` and
the `@@decorator` lines in `content` are kept verbatim; as in SillyTavern, `use_regex` does not
change how keys are matched (SillyTavern writes `use_regex: true` on every entry it exports).
"""

from __future__ import annotations

import copy
import json
import math
import os
import threading
from pathlib import Path
from typing import Any

from tavern.errors import LoreError
from tavern.lore.gcpause import paused_gc
from tavern.lore.model import (
    ATTR_BY_ST_NAME,
    DEFAULT_DEPTH,
    DEFAULT_WEIGHT,
    OPTIONAL_ST_FIELDS,
    ST_NAMES,
    Lorebook,
    LoreEntry,
)
from tavern.store.atomic import atomic_write_text, make_dirs

__all__ = [
    "load_lorebook",
    "lorebook_from_character_book",
    "lorebook_from_dict",
    "lorebook_to_character_book",
    "lorebook_to_world_dict",
    "save_lorebook",
    "split_keys",
]

_INT_FIELDS = {
    "uid",
    "selective_logic",
    "position",
    "depth",
    "role",
    "scan_depth",
    "sticky",
    "cooldown",
    "delay",
    "display_index",
}
_NUMBER_FIELDS = {"order", "probability", "group_weight", "delay_until_recursion"}
_BOOL_FIELDS = {
    "constant",
    "vectorized",
    "selective",
    "add_memo",
    "disable",
    "exclude_recursion",
    "prevent_recursion",
    "use_probability",
    "group_override",
}
_OPT_BOOL_FIELDS = {"case_sensitive", "match_whole_words", "use_group_scoring"}
_STR_FIELDS = {"comment", "content", "group", "automation_id"}
_LIST_FIELDS = {"key", "keysecondary"}
_NULLABLE = {
    "probability",
    "depth",
    "group_weight",
    "scan_depth",
    "role",
    "sticky",
    "cooldown",
    "delay",
    "display_index",
} | _OPT_BOOL_FIELDS

# What a field means when a world file lacks it (see the module docstring).
_ABSENT_DEFAULTS: dict[str, Any] = {
    attr: value
    for attr, value in (
        (name, getattr(LoreEntry(), name)) for name in ST_NAMES if name not in ("key", "keysecondary")
    )
}
_ABSENT_DEFAULTS.update(selective=False, use_probability=False, key=[], keysecondary=[])


class _Bad(Exception):
    """A field could not be read; turned into a LoreError naming the file and entry."""


# ---------------------------------------------------------------------------------------------
# keys


def split_keys(text: str) -> list[str]:
    """Split a comma-separated key string the way SillyTavern's key editor does.

    A `/regex/flags` key may contain commas; a slash opens a regex until the next unescaped
    slash. Empty pieces are dropped, pieces are trimmed.
    """
    keys: list[str] = []
    current = text
    inside = closed = False
    i = 0
    while i < len(current):
        ch = current[i]
        if ch == "/" and (i == 0 or current[i - 1] != "\\"):
            if not inside:
                inside = True
            elif not closed:
                closed = True
        if ch == ",":
            token = current[:i].strip()
            if inside and not closed:
                i += 1
                continue
            if token:
                if token.startswith("/") and not _looks_like_regex(token):
                    keys.extend(x.strip() for x in token.split(",") if x.strip())
                else:
                    keys.append(token)
            current = current[i + 1 :]
            inside = closed = False
            i = 0
            continue
        i += 1
    rest = current.strip()
    if rest:
        keys.append(rest)
    return keys


def _looks_like_regex(token: str) -> bool:
    from tavern.lore.keys import parse_regex_key  # small module; avoids an import cycle

    parsed = parse_regex_key(token)
    return parsed is not None and parsed.error is None


# ---------------------------------------------------------------------------------------------
# field coercion


def _number(value: Any, nullable: bool, integer: bool) -> Any:
    if value is None:
        if nullable:
            return None
        raise _Bad("is null")
    if isinstance(value, bool):
        return value  # kept as written (SillyTavern's `delayUntilRecursion: true`)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _Bad(f"is not a finite number: {value!r}")
        if integer and value.is_integer():
            return int(value)
        return value
    if isinstance(value, str):
        text = value.strip()
        if text == "":
            if nullable:
                return None
            raise _Bad("is empty")
        try:
            number = float(text)
        except ValueError:
            raise _Bad(f"must be a number, got {value!r}") from None
        if not math.isfinite(number):
            raise _Bad(f"must be a finite number, got {value!r}")
        return int(number) if number.is_integer() else number
    raise _Bad(f"must be a number, got {type(value).__name__}")


def _bool(value: Any, nullable: bool) -> Any:
    if value is None:
        if nullable:
            return None
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return bool(value)
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in ("true", "1", "yes"):
            return True
        if lowered in ("false", "0", "no", ""):
            return False if not (nullable and lowered == "") else None
    raise _Bad(f"must be true or false, got {value!r}")


def _keys(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return split_keys(value)
    if isinstance(value, list):
        out = []
        for item in value:
            if item is None:
                continue
            if isinstance(item, (dict, list)):
                raise _Bad("must be a list of strings")
            out.append(item if isinstance(item, str) else _scalar_text(item))
        return out
    raise _Bad(f"must be a list of keys, got {type(value).__name__}")


def _scalar_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float, bool)):
        return _scalar_text(value)
    raise _Bad(f"must be text, got {type(value).__name__}")


def _coerce(attr: str, value: Any) -> Any:
    if attr in _LIST_FIELDS:
        return _keys(value)
    if attr in _STR_FIELDS:
        return _text(value)
    if attr in _BOOL_FIELDS:
        return _bool(value, nullable=False)
    if attr in _OPT_BOOL_FIELDS:
        return _bool(value, nullable=True)
    if attr in _INT_FIELDS:
        return _number(value, nullable=attr in _NULLABLE, integer=True)
    if attr in _NUMBER_FIELDS:
        return _number(value, nullable=attr in _NULLABLE, integer=True)
    if attr == "character_filter":
        if value is None or isinstance(value, dict):
            return value
        raise _Bad("must be an object")
    return value


# ---------------------------------------------------------------------------------------------
# world JSON


def _entry_from_world(obj: Any, fallback_uid: int | None) -> LoreEntry:
    if not isinstance(obj, dict):
        raise _Bad(f"is not an object ({type(obj).__name__})")
    values: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for name, raw in obj.items():
        attr = ATTR_BY_ST_NAME.get(name)
        if attr is None:
            extra[name] = raw
            continue
        try:
            values[attr] = _coerce(attr, raw)
        except _Bad as err:
            raise _Bad(f"'{name}' {err}") from None
    for attr, default in _ABSENT_DEFAULTS.items():
        if attr not in values and attr not in OPTIONAL_ST_FIELDS:
            # Only the containers need a copy (15 deepcopy calls an entry were a tenth of the load).
            values[attr] = copy.deepcopy(default) if isinstance(default, (list, dict)) else default
    if "uid" not in obj or values.get("uid") is None or isinstance(values.get("uid"), bool):
        values["uid"] = fallback_uid if fallback_uid is not None else 0
    if values.get("order") is None:
        values["order"] = 100
    return LoreEntry(**values, extra=extra, source_keys=tuple(obj.keys()))


def lorebook_from_dict(obj: Any, name: str, *, source: str | None = None) -> Lorebook:
    """Build a `Lorebook` from a parsed world JSON object (or a card's `character_book`).

    `source` names the file in error messages (default: the book name). Raises LoreError.
    """
    where = source or name
    if not isinstance(obj, dict):
        raise LoreError(f"{where}: not a lorebook (expected a JSON object, got {type(obj).__name__})")
    # A whole character card: take its embedded book.
    if "entries" not in obj and isinstance(obj.get("data"), dict) and "spec" in obj:
        book = obj["data"].get("character_book")
        if not isinstance(book, dict):
            raise LoreError(f"{where}: character card has no embedded lorebook (character_book)")
        return lorebook_from_character_book(book, name, source=where)
    if "entries" not in obj:
        raise LoreError(f"{where}: not a SillyTavern lorebook (no 'entries')")
    entries_raw = obj["entries"]
    if _is_character_book(entries_raw):
        return lorebook_from_character_book(obj, name, source=where)
    if isinstance(entries_raw, dict):
        items = list(entries_raw.items())
    elif isinstance(entries_raw, list):
        items = [(None, item) for item in entries_raw]
    else:
        raise LoreError(f"{where}: 'entries' must be an object or a list, got {type(entries_raw).__name__}")
    entries: list[LoreEntry] = []
    used: set[int] = set()
    for index, (dict_key, raw) in enumerate(items):
        fallback = _int_or_none(dict_key)
        if fallback is None:
            fallback = index
        label = dict_key if dict_key is not None else str(index)
        try:
            entry = _entry_from_world(raw, fallback)
        except _Bad as err:
            raise LoreError(f"{where}: entry {label}: {err}") from None
        if entry.uid in used:
            # Two entries with one uid would overwrite each other when written back keyed by uid.
            entry.uid = max(used) + 1
        used.add(entry.uid)
        entries.append(entry)
    extra = {k: v for k, v in obj.items() if k != "entries"}
    return Lorebook(name=name, entries=entries, extra=extra)


def _is_character_book(entries: Any) -> bool:
    return (
        isinstance(entries, list)
        and bool(entries)
        and all(isinstance(e, dict) for e in entries)
        and any("keys" in e or "insertion_order" in e for e in entries)
        and not any("key" in e for e in entries)
    )


def _int_or_none(value: Any) -> int | None:
    if value is None:
        return None
    try:
        return int(str(value).strip())
    except ValueError:
        return None


def _entry_to_world(entry: LoreEntry) -> dict[str, Any]:
    """One entry as SillyTavern writes it (keys the source had, in its order; new ones after)."""
    fresh: dict[str, Any] = {}
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
            attr in _ABSENT_DEFAULTS
            and fresh[name] == _ABSENT_DEFAULTS[attr]
            and type(fresh[name]) is type(_ABSENT_DEFAULTS[attr])
        ):
            continue
        out[name] = fresh[name]
    for name, value in entry.extra.items():
        if name not in out:
            out[name] = copy.deepcopy(value)
    return out


def lorebook_to_world_dict(book: Lorebook) -> dict[str, Any]:
    """The SillyTavern world JSON object for `book` (`entries` keyed by uid, then `extra`)."""
    entries = {str(entry.uid): _entry_to_world(entry) for entry in book.entries}
    out: dict[str, Any] = {"entries": entries}
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


# ---------------------------------------------------------------------------------------------
# character_book (V2/V3 cards)

# LoreEntry attribute -> key in a card entry's `extensions` (SillyTavern's names).
_CARD_EXT: dict[str, str] = {
    "position": "position",
    "exclude_recursion": "exclude_recursion",
    "display_index": "display_index",
    "probability": "probability",
    "use_probability": "useProbability",
    "depth": "depth",
    "selective_logic": "selectiveLogic",
    "group": "group",
    "group_override": "group_override",
    "group_weight": "group_weight",
    "prevent_recursion": "prevent_recursion",
    "delay_until_recursion": "delay_until_recursion",
    "scan_depth": "scan_depth",
    "match_whole_words": "match_whole_words",
    "use_group_scoring": "use_group_scoring",
    "case_sensitive": "case_sensitive",
    "automation_id": "automation_id",
    "role": "role",
    "vectorized": "vectorized",
    "sticky": "sticky",
    "cooldown": "cooldown",
    "delay": "delay",
    # Not in SillyTavern's mapping; carried so world -> card -> world loses nothing.
    "add_memo": "add_memo",
    "character_filter": "character_filter",
}
_CARD_EXT_NAMES = frozenset(_CARD_EXT.values())
# Defaults SillyTavern's `convertCharacterBook` fills in for a missing extension key.
_CARD_DEFAULTS: dict[str, Any] = {
    "exclude_recursion": False,
    "prevent_recursion": False,
    "delay_until_recursion": False,
    "probability": 100,
    "use_probability": True,
    "depth": DEFAULT_DEPTH,
    "selective_logic": 0,
    "group": "",
    "group_override": False,
    "group_weight": DEFAULT_WEIGHT,
    "scan_depth": None,
    "case_sensitive": None,
    "match_whole_words": None,
    "use_group_scoring": None,
    "automation_id": "",
    "role": 0,
    "vectorized": False,
    "sticky": None,
    "cooldown": None,
    "delay": None,
}
# What to call the original card book inside the world file (SillyTavern's own key).
ORIGINAL_DATA = "originalData"


def _card_entry_to_entry(raw: Any, index: int) -> LoreEntry:
    """SillyTavern's `convertCharacterBook` for one entry (plus the carried extras)."""
    if not isinstance(raw, dict):
        raise _Bad(f"is not an object ({type(raw).__name__})")
    ext = raw.get("extensions")
    if ext is None:
        ext = {}
    if not isinstance(ext, dict):
        raise _Bad("'extensions' must be an object")

    def pick(attr: str) -> Any:
        name = _CARD_EXT[attr]
        value = ext.get(name)
        if value is None:  # JavaScript's `??`: null and missing both take the default
            return copy.deepcopy(_CARD_DEFAULTS[attr])
        try:
            return _coerce(attr, value)
        except _Bad as err:
            raise _Bad(f"'extensions.{name}' {err}") from None

    def top(name: str, attr: str) -> Any:
        try:
            return _coerce(attr, raw.get(name))
        except _Bad as err:
            raise _Bad(f"'{name}' {err}") from None

    uid = raw.get("id")
    uid = _int_or_none(uid) if uid is not None and not isinstance(uid, bool) else None
    comment = top("comment", "comment")
    values: dict[str, Any] = {
        "uid": index if uid is None else uid,
        "key": top("keys", "key"),
        "keysecondary": top("secondary_keys", "keysecondary"),
        "comment": comment,
        "content": top("content", "content"),
        "constant": bool(top("constant", "constant")),
        "selective": bool(top("selective", "selective")),
        # `!entry.enabled` in SillyTavern: an entry without `enabled` is disabled.
        "disable": not top("enabled", "disable"),
        "add_memo": bool(comment),
    }
    try:
        order = _number(raw.get("insertion_order"), nullable=True, integer=True)
    except _Bad as err:
        raise _Bad(f"'insertion_order' {err}") from None
    values["order"] = 100 if order is None or isinstance(order, bool) else order
    if ext.get("position") is not None:
        values["position"] = pick("position")
    else:
        values["position"] = 0 if raw.get("position") == "before_char" else 1
    for attr in _CARD_DEFAULTS:
        values[attr] = pick(attr)
    if ext.get("display_index") is not None:
        values["display_index"] = pick("display_index")
    else:
        values["display_index"] = index
    if ext.get("add_memo") is not None:
        values["add_memo"] = pick("add_memo")
    if ext.get("character_filter") is not None:
        values["character_filter"] = pick("character_filter")
    # Unknown extension keys come back as unknown world-entry keys (and go out again).
    extra = {k: copy.deepcopy(v) for k, v in ext.items() if k not in _CARD_EXT_NAMES}
    return LoreEntry(**values, extra=extra)


def _entry_to_card_fresh(entry: LoreEntry) -> dict[str, Any]:
    """SillyTavern's `convertWorldInfoToCharacterBook` for one entry (no `use_regex`, see top)."""
    ext: dict[str, Any] = {}
    for attr, name in _CARD_EXT.items():
        value = getattr(entry, attr)
        if attr == "add_memo":
            if value == bool(entry.comment):
                continue  # what the way back derives anyway
        elif attr == "character_filter":
            if value is None:
                continue
        elif attr == "display_index" and value is None:
            continue
        ext[name] = copy.deepcopy(value)
    for name, value in entry.extra.items():
        if name not in ext:
            ext[name] = copy.deepcopy(value)
    return {
        "id": entry.uid,
        "keys": list(entry.key),
        "secondary_keys": list(entry.keysecondary),
        "comment": entry.comment,
        "content": entry.content,
        "constant": entry.constant,
        "selective": entry.selective,
        "insertion_order": entry.order,
        "enabled": not entry.disable,
        "position": "before_char" if entry.position == 0 else "after_char",
        "extensions": ext,
    }


# Embedded books converted by `lorebook_from_character_book_cached`: (the card's dict, name,
# book), most recent first. The dicts are held, so an id() cannot be reused while cached.
_CONVERTED: list[tuple[Any, str, Lorebook]] = []
_CONVERTED_SIZE = 4


def lorebook_from_character_book_cached(book_dict: Any, name: str) -> Lorebook:
    """`lorebook_from_character_book`, but the same object again for the same `character_book`
    object and name. For the prompt path, which scans every turn: the scan's index is cached
    per book object, so converting the card's book afresh each turn rebuilt it each turn (20 s
    and 700 MB more per scan for 100,000 entries, where a world file's cached scan takes 20 ms).
    Tavern never edits a card's `character_book` in place (an edited card is a new Card); treat
    the result as read-only, like `load_lorebook_cached`'s.
    """
    with _LOADED_LOCK:
        for i, (cached_dict, cached_name, book) in enumerate(_CONVERTED):
            if cached_dict is book_dict and cached_name == name:
                _CONVERTED.insert(0, _CONVERTED.pop(i))
                return book
    with paused_gc():
        book = lorebook_from_character_book(book_dict, name)
    with _LOADED_LOCK:
        _CONVERTED.insert(0, (book_dict, name, book))
        del _CONVERTED[_CONVERTED_SIZE:]
    return book


def lorebook_from_character_book(book_dict: Any, name: str, *, source: str | None = None) -> Lorebook:
    """A card's `character_book` as a `Lorebook` (SillyTavern's `convertCharacterBook`).

    `name` becomes the lorebook's name (it keys timed effects, `<name>.<uid>`); SillyTavern
    names an imported embedded book `book_dict["name"]`, else "<character>'s Lorebook". The
    original book is kept in `extra["originalData"]` (as SillyTavern does) so that
    `lorebook_to_character_book` can give it back unchanged. Raises LoreError.
    """
    where = source or name
    if not isinstance(book_dict, dict):
        raise LoreError(f"{where}: character_book must be an object")
    raw_entries = book_dict.get("entries", [])
    if not isinstance(raw_entries, list):
        raise LoreError(f"{where}: character_book 'entries' must be a list")
    entries: list[LoreEntry] = []
    used: set[int] = set()
    for index, raw in enumerate(raw_entries):
        try:
            entry = _card_entry_to_entry(raw, index)
        except _Bad as err:
            raise LoreError(f"{where}: character_book entry {index}: {err}") from None
        if entry.uid in used:
            entry.uid = max(used) + 1
        used.add(entry.uid)
        entries.append(entry)
    return Lorebook(
        name=name,
        entries=entries,
        extra={ORIGINAL_DATA: copy.deepcopy(book_dict)},
    )


def lorebook_to_character_book(book: Lorebook) -> dict[str, Any]:
    """`book` as a card's `character_book` (the reverse of `lorebook_from_character_book`).

    Starts from `extra["originalData"]` when the book came from a card: unchanged fields keep
    their original form and card-only fields (`priority`, `use_regex`, `name`, ...) survive.
    """
    original = book.extra.get(ORIGINAL_DATA)
    if not isinstance(original, dict):
        original = None
    out: dict[str, Any] = {}
    originals: dict[int, tuple[int, dict[str, Any]]] = {}
    if original is not None:
        out = {k: copy.deepcopy(v) for k, v in original.items() if k != "entries"}
        raw_entries = original.get("entries")
        if isinstance(raw_entries, list):
            for index, raw in enumerate(raw_entries):
                if not isinstance(raw, dict):
                    continue
                try:
                    derived = _card_entry_to_entry(raw, index)
                except _Bad:
                    continue
                originals.setdefault(derived.uid, (index, raw))
    else:
        out["name"] = book.name
        # World-level keys other than the book's own travel in the card book's extensions.
        carried = {k: copy.deepcopy(v) for k, v in book.extra.items() if k != ORIGINAL_DATA}
        if carried:
            out["extensions"] = carried
    entries = []
    for entry in book.entries:
        found = originals.get(entry.uid)
        if found is None:
            entries.append(_entry_to_card_fresh(entry))
        else:
            entries.append(_overlay_card_entry(entry, *found))
    out["entries"] = entries
    return out


def _overlay_card_entry(entry: LoreEntry, index: int, raw: dict[str, Any]) -> dict[str, Any]:
    """The original card entry with only the fields that changed rewritten."""
    derived = _card_entry_to_entry(raw, index)
    fresh = _entry_to_card_fresh(entry)
    out = copy.deepcopy(raw)
    ext = out.get("extensions")
    ext = copy.deepcopy(ext) if isinstance(ext, dict) else {}
    top_fields = {
        "uid": "id",
        "key": "keys",
        "keysecondary": "secondary_keys",
        "comment": "comment",
        "content": "content",
        "constant": "constant",
        "selective": "selective",
        "order": "insertion_order",
        "disable": "enabled",
    }
    for attr, name in top_fields.items():
        if getattr(entry, attr) != getattr(derived, attr):
            out[name] = fresh[name]
    if entry.position != derived.position:
        out["position"] = fresh["position"]
        ext["position"] = entry.position
    for attr, name in _CARD_EXT.items():
        if attr == "position":
            continue
        if getattr(entry, attr) != getattr(derived, attr):
            if name in fresh["extensions"]:
                ext[name] = fresh["extensions"][name]
            else:
                ext.pop(name, None)
    if entry.extra != derived.extra:
        for name in list(ext):
            if name not in _CARD_EXT_NAMES and name not in entry.extra:
                del ext[name]
        for name, value in entry.extra.items():
            ext[name] = copy.deepcopy(value)
    if ext or "extensions" in raw:
        out["extensions"] = ext
    return out
