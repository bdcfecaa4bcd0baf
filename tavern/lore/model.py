"""The in-memory lorebook: `LoreEntry` and `Lorebook`, shaped like SillyTavern's world JSON.

Callers: `tavern.lore.convert` and `tavern.lore.card_book` (build them from world files and
card books, write them back), the scan (`tavern.lore.index` compiles them), the TUI's lore
editor and the prompt assembler. Nothing here touches files.

Attribute names are snake_case; `ST_NAMES` maps each one to the camelCase key SillyTavern
writes, so a world file goes in and comes out with the same keys. Keys this model does not
know stay in `LoreEntry.extra` / `Lorebook.extra` untouched.

The scanner caches a compiled index per lorebook (see `tavern.lore.index`). Assigning any
attribute of an entry that has been scanned, and adding, removing or replacing entries (the
`entries` list is an `EntryList` that reports its changes), are noticed automatically; an edit
made *inside* an entry's list (``entry.key.append("x")``) is not: assign a new list instead,
or call `Lorebook.touch()` after such an edit.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import cast

# Bumped whenever a scanned entry or book is edited; the scan index cache compares it.
_edit_counter = itertools.count(1)
_edit_version = 0


def edit_version() -> int:
    """The current edit stamp (changes after any edit of an indexed entry or book)."""
    return _edit_version


def _bump() -> None:
    global _edit_version
    _edit_version = next(_edit_counter)


# Position values (SillyTavern's `world_info_position`).
POSITION_BEFORE_CHAR = 0
POSITION_AFTER_CHAR = 1
POSITION_AN_TOP = 2
POSITION_AN_BOTTOM = 3
POSITION_AT_DEPTH = 4
POSITION_EXAMPLES_TOP = 5
POSITION_EXAMPLES_BOTTOM = 6

# Selective logic values (SillyTavern's `world_info_logic`).
LOGIC_AND_ANY = 0
LOGIC_NOT_ALL = 1
LOGIC_NOT_ANY = 2
LOGIC_AND_ALL = 3
LOGIC_NAMES = {0: "AND_ANY", 1: "NOT_ALL", 2: "NOT_ANY", 3: "AND_ALL"}

ROLE_SYSTEM = 0
ROLE_USER = 1
ROLE_ASSISTANT = 2

DEFAULT_DEPTH = 4
DEFAULT_WEIGHT = 100

# attribute -> SillyTavern key, in the order SillyTavern writes a new entry.
ST_NAMES: dict[str, str] = {
    "uid": "uid",
    "key": "key",
    "keysecondary": "keysecondary",
    "comment": "comment",
    "content": "content",
    "constant": "constant",
    "vectorized": "vectorized",
    "selective": "selective",
    "selective_logic": "selectiveLogic",
    "add_memo": "addMemo",
    "order": "order",
    "position": "position",
    "disable": "disable",
    "exclude_recursion": "excludeRecursion",
    "prevent_recursion": "preventRecursion",
    "delay_until_recursion": "delayUntilRecursion",
    "probability": "probability",
    "use_probability": "useProbability",
    "depth": "depth",
    "group": "group",
    "group_override": "groupOverride",
    "group_weight": "groupWeight",
    "scan_depth": "scanDepth",
    "case_sensitive": "caseSensitive",
    "match_whole_words": "matchWholeWords",
    "use_group_scoring": "useGroupScoring",
    "automation_id": "automationId",
    "role": "role",
    "sticky": "sticky",
    "cooldown": "cooldown",
    "delay": "delay",
    "display_index": "displayIndex",
    "character_filter": "characterFilter",
}
ATTR_BY_ST_NAME = {v: k for k, v in ST_NAMES.items()}

# Fields SillyTavern only writes when they have a value (never in a new entry's template).
OPTIONAL_ST_FIELDS = frozenset({"display_index", "character_filter"})


@dataclass
class LoreEntry:
    """One World Info entry; field meanings and defaults are SillyTavern's (SILLYTAVERN.md §2)."""

    uid: int = 0
    key: list[str] = field(default_factory=list)
    keysecondary: list[str] = field(default_factory=list)
    comment: str = ""
    content: str = ""
    constant: bool = False
    vectorized: bool = False
    selective: bool = True
    selective_logic: int = LOGIC_AND_ANY
    add_memo: bool = False
    order: int | float = 100
    position: int = POSITION_BEFORE_CHAR
    disable: bool = False
    exclude_recursion: bool = False
    prevent_recursion: bool = False
    # SillyTavern stores either a bool (true = level 1) or a recursion level number.
    delay_until_recursion: int | bool = 0
    probability: int | float | None = 100
    use_probability: bool = True
    depth: int | None = DEFAULT_DEPTH
    group: str = ""
    group_override: bool = False
    group_weight: int | float | None = DEFAULT_WEIGHT
    scan_depth: int | None = None
    case_sensitive: bool | None = None
    match_whole_words: bool | None = None
    use_group_scoring: bool | None = None
    automation_id: str = ""
    role: int | None = ROLE_SYSTEM
    sticky: int | None = None
    cooldown: int | None = None
    delay: int | None = None
    display_index: int | None = None
    character_filter: dict[str, object] | None = None
    extra: dict[str, object] = field(default_factory=dict)
    # The key order of the JSON object this entry was read from (None for a new entry): lets
    # export write back exactly the keys the file had. Not part of equality.
    source_keys: tuple[str, ...] | None = field(default=None, compare=False, repr=False)

    def __setattr__(self, name: str, value: object) -> None:
        object.__setattr__(self, name, value)
        # Only entries the scanner has indexed need to invalidate its cache.
        if self.__dict__.get("_indexed"):
            _bump()

    @property
    def delay_level(self) -> int:
        """`delay_until_recursion` as a recursion level (0 = not delayed)."""
        value = self.delay_until_recursion
        if value is True:
            return 1
        if not value:
            return 0
        try:
            return int(value)
        except (TypeError, ValueError):
            return 0

    @property
    def title(self) -> str:
        """What to call this entry in messages: its comment, else its first key, else its uid."""
        if self.comment:
            return self.comment
        if self.key:
            return self.key[0]
        return f"entry {self.uid}"


