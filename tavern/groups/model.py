"""A SillyTavern group as it lives in `groups/<id>.json`.

What SillyTavern writes (src/endpoints/groups.js `/create`, then `/edit` with the whole object
the browser holds, public/scripts/group-chats.js): `id` (`String(Date.now())`), `name`,
`members` (card avatar file names, in list order), `avatar_url`, `allow_self_responses`,
`activation_strategy` (0 natural, 1 list, 2 manual, 3 pooled), `generation_mode` (0 swap, 1 append,
2 append including muted), `disabled_members` (the muted), `fav`, `chat_id` (the open chat),
`chats` (every chat's id, which is also its file name in `group chats/`), `auto_mode_delay`
(seconds, default 5), `generation_mode_join_prefix`/`_suffix`, and, once the browser has saved it,
`hideMutedSprites`, `date_added`, `create_date`, `date_last_chat`, `chat_size`. Releases before
1.13 also kept `chat_metadata` and `past_metadata` (per-chat metadata, now in each chat file's
header line); files that old are still read and keep those keys.

`Group` keeps the parsed file as it was and reads the fields through typed properties with
SillyTavern's defaults (null counts as missing, as `??` does there), so unknown keys survive and
an untouched group is written back byte for byte. Changes make a new `Group` (`updated`).
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable, Mapping, Sequence
from enum import IntEnum

from tavern.errors import TavernError, json_kind
from tavern.groups.jsvalues import js_number, js_string, st_json

MAX_GROUP_FILE_BYTES = 16 << 20
DEFAULT_NAME = "New Group"
DEFAULT_AVATAR = "img/ai4.png"
"""What SillyTavern's group editor stores as `avatar_url` when no picture was uploaded."""
DEFAULT_AUTO_MODE_DELAY = 5


class GroupError(TavernError):
    """A group file that cannot be read or a group operation that cannot be done; one line."""

    title = "Group"


class ActivationStrategy(IntEnum):
    """group-chats.js `group_activation_strategy`: how the next speakers are chosen."""

    NATURAL = 0
    LIST = 1
    MANUAL = 2
    POOLED = 3


class GenerationMode(IntEnum):
    """group-chats.js `group_generation_mode`: whose card the prompt carries."""

    SWAP = 0
    APPEND = 1
    APPEND_DISABLED = 2


# key -> (kind, what the error says it must be). Keys not listed are kept, never checked.
_FIELDS: dict[str, tuple[str, str]] = {
    "id": ("id", "a string or a number"),
    "name": ("str", "a string"),
    "members": ("str_list", "a list of card file names (strings)"),
    "disabled_members": ("str_list", "a list of card file names (strings)"),
    "chat_id": ("id", "a string or a number"),
    "chats": ("id_list", "a list of chat names (strings)"),
    "avatar_url": ("str", "a string"),
    "allow_self_responses": ("bool", "true or false"),
    "hideMutedSprites": ("bool", "true or false"),
    "fav": ("flag", "true or false"),
    "activation_strategy": ("int", "a whole number (0 natural, 1 list, 2 manual, 3 pooled)"),
    "generation_mode": ("int", "a whole number (0 swap, 1 append, 2 append with muted)"),
    "auto_mode_delay": ("number", "a number of seconds"),
    "generation_mode_join_prefix": ("str", "a string"),
    "generation_mode_join_suffix": ("str", "a string"),
    "chat_metadata": ("object", "an object"),
    "past_metadata": ("object", "an object"),
}


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _whole(value: object) -> bool:
    # SillyTavern runs these through Number(), so "1" counts as 1; true/false and lists do not.
    if not (_is_number(value) or isinstance(value, str)):
        return False
    return js_number(value).is_integer()


def _numeric(value: object) -> bool:
    return (_is_number(value) or isinstance(value, str)) and not math.isnan(js_number(value))


_CHECKS: dict[str, Callable[[object], bool]] = {
    "id": lambda v: isinstance(v, str) or _is_number(v),
    "str": lambda v: isinstance(v, str),
    "bool": lambda v: isinstance(v, bool),
    "flag": lambda v: isinstance(v, bool | str),
    "int": _whole,
    "number": _numeric,
    "object": lambda v: isinstance(v, dict),
}


def _check(raw: Mapping[str, object], source: str) -> None:
    if raw.get("id") is None:
        raise GroupError(f'{source}: not a SillyTavern group (no "id")')
    for key, (kind, must) in _FIELDS.items():
        value = raw.get(key)
        if value is None:
            continue
        if kind in ("str_list", "id_list"):
            _check_list(value, key, kind, must, source)
        elif not _CHECKS[kind](value):
            raise GroupError(f'{source}: "{key}" must be {must}, not {json_kind(value)}')


