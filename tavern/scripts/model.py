"""One regex script, as SillyTavern stores it (`RegexScriptData` in public/scripts/char-data.js).

The JSON keys are SillyTavern's: `id`, `scriptName`, `findRegex`, `replaceString`,
`trimStrings`, `placement`, `disabled`, `markdownOnly`, `promptOnly`, `runOnEdit`,
`substituteRegex`, `minDepth`, `maxDepth`. The same object sits in three places (global
settings, a card's `data.extensions.regex_scripts`, a preset's `extensions.regex_scripts`) and
in an exported `regex-<name>.json` file.

Written back losslessly: `script_to_json` starts from the object that was read, so unknown keys
(other tools', future SillyTavern's) keep their place and value, and a field that was not
changed keeps its original JSON spelling (`"substituteRegex": true` from older versions, a
depth written as `"2"`). Missing keys read as SillyTavern treats them (off, empty, no limit)
and stay missing unless changed.

Value rules taken from SillyTavern: a depth limit that is `null` (what its editor saves for an
empty box) or absent is no limit; `substituteRegex` is read with `Number()`, so `true` is 1 and
`false`/`null` are 0; placements are numbers compared with `===`.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from enum import IntEnum

from tavern.errors import TavernError


class RegexScriptError(TavernError):
    """A regex script or its file is unusable; the message is one line naming it."""

    title = "Regex script"


class Placement(IntEnum):
    """Where a script applies (`regex_placement` in SillyTavern's regex/engine.js)."""

    MD_DISPLAY = 0  # deprecated; migrated away when settings load (sources.migrate_script)
    USER_INPUT = 1
    AI_OUTPUT = 2
    SLASH_COMMAND = 3
    # 4 was "sendAs", migrated to SLASH_COMMAND
    WORLD_INFO = 5
    REASONING = 6


ALL_PLACEMENTS = (
    Placement.USER_INPUT,
    Placement.AI_OUTPUT,
    Placement.SLASH_COMMAND,
    Placement.WORLD_INFO,
    Placement.REASONING,
)


class SubstituteRegex(IntEnum):
    """How macros in `findRegex` are expanded (`substitute_find_regex` in engine.js)."""

    NONE = 0
    RAW = 1
    ESCAPED = 2  # each macro's value is regex-escaped before it is put in the pattern


@dataclass(frozen=True)
class RegexScript:
    """A regex script. `raw` is the JSON object it was read from (see the module's docstring)."""

    script_name: str = ""
    find_regex: str = ""
    replace_string: str = ""
    trim_strings: tuple[str, ...] = ()
    placement: tuple[int, ...] = ()
    disabled: bool = False
    markdown_only: bool = False
    prompt_only: bool = False
    run_on_edit: bool = False
    substitute_regex: int = SubstituteRegex.NONE
    min_depth: int | None = None
    max_depth: int | None = None
    id: str = ""
    raw: Mapping[str, object] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def new(cls, name: str, find_regex: str, replace_string: str = "") -> RegexScript:
        """A script as SillyTavern's editor starts one: a fresh id, "Alter Chat Display" and
        "Run On Edit" ticked, affecting user input."""
        return cls(
            script_name=name,
            find_regex=find_regex,
            replace_string=replace_string,
            placement=(Placement.USER_INPUT,),
            markdown_only=True,
            run_on_edit=True,
            id=str(uuid.uuid4()),
        )

    def with_new_id(self) -> RegexScript:
        """The same script under a fresh UUID (SillyTavern gives every imported script one)."""
        return replace(self, id=str(uuid.uuid4()))


class _Bad(ValueError):
    """One field's value is of the wrong type; the message names the field."""


def _string(key: str, value: object) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _Bad(f"{key} must be text")
    return value


def _flag(key: str, value: object) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise _Bad(f"{key} must be true or false")
    return value


def _strings(key: str, value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise _Bad(f"{key} must be a list of strings")
    return tuple(value)


def _whole(value: object) -> int | None:
    """A JSON number that is a whole number, as an int; None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    return None


def _placements(key: str, value: object) -> tuple[int, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise _Bad(f"{key} must be a list of numbers")
    numbers = [_whole(item) for item in value]
    if any(number is None for number in numbers):
        raise _Bad(f"{key} must be a list of numbers")
    return tuple(number for number in numbers if number is not None)


def _substitute(key: str, value: object) -> int:
    """`Number(value)` for the values SillyTavern has written: 0/1/2, true/false, null."""
    if value is None or value is False:
        return SubstituteRegex.NONE
    if value is True:
        return SubstituteRegex.RAW
    number = _whole(value) if not isinstance(value, str) else _numeric_text(value)
    if number is None:
        raise _Bad(f"{key} must be 0, 1 or 2")
    return number


def _depth(key: str, value: object) -> int | None:
    if value is None:
        return None
    number = _whole(value) if not isinstance(value, str) else _numeric_text(value)
    if number is None:
        raise _Bad(f"{key} must be a whole number or null")
    return number


def _numeric_text(text: str) -> int | None:
    """A number written as text, which SillyTavern compares as a number (`"2"` is 2)."""
    stripped = text.strip()
    if not stripped:
        return 0  # JavaScript: Number("") is 0
    try:
        number = float(stripped)
    except ValueError:
        return None
    return _whole(number)


# JSON key -> (attribute, reader), in SillyTavern's order (what a new script is written in).
_Reader = Callable[[str, object], object]
_FIELDS: dict[str, tuple[str, _Reader]] = {
    "id": ("id", _string),
    "scriptName": ("script_name", _string),
    "findRegex": ("find_regex", _string),
    "replaceString": ("replace_string", _string),
    "trimStrings": ("trim_strings", _strings),
    "placement": ("placement", _placements),
    "disabled": ("disabled", _flag),
    "markdownOnly": ("markdown_only", _flag),
    "promptOnly": ("prompt_only", _flag),
    "runOnEdit": ("run_on_edit", _flag),
    "substituteRegex": ("substitute_regex", _substitute),
    "minDepth": ("min_depth", _depth),
    "maxDepth": ("max_depth", _depth),
}
_DEFAULTS = RegexScript()


def parse_script(obj: object, *, where: str = "regex script") -> RegexScript:
    """A script from its JSON object; RegexScriptError (one line, starting with `where`) when a
    known field has the wrong type or `obj` is no object. A missing key and `null` read alike."""
    if not isinstance(obj, dict):
        raise RegexScriptError(f"{where}: not a regex script (expected a JSON object)")
    get = obj.get
    try:
        return RegexScript(
            id=_string("id", get("id")),
            script_name=_string("scriptName", get("scriptName")),
            find_regex=_string("findRegex", get("findRegex")),
            replace_string=_string("replaceString", get("replaceString")),
            trim_strings=_strings("trimStrings", get("trimStrings")),
            placement=_placements("placement", get("placement")),
            disabled=_flag("disabled", get("disabled")),
            markdown_only=_flag("markdownOnly", get("markdownOnly")),
            prompt_only=_flag("promptOnly", get("promptOnly")),
            run_on_edit=_flag("runOnEdit", get("runOnEdit")),
            substitute_regex=_substitute("substituteRegex", get("substituteRegex")),
            min_depth=_depth("minDepth", get("minDepth")),
            max_depth=_depth("maxDepth", get("maxDepth")),
            raw=dict(obj),
        )
    except _Bad as err:
        raise RegexScriptError(f"{where}: {err}") from None


def script_to_json(script: RegexScript) -> dict[str, object]:
    """The script's JSON object: the one read, with changed fields replaced (module docstring)."""
    out: dict[str, object] = dict(script.raw)
    for key, (attr, read) in _FIELDS.items():
        value = getattr(script, attr)
        if key in out:
            try:
                if read(key, out[key]) == value:
                    continue  # unchanged: keep the original spelling
            except _Bad:
                pass
        elif value == getattr(_DEFAULTS, attr) and script.raw:
            continue  # absent when read and still the default: stays absent
        out[key] = _json_value(value)
    return out


def _json_value(value: object) -> object:
    if isinstance(value, tuple):
        return [int(item) if isinstance(item, IntEnum) else item for item in value]
    if isinstance(value, IntEnum):
        return int(value)
    return value