class EntryList(list[LoreEntry]):
    """`Lorebook.entries`: a plain list that tells the scan index when it is changed."""

    def _changed(self) -> None:
        if self.__dict__.get("_indexed"):
            _bump()


def _mutator(name: str) -> Callable[..., object]:
    """`list`'s method `name`, reporting the change (the same signature, so `list`'s types
    describe it)."""
    method = getattr(list, name)

    def wrapper(self: EntryList, *args: object, **kwargs: object) -> object:
        result = method(self, *args, **kwargs)
        self._changed()
        return self if name in ("__iadd__", "__imul__") else result

    wrapper.__name__ = name
    return wrapper


for _name in (
    "__setitem__",
    "__delitem__",
    "__iadd__",
    "__imul__",
    "append",
    "extend",
    "insert",
    "pop",
    "remove",
    "clear",
    "sort",
    "reverse",
):
    setattr(EntryList, _name, _mutator(_name))


@dataclass
class Lorebook:
    """A named set of entries. `extra` holds every top-level key of the file but `entries`."""

    name: str
    entries: list[LoreEntry] = field(default_factory=list)
    extra: dict[str, object] = field(default_factory=dict)

    def __setattr__(self, name: str, value: object) -> None:
        if name == "entries" and not isinstance(value, EntryList):
            # The checker holds every assignment to `entries` to the field's type.
            value = EntryList(cast("Iterable[LoreEntry]", value))
        object.__setattr__(self, name, value)
        if self.__dict__.get("_indexed"):
            _bump()

    def touch(self) -> None:
        """Tell the scanner an entry changed in place (e.g. a key appended to `entry.key`)."""
        _bump()

    def entry(self, uid: int) -> LoreEntry | None:
        """The entry with this uid, or None."""
        for item in self.entries:
            if item.uid == uid:
                return item
        return None

    def next_uid(self) -> int:
        """A uid no entry uses yet (SillyTavern's `getFreeWorldEntryUid`)."""
        used = {item.uid for item in self.entries}
        uid = 0
        while uid in used:
            uid += 1
        return uid


def parse_decorators(content: str) -> tuple[list[str], str]:
    """Split leading `@@decorator` lines off `content`, as SillyTavern's `parseDecorators`.

    Returns the known decorators (`@@activate`, `@@dont_activate`; a `@@@` line is a fallback
    used only after an unknown decorator) and the content without the decorator lines. Other
    decorators (`@@depth`, `@@role`, ...) are stripped but ignored, as in SillyTavern.
    """
    if not content.startswith("@@"):
        return [], content
    known = ("@@activate", "@@dont_activate")
    lines = content.split("\n")
    decorators: list[str] = []
    new_content = content
    fallback = False
    for i, line in enumerate(lines):
        if not line.startswith("@@"):
            new_content = "\n".join(lines[i:])
            break
        if line.startswith("@@@") and not fallback:
            continue
        probe = line[1:] if line.startswith("@@@") else line
        if probe.startswith(known):
            decorators.append(probe)
            fallback = False
        else:
            fallback = True
    return decorators, new_content
