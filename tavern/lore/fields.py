"""Lenient reading of lorebook entry fields, as the files in the wild write them.

Callers: `tavern.lore.convert` (world JSON entries) and `tavern.lore.card_book` (a card's
`character_book` entries). Each reader takes a parsed JSON value and returns what the
`LoreEntry` field holds, or raises `BadField`, which the caller turns into a LoreError naming
the file and entry. Files come from many tools: keys may be one comma-separated string,
numbers may be strings, and a missing field means what it means to SillyTavern's scan
(`ABSENT_DEFAULTS`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any, cast

from tavern.errors import LoreError
from tavern.lore.keys import split_keys
from tavern.lore.model import ST_NAMES, LoreEntry

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

# What a field means when a world file lacks it: what SillyTavern's scan reads there, which is
# a new entry's default except for `selective` and `useProbability` (missing is false to the
# scan, though the editor's template says true).
ABSENT_DEFAULTS: dict[str, object] = {
    attr: value
    for attr, value in (
        (name, getattr(LoreEntry(), name)) for name in ST_NAMES if name not in ("key", "keysecondary")
    )
}
ABSENT_DEFAULTS.update(selective=False, use_probability=False, key=[], keysecondary=[])


class BadField(Exception):
    """A field could not be read; turned into a LoreError naming the file and entry."""


def read_number(value: object, nullable: bool, integer: bool) -> int | float | None:
    """A number field: a number, or a string holding one (a bool is kept as written, as in
    SillyTavern's `delayUntilRecursion: true`); None for null or "" when `nullable`."""
    if value is None:
        if nullable:
            return None
        raise BadField("is null")
    if isinstance(value, bool):
        return value  # kept as written (SillyTavern's `delayUntilRecursion: true`)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise BadField(f"is not a finite number: {value!r}")
        if integer and value.is_integer():
            return int(value)
        return value
    if isinstance(value, str):
        text = value.strip()
        if text == "":
            if nullable:
                return None
            raise BadField("is empty")
        try:
            number = float(text)
        except ValueError:
            raise BadField(f"must be a number, got {value!r}") from None
        if not math.isfinite(number):
            raise BadField(f"must be a finite number, got {value!r}")
        return int(number) if number.is_integer() else number
    raise BadField(f"must be a number, got {type(value).__name__}")


def _bool(value: object, nullable: bool) -> bool | None:
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
    raise BadField(f"must be true or false, got {value!r}")


def _keys(value: object) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return split_keys(value)
    if isinstance(value, list):
        out: list[str] = []
        for item in value:
            if item is None:
                continue
            if isinstance(item, (dict, list)):
                raise BadField("must be a list of strings")
            out.append(item if isinstance(item, str) else _scalar_text(item))
        return out
    raise BadField(f"must be a list of keys, got {type(value).__name__}")


def _scalar_text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float, bool)):
        return _scalar_text(value)
    raise BadField(f"must be text, got {type(value).__name__}")


def coerce(attr: str, value: object) -> object:
    """`value` read as the `LoreEntry` field `attr`; BadField when it cannot be."""
    if attr in _LIST_FIELDS:
        return _keys(value)
    if attr in _STR_FIELDS:
        return _text(value)
    if attr in _BOOL_FIELDS:
        return _bool(value, nullable=False)
    if attr in _OPT_BOOL_FIELDS:
        return _bool(value, nullable=True)
    if attr in _INT_FIELDS:
        return read_number(value, nullable=attr in _NULLABLE, integer=True)
    if attr in _NUMBER_FIELDS:
        return read_number(value, nullable=attr in _NULLABLE, integer=True)
    if attr == "character_filter":
        if value is None or isinstance(value, dict):
            return value
        raise BadField("must be an object")
    return value


def int_or_none(value: object) -> int | None:
    """An integer written as a number or text (a uid, an `entries` key); None if not one."""
    if value is None:
        return None
    try:
        return int(str(value).strip())
    except ValueError:
        return None


def new_entry(
    values: dict[str, object], extra: dict[str, object], source_keys: tuple[str, ...] | None = None
) -> LoreEntry:
    """The entry with these field values, each already read by `coerce` (or a default)."""
    # Any: the fields are chosen by name at run time; `coerce` read each as its field's type.
    fields = cast(dict[str, Any], values)
    return LoreEntry(**fields, extra=extra, source_keys=source_keys)


def read_entries(
    items: Iterable[tuple[str, object, int]], read: Callable[[object, int], LoreEntry], where: str
) -> list[LoreEntry]:
    """Each (label, raw entry, fallback uid) read by `read`, uids made unique.

    A BadField becomes the LoreError "<where>: <label>: <problem>". Two entries with one uid
    would overwrite each other when written back keyed by uid, so a repeated uid becomes one
    past the highest so far.
    """
    entries: list[LoreEntry] = []
    used: set[int] = set()
    for label, raw, fallback in items:
        try:
            entry = read(raw, fallback)
        except BadField as err:
            raise LoreError(f"{where}: {label}: {err}") from None
        if entry.uid in used:
            entry.uid = max(used) + 1
        used.add(entry.uid)
        entries.append(entry)
    return entries