def _check_list(value: object, key: str, kind: str, must: str, source: str) -> None:
    if not isinstance(value, list):
        raise GroupError(f'{source}: "{key}" must be {must}, not {json_kind(value)}')
    for number, item in enumerate(value, 1):
        # Old releases wrote numeric chat ids; SillyTavern turns them into strings on load.
        if not (isinstance(item, str) or (kind == "id_list" and _is_number(item))):
            raise GroupError(f'{source}: "{key}" must be {must}; item {number} is {json_kind(item)}')


class Group:
    """One group file, parsed and checked; the original mapping is kept as it was."""

    __slots__ = ("_raw", "source")

    def __init__(self, raw: Mapping[str, object], source: str = "group") -> None:
        _check(raw, source)
        self._raw: dict[str, object] = copy.deepcopy(dict(raw))
        self.source = source
        """How errors name this group: its file name, or "group"."""

    # -- identity ---------------------------------------------------------------------------
    @property
    def id(self) -> str:
        return js_string(self._raw["id"])

    @property
    def name(self) -> str:
        return self._str("name", DEFAULT_NAME)

    @property
    def avatar_url(self) -> str:
        return self._str("avatar_url", "")

    @property
    def fav(self) -> bool:
        value = self._raw.get("fav")
        # The editor shows a group as a favourite when `fav` is true, or the string "true"
        # that character cards use.
        return value is True or (isinstance(value, str) and value.lower() == "true")

    # -- members ----------------------------------------------------------------------------
    @property
    def members(self) -> tuple[str, ...]:
        return self._strings("members")

    @property
    def disabled_members(self) -> tuple[str, ...]:
        return self._strings("disabled_members")

    @property
    def enabled_members(self) -> tuple[str, ...]:
        """Members that may be chosen to speak, in list order (ST's `enabledMembers`)."""
        muted = set(self.disabled_members)
        return tuple(m for m in self.members if m not in muted)

    @property
    def members_are_names(self) -> bool:
        """A file older than chat ids (no `chat_id`): its members are character names, which
        SillyTavern maps to avatar file names when it loads the group."""
        return self._raw.get("chat_id") is None

    # -- behaviour --------------------------------------------------------------------------
    @property
    def allow_self_responses(self) -> bool:
        return self._raw.get("allow_self_responses") is True

    @property
    def activation_strategy(self) -> int:
        """The raw number: a value SillyTavern does not know (a fork's) makes nobody speak."""
        return self._int("activation_strategy", ActivationStrategy.NATURAL)

    @property
    def generation_mode(self) -> int:
        return self._int("generation_mode", GenerationMode.SWAP)

    @property
    def auto_mode_delay(self) -> float:
        value = self._raw.get("auto_mode_delay")
        return js_number(value) if value is not None else float(DEFAULT_AUTO_MODE_DELAY)

    @property
    def join_prefix(self) -> str:
        return self._str("generation_mode_join_prefix", "")

    @property
    def join_suffix(self) -> str:
        return self._str("generation_mode_join_suffix", "")

    @property
    def hide_muted_sprites(self) -> bool:
        return self._raw.get("hideMutedSprites") is True

    # -- chats ------------------------------------------------------------------------------
    @property
    def chat_id(self) -> str:
        value = self._raw.get("chat_id")
        return js_string(value) if value is not None else self.id

    @property
    def chats(self) -> tuple[str, ...]:
        """Chat ids without repeats (ST drops duplicates when it loads a group)."""
        value = self._raw.get("chats")
        if not isinstance(value, list):
            return (self.chat_id,) if self.members_are_names else ()
        return tuple(dict.fromkeys(js_string(item) for item in value))

    def legacy_chat_metadata(self, chat_id: str) -> dict[str, object] | None:
        """The metadata a pre-1.13 release kept in the group for `chat_id` (its chat file then
        has no header line), or None."""
        current = self._raw.get("chat_metadata")
        if chat_id == self.chat_id and isinstance(current, dict):
            return copy.deepcopy(current)
        past = self._raw.get("past_metadata")
        entry: object = past.get(chat_id) if isinstance(past, dict) else None
        if isinstance(entry, dict):
            return {str(k): copy.deepcopy(v) for k, v in entry.items()}
        return None

    # -- dates SillyTavern adds from the file's times ---------------------------------------
    @property
    def date_added(self) -> float | None:
        value = self._raw.get("date_added")
        return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None

    @property
    def create_date(self) -> str | None:
        value = self._raw.get("create_date")
        return value if isinstance(value, str) else None

    # -- the file ---------------------------------------------------------------------------
    def raw(self) -> dict[str, object]:
        """A copy of the whole mapping, unknown keys included, in the file's order."""
        return copy.deepcopy(self._raw)

    def extra(self) -> dict[str, object]:
        """The keys this model does not name (extensions', newer releases')."""
        known = set(_FIELDS) | {"date_added", "create_date", "date_last_chat", "chat_size"}
        return {k: copy.deepcopy(v) for k, v in self._raw.items() if k not in known}

    def updated(self, changes: Mapping[str, object]) -> Group:
        """A new group with `changes` applied (existing keys keep their place, new ones go last);
        checked like a file."""
        raw = self.raw()
        raw.update(copy.deepcopy(dict(changes)))
        return Group(raw, self.source)

    def to_json(self) -> str:
        """The file's text, as SillyTavern writes it: `JSON.stringify(group, null, 4)`."""
        return st_json(self._raw, 4)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Group) and self._raw == other._raw

    def __hash__(self) -> int:
        return hash(self.id)

    def __repr__(self) -> str:
        return f"Group(id={self.id!r}, name={self.name!r}, members={list(self.members)!r})"

    # -- helpers ----------------------------------------------------------------------------
    def _str(self, key: str, default: str) -> str:
        value = self._raw.get(key)
        return value if isinstance(value, str) else default

    def _strings(self, key: str) -> tuple[str, ...]:
        value = self._raw.get(key)
        return tuple(item for item in value if isinstance(item, str)) if isinstance(value, list) else ()

    def _int(self, key: str, default: int) -> int:
        value = self._raw.get(key)
        return int(js_number(value)) if value is not None else int(default)


