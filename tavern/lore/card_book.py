"""A character card's `character_book` (V2/V3) as a `Lorebook`, and back.

Callers: `tavern.lore.convert` (a card or bare card book handed to `lorebook_from_dict`), the
prompt builder (a card's embedded book, every turn, through the cached reader) and the card
export. Nothing here touches files.

The mapping is SillyTavern's `convertCharacterBook` (card -> world) and
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
import threading

from tavern.errors import LoreError
from tavern.lore.fields import BadField, coerce, int_or_none, new_entry, read_entries, read_number
from tavern.lore.gcpause import paused_gc
from tavern.lore.model import DEFAULT_DEPTH, DEFAULT_WEIGHT, Lorebook, LoreEntry

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
_CARD_DEFAULTS: dict[str, object] = {
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
# LoreEntry attribute -> the card entry's own key, for the fields a card entry has at its top.
_CARD_TOP: dict[str, str] = {
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
# What to call the original card book inside the world file (SillyTavern's own key).
ORIGINAL_DATA = "originalData"


def _card_entry_to_entry(raw: object, index: int) -> LoreEntry:
    """SillyTavern's `convertCharacterBook` for one entry (plus the carried extras)."""
    if not isinstance(raw, dict):
        raise BadField(f"is not an object ({type(raw).__name__})")
    ext = raw.get("extensions")
    if ext is None:
        ext = {}
    if not isinstance(ext, dict):
        raise BadField("'extensions' must be an object")

    def pick(attr: str) -> object:
        name = _CARD_EXT[attr]
        value = ext.get(name)
        if value is None:  # JavaScript's `??`: null and missing both take the default
            return copy.deepcopy(_CARD_DEFAULTS[attr])
        try:
            return coerce(attr, value)
        except BadField as err:
            raise BadField(f"'extensions.{name}' {err}") from None

    def top(name: str, attr: str) -> object:
        try:
            return coerce(attr, raw.get(name))
        except BadField as err:
            raise BadField(f"'{name}' {err}") from None

    uid = raw.get("id")
    uid = int_or_none(uid) if uid is not None and not isinstance(uid, bool) else None
    comment = top("comment", "comment")
    values: dict[str, object] = {
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
        order = read_number(raw.get("insertion_order"), nullable=True, integer=True)
    except BadField as err:
        raise BadField(f"'insertion_order' {err}") from None
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
    return new_entry(values, extra)


def _card_extensions(entry: LoreEntry) -> dict[str, object]:
    """The `extensions` of `entry` as a card entry: the mapped fields, then `extra`."""
    ext: dict[str, object] = {}
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
    for name, extra in entry.extra.items():
        if name not in ext:
            ext[name] = copy.deepcopy(extra)
    return ext


def _card_entry(entry: LoreEntry, ext: dict[str, object]) -> dict[str, object]:
    """SillyTavern's `convertWorldInfoToCharacterBook` for one entry (no `use_regex`, see top),
    with `ext` (`_card_extensions(entry)`) as its extensions."""
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
_CONVERTED: list[tuple[object, str, Lorebook]] = []
_CONVERTED_SIZE = 4
# Used from a worker thread and the UI thread at once.
_CONVERTED_LOCK = threading.Lock()


def lorebook_from_character_book_cached(book_dict: object, name: str) -> Lorebook:
    """`lorebook_from_character_book`, but the same object again for the same `character_book`
    object and name. For the prompt path, which scans every turn: the scan's index is cached
    per book object, so converting the card's book afresh each turn rebuilt it each turn (20 s
    and 700 MB more per scan for 100,000 entries, where a world file's cached scan takes 20 ms).
    Tavern never edits a card's `character_book` in place (an edited card is a new Card); treat
    the result as read-only, like `load_lorebook_cached`'s.
    """
    with _CONVERTED_LOCK:
        for i, (cached_dict, cached_name, book) in enumerate(_CONVERTED):
            if cached_dict is book_dict and cached_name == name:
                _CONVERTED.insert(0, _CONVERTED.pop(i))
                return book
    with paused_gc():
        book = lorebook_from_character_book(book_dict, name)
    with _CONVERTED_LOCK:
        _CONVERTED.insert(0, (book_dict, name, book))
        del _CONVERTED[_CONVERTED_SIZE:]
    return book


def lorebook_from_character_book(book_dict: object, name: str, *, source: str | None = None) -> Lorebook:
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
    items = ((f"character_book entry {index}", raw, index) for index, raw in enumerate(raw_entries))
    return Lorebook(
        name=name,
        entries=read_entries(items, _card_entry_to_entry, where),
        extra={ORIGINAL_DATA: copy.deepcopy(book_dict)},
    )


def lorebook_to_character_book(book: Lorebook) -> dict[str, object]:
    """`book` as a card's `character_book` (the reverse of `lorebook_from_character_book`).

    Starts from `extra["originalData"]` when the book came from a card: unchanged fields keep
    their original form and card-only fields (`priority`, `use_regex`, `name`, ...) survive.
    """
    original = book.extra.get(ORIGINAL_DATA)
    out: dict[str, object] = {}
    originals: dict[int, tuple[int, dict[str, object]]] = {}
    if isinstance(original, dict):
        out = {k: copy.deepcopy(v) for k, v in original.items() if k != "entries"}
        raw_entries = original.get("entries")
        if isinstance(raw_entries, list):
            for index, raw in enumerate(raw_entries):
                if not isinstance(raw, dict):
                    continue
                try:
                    derived = _card_entry_to_entry(raw, index)
                except BadField:
                    continue
                originals.setdefault(derived.uid, (index, raw))
    else:
        out["name"] = book.name
        # World-level keys other than the book's own travel in the card book's extensions.
        carried = {k: copy.deepcopy(v) for k, v in book.extra.items() if k != ORIGINAL_DATA}
        if carried:
            out["extensions"] = carried
    entries: list[dict[str, object]] = []
    for entry in book.entries:
        found = originals.get(entry.uid)
        if found is None:
            entries.append(_card_entry(entry, _card_extensions(entry)))
        else:
            entries.append(_overlay_card_entry(entry, *found))
    out["entries"] = entries
    return out


def _overlay_card_entry(entry: LoreEntry, index: int, raw: dict[str, object]) -> dict[str, object]:
    """The original card entry with only the fields that changed rewritten."""
    derived = _card_entry_to_entry(raw, index)
    fresh_ext = _card_extensions(entry)
    fresh = _card_entry(entry, fresh_ext)
    out = copy.deepcopy(raw)
    ext = out.get("extensions")
    ext = copy.deepcopy(ext) if isinstance(ext, dict) else {}
    for attr, name in _CARD_TOP.items():
        if getattr(entry, attr) != getattr(derived, attr):
            out[name] = fresh[name]
    if entry.position != derived.position:
        out["position"] = fresh["position"]
        ext["position"] = entry.position
    for attr, name in _CARD_EXT.items():
        if attr == "position":
            continue
        if getattr(entry, attr) != getattr(derived, attr):
            if name in fresh_ext:
                ext[name] = fresh_ext[name]
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