def parse_group(data: bytes | str, source: str = "group") -> Group:
    """A group from a file's bytes or text; GroupError (one line) when it is not one."""
    if isinstance(data, bytes):
        if len(data) > MAX_GROUP_FILE_BYTES:
            raise GroupError(f"{source}: too large for a group file ({len(data)} bytes)")
        try:
            data = data.decode("utf-8-sig")
        except UnicodeDecodeError as err:
            raise GroupError(f"{source}: not UTF-8 text (byte {err.start})") from None
    try:
        parsed: object = json.loads(data.removeprefix("\ufeff"))
    except json.JSONDecodeError as err:
        raise GroupError(f"{source}: not JSON ({err.msg}, line {err.lineno} column {err.colno})") from None
    except RecursionError:
        raise GroupError(f"{source}: not JSON (nested too deeply)") from None
    if not isinstance(parsed, dict):
        raise GroupError(f"{source}: not a SillyTavern group (the file holds {json_kind(parsed)})")
    return Group(parsed, source)


def new_group(
    group_id: str,
    name: str,
    members: Sequence[str],
    chat_id: str,
    *,
    avatar_url: str = DEFAULT_AVATAR,
    allow_self_responses: bool = False,
    activation_strategy: int = ActivationStrategy.NATURAL,
    generation_mode: int = GenerationMode.SWAP,
    fav: bool = False,
    auto_mode_delay: float = DEFAULT_AUTO_MODE_DELAY,
) -> Group:
    """A group as SillyTavern's `/create` writes it: its keys, in its order, with its defaults.
    An empty name becomes "Group: <member names>" in SillyTavern; the caller knows the names."""
    raw: dict[str, object] = {
        "id": group_id,
        "name": name or DEFAULT_NAME,
        "members": list(dict.fromkeys(members)),
        "avatar_url": avatar_url,
        "allow_self_responses": allow_self_responses,
        "activation_strategy": int(activation_strategy),
        "generation_mode": int(generation_mode),
        "disabled_members": [],
        "fav": fav,
        "chat_id": chat_id,
        "chats": [chat_id],
        "auto_mode_delay": auto_mode_delay,
        "generation_mode_join_prefix": "",
        "generation_mode_join_suffix": "",
    }
    return Group(raw, f"{group_id}.json")


__all__ = [
    "ActivationStrategy",
    "DEFAULT_AUTO_MODE_DELAY",
    "DEFAULT_AVATAR",
    "GenerationMode",
    "Group",
    "GroupError",
    "new_group",
    "parse_group",
]
