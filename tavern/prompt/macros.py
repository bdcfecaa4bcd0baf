"""SillyTavern's ``{{macros}}``: ``{{char}}``, ``{{user}}``, ``{{random::a::b}}``, ``{{setvar::x::1}}``...

Who calls it: the prompt assembler runs :func:`substitute` over every piece of card text, lore,
author's note and preset sequence before building a prompt; the story-string renderer in
:mod:`tavern.prompt.st_presets` runs it over the rendered story string; the prompt inspector calls
:func:`volatile_macros` to warn about macros that change the prompt every turn (in a system
prompt they move the first bytes of the prompt and throw away the whole KV cache).

The order and rules follow SillyTavern 1.12's ``evaluateMacros`` (``public/scripts/macros.js``),
``replaceVariableMacros`` (``public/scripts/variables.js``) and ``substituteParams``
(``public/script.js``): legacy ``<USER>``/``<BOT>``; dice; instruct macros; variables, line by
line; ``{{newline}}``, ``{{trim}}``, ``{{noop}}``, ``{{input}}``; the character/user fields
(``{{description}}`` before ``{{user}}``/``{{char}}`` so names inside it are replaced too);
chat macros; ``{{reverse:}}``; ``{{// comments}}``; time macros; ``{{timeDiff}}``;
``{{banned}}``; ``{{random}}`` (a new draw each time); ``{{pick}}`` (stable for a chat: seeded by
the chat id hash, the raw text and the macro's position, with SillyTavern's own hash and
seedrandom generator, so a chat picks the same option here as there). Names are
case-insensitive. Dates and times use moment.js's English formats (``{{time}}`` "2:03 PM",
``{{date}}`` "September 15, 2024"). Unknown macros stay as written.
"""

from __future__ import annotations

import json
import math
import random as _random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

__all__ = ["MacroContext", "st_string_hash", "substitute", "volatile_macros"]


@dataclass
class MacroContext:
    """What macros can see. ``variables`` (the chat's ``chat_metadata.variables``) and
    ``global_variables`` are changed in place by ``{{setvar}}`` and friends; ``banned_words``
    collects ``{{banned "word"}}``. ``now`` fixes the clock (tests); ``last_user_time`` is when
    the user's message before the latest one was sent (``{{idle_duration}}``). ``rng_seed``
    makes ``{{random}}`` and ``{{roll}}`` repeatable. ``original`` is substituted once, and only
    when given (``None`` leaves ``{{original}}`` as written, as SillyTavern does).
    ``instruct`` maps instruct/system-prompt macro names (``systemPrompt``, ``instructInput``,
    ``exampleSeparator``, ``chatStart``...) to values; known ones that are missing become "".
    ``extra`` adds more ``{{name}}`` macros."""

    char: str
    user: str
    description: str = ""
    personality: str = ""
    scenario: str = ""
    persona: str = ""
    mes_examples: str = ""
    original: str | None = None
    last_message: str = ""
    last_user_message: str = ""
    last_char_message: str = ""
    chat_id: str = ""
    variables: dict[str, Any] = field(default_factory=dict)
    global_variables: dict[str, Any] = field(default_factory=dict)
    now: datetime | None = None
    last_user_time: datetime | None = None
    model: str = ""
    rng_seed: int | None = None
    group: str | None = None
    char_prompt: str = ""
    char_jailbreak: str = ""
    char_version: str = ""
    input: str = ""
    max_prompt: int | None = None
    last_message_id: int | None = None
    first_included_message_id: int | None = None
    last_swipe_id: int | None = None
    current_swipe_id: int | None = None
    chat_id_hash: int | None = None
    instruct: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    banned_words: list[str] = field(default_factory=list)
    _rng: _random.Random | None = field(default=None, init=False, repr=False, compare=False)

    def rng(self) -> _random.Random:
        if self._rng is None:
            self._rng = _random.Random(self.rng_seed) if self.rng_seed is not None else _random.SystemRandom()
        return self._rng

    def clock(self) -> datetime:
        return self.now if self.now is not None else datetime.now()


# ---------------------------------------------------------------------------------------------
# JavaScript semantics SillyTavern's values go through

_JS_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?|Infinity)")


def _js_number(value: Any) -> float | None:
    """JavaScript's ``Number(value)``; None for NaN."""
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, (int, float)):
        return None if isinstance(value, float) and math.isnan(value) else float(value)
    if value is None:
        return None
    s = str(value).strip()
    if s == "":
        return 0.0
    if re.fullmatch(r"0[xX][0-9a-fA-F]+", s):
        return float(int(s, 16))
    if re.fullmatch(r"0[oO][0-7]+", s):
        return float(int(s, 8))
    if re.fullmatch(r"0[bB][01]+", s):
        return float(int(s, 2))
    if _JS_NUMBER.fullmatch(s):
        return float(s.replace("Infinity", "inf"))
    return None


def _js_str(value: Any) -> str:
    """JavaScript's ``String(value)`` for the values variables hold."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        if value.is_integer() and abs(value) < 1e21:
            return str(int(value))
        return re.sub(r"e([+-])0*(\d)", r"e\1\2", repr(value))
    if isinstance(value, list):
        return ",".join(_js_str(v) for v in value)
    if isinstance(value, dict):
        return "[object Object]"
    return str(value)


def _utf16_units(text: str) -> list[int]:
    data = text.encode("utf-16-le", "surrogatepass")
    return [data[i] | (data[i + 1] << 8) for i in range(0, len(data), 2)]


def _utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def _i32(x: int) -> int:
    x &= 0xFFFFFFFF
    return x - 0x100000000 if x & 0x80000000 else x


def _imul(a: int, b: int) -> int:
    return _i32((a & 0xFFFFFFFF) * (b & 0xFFFFFFFF))


def st_string_hash(text: str, seed: int = 0) -> int:
    """SillyTavern's ``getStringHash`` (cyrb53 over UTF-16 code units)."""
    h1 = _i32(0xDEADBEEF ^ seed)
    h2 = _i32(0x41C6CE57 ^ seed)
    for ch in _utf16_units(text):
        h1 = _imul(h1 ^ ch, 2654435761)
        h2 = _imul(h2 ^ ch, 1597334677)
    h1 = _i32(
        _imul(h1 ^ ((h1 & 0xFFFFFFFF) >> 16), 2246822507) ^ _imul(h2 ^ ((h2 & 0xFFFFFFFF) >> 13), 3266489909)
    )
    h2 = _i32(
        _imul(h2 ^ ((h2 & 0xFFFFFFFF) >> 16), 2246822507) ^ _imul(h1 ^ ((h1 & 0xFFFFFFFF) >> 13), 3266489909)
    )
    return 4294967296 * (2097151 & h2) + (h1 & 0xFFFFFFFF)


class _SeedRandom:
    """David Bau's seedrandom (ARC4, RC4-drop[256]), which SillyTavern's ``{{pick}}`` uses, for a
    string or number seed."""

    def __init__(self, seed: str | int) -> None:
        text = seed if isinstance(seed, str) else _js_str(seed) + "\0"
        key: list[int] = []
        smear = 0
        for j, ch in enumerate(_utf16_units(text)):
            slot = j & 255
            if slot < len(key):
                smear ^= key[slot] * 19
                key[slot] = (smear + ch) & 255
            else:
                key.append((smear + ch) & 255)
        if not key:
            key = [0]
        s = list(range(256))
        j = 0
        for i in range(256):
            t = s[i]
            j = (j + key[i % len(key)] + t) & 255
            s[i] = s[j]
            s[j] = t
        self.s, self.i, self.j = s, 0, 0
        self._bytes(256)

    def _bytes(self, count: int) -> int:
        s, i, j, r = self.s, self.i, self.j, 0
        for _ in range(count):
            i = (i + 1) & 255
            t = s[i]
            j = (j + t) & 255
            s[i] = s[j]
            s[j] = t
            r = r * 256 + s[(s[i] + s[j]) & 255]
        self.i, self.j = i, j
        return r

    def random(self) -> float:
        n, d, x = self._bytes(6), 2**48, 0
        while n < 2**52:
            n = (n + x) * 256
            d *= 256
            x = self._bytes(1)
        while n >= 2**53:
            n //= 2
            d //= 2
            x >>= 1
        return (n + x) / d


# ---------------------------------------------------------------------------------------------
# moment.js (English) formatting and humanizing

_MONTHS = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
]
_DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
_LOCALE_FORMATS = {
    "LTS": "h:mm:ss A",
    "LT": "h:mm A",
    "LLLL": "dddd, MMMM D, YYYY h:mm A",
    "LLL": "MMMM D, YYYY h:mm A",
    "LL": "MMMM D, YYYY",
    "L": "MM/DD/YYYY",
    "llll": "ddd, MMM D, YYYY h:mm A",
    "lll": "MMM D, YYYY h:mm A",
    "ll": "MMM D, YYYY",
    "l": "M/D/YYYY",
}
_MOMENT_TOKEN = re.compile(
    r"\[[^\]]*\]|LTS|LT|LLLL|LLL|LL|L|llll|lll|ll|l|YYYY|YY|Qo|Q|MMMM|MMM|MMo|Mo|MM|M|DDDD|DDDo|DDD|Do|DD|D|"
    r"dddd|ddd|dd|do|d|E|e|HH|H|hh|h|kk|k|mm|m|ss|s|SSS|SS|S|A|a|ZZ|Z|X|x|ww|wo|w|WW|Wo|W"
)


def _ordinal(n: int) -> str:
    if 10 <= n % 100 <= 20:
        return f"{n}th"
    return f"{n}" + {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")


def _locale_week(dt: datetime) -> int:
    """moment's English locale week: weeks start on Sunday, week 1 holds January 1st."""

    def week_start(year: int) -> datetime:
        jan1 = datetime(year, 1, 1)
        return jan1 - timedelta(days=(jan1.weekday() + 1) % 7)

    day = datetime(dt.year, dt.month, dt.day)
    if day >= week_start(dt.year + 1):
        return 1
    return (day - week_start(dt.year)).days // 7 + 1


def _utc_offset(dt: datetime, sep: str) -> str:
    offset = dt.utcoffset() if dt.tzinfo else datetime.now().astimezone().utcoffset()
    minutes = int((offset or timedelta(0)).total_seconds() // 60)
    sign = "+" if minutes >= 0 else "-"
    minutes = abs(minutes)
    return f"{sign}{minutes // 60:02d}{sep}{minutes % 60:02d}"


def _moment_format(dt: datetime, fmt: str) -> str:
    """moment(dt).format(fmt) in the English locale, for the tokens people use."""

    def token(m: re.Match[str]) -> str:
        t = m.group(0)
        if t.startswith("["):
            return t[1:-1]
        if t in _LOCALE_FORMATS:
            return _moment_format(dt, _LOCALE_FORMATS[t])
        h12 = dt.hour % 12 or 12
        week = _locale_week(dt)
        iso_week = dt.isocalendar()[1]
        values: dict[str, Callable[[], str]] = {
            "YYYY": lambda: f"{dt.year:04d}",
            "YY": lambda: f"{dt.year % 100:02d}",
            "Q": lambda: str((dt.month - 1) // 3 + 1),
            "Qo": lambda: _ordinal((dt.month - 1) // 3 + 1),
            "MMMM": lambda: _MONTHS[dt.month - 1],
            "MMM": lambda: _MONTHS[dt.month - 1][:3],
            "MM": lambda: f"{dt.month:02d}",
            "M": lambda: str(dt.month),
            "Mo": lambda: _ordinal(dt.month),
            "MMo": lambda: _ordinal(dt.month),
            "DDDD": lambda: f"{dt.timetuple().tm_yday:03d}",
            "DDD": lambda: str(dt.timetuple().tm_yday),
            "DDDo": lambda: _ordinal(dt.timetuple().tm_yday),
            "DD": lambda: f"{dt.day:02d}",
            "D": lambda: str(dt.day),
            "Do": lambda: _ordinal(dt.day),
            "dddd": lambda: _DAYS[dt.weekday()],
            "ddd": lambda: _DAYS[dt.weekday()][:3],
            "dd": lambda: _DAYS[dt.weekday()][:2],
            "d": lambda: str((dt.weekday() + 1) % 7),
            "do": lambda: _ordinal((dt.weekday() + 1) % 7),
            "e": lambda: str((dt.weekday() + 1) % 7),
            "E": lambda: str(dt.weekday() + 1),
            "HH": lambda: f"{dt.hour:02d}",
            "H": lambda: str(dt.hour),
            "hh": lambda: f"{h12:02d}",
            "h": lambda: str(h12),
            "kk": lambda: f"{dt.hour or 24:02d}",
            "k": lambda: str(dt.hour or 24),
            "mm": lambda: f"{dt.minute:02d}",
            "m": lambda: str(dt.minute),
            "ss": lambda: f"{dt.second:02d}",
            "s": lambda: str(dt.second),
            "SSS": lambda: f"{dt.microsecond // 1000:03d}",
            "SS": lambda: f"{dt.microsecond // 10000:02d}",
            "S": lambda: str(dt.microsecond // 100000),
            "A": lambda: "AM" if dt.hour < 12 else "PM",
            "a": lambda: "am" if dt.hour < 12 else "pm",
            "Z": lambda: _utc_offset(dt, ":"),
            "ZZ": lambda: _utc_offset(dt, ""),
            "X": lambda: str(int(dt.timestamp())),
            "x": lambda: str(int(dt.timestamp() * 1000)),
            "w": lambda: str(week),
            "ww": lambda: f"{week:02d}",
            "wo": lambda: _ordinal(week),
            "W": lambda: str(iso_week),
            "WW": lambda: f"{iso_week:02d}",
            "Wo": lambda: _ordinal(iso_week),
        }
        return values[t]()

    return _MOMENT_TOKEN.sub(token, fmt)


def _humanize(seconds: float, with_suffix: bool = False) -> str:
    """moment.duration(ms).humanize(with_suffix), English, default thresholds."""
    total = abs(seconds)
    s = round(total)
    minutes = round(total / 60)
    hours = round(total / 3600)
    days = round(total / 86400)
    months = round(total / 86400 * 4800 / 146097)
    years = round(total / 86400 * 400 / 146097)
    if s <= 44:
        text = "a few seconds"
    elif s < 45:
        text = f"{s} seconds"
    elif minutes <= 1:
        text = "a minute"
    elif minutes < 45:
        text = f"{minutes} minutes"
    elif hours <= 1:
        text = "an hour"
    elif hours < 22:
        text = f"{hours} hours"
    elif days <= 1:
        text = "a day"
    elif days < 26:
        text = f"{days} days"
    elif months <= 1:
        text = "a month"
    elif months < 11:
        text = f"{months} months"
    elif years <= 1:
        text = "a year"
    else:
        text = f"{years} years"
    if not with_suffix:
        return text
    return f"in {text}" if seconds > 0 else f"{text} ago"


def _parse_moment(text: str) -> datetime | None:
    s = text.strip()
    try:
        return datetime.fromisoformat(s)  # Python 3.11 reads a trailing "Z" itself
    except ValueError:
        pass
    for fmt in ("%B %d, %Y %I:%M %p", "%B %d, %Y", "%m/%d/%Y", "%I:%M %p", "%H:%M", "%Y/%m/%d"):
        try:
            return datetime.strptime(s, fmt)
        except ValueError:
            continue
    return None


# ---------------------------------------------------------------------------------------------
# Variables (chat_metadata.variables / global)


def _get_var(store: dict[str, Any], name: str) -> Any:
    value = store.get(name)
    if value is None:
        return ""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        if value.strip() == "":
            return value
        number = _js_number(value)
        if number is None:
            return value
        return int(number) if number.is_integer() and abs(number) < 2**53 else number
    number = _js_number(value)
    return value if number is None else number


def _add_var(store: dict[str, Any], name: str, value: Any) -> Any:
    current = _get_var(store, name) or 0
    try:
        parsed = json.loads(current if isinstance(current, str) else _js_str(current))
    except (ValueError, TypeError):
        parsed = None
    if isinstance(parsed, list):
        parsed.append(value)
        store[name] = json.dumps(parsed, ensure_ascii=False, separators=(",", ":"))
        return parsed
    increment = _js_number(value)
    current_number = _js_number(current)
    if increment is None or current_number is None:
        text = _js_str(current or "") + _js_str(value)
        store[name] = text
        return text
    total = current_number + increment
    if total.is_integer() and abs(total) < 2**53:
        store[name] = int(total)
    else:
        store[name] = total
    return store[name]


def _variable_line(line: str, ctx: MacroContext) -> str:
    local, glob = ctx.variables, ctx.global_variables
    steps: list[tuple[str, Callable[[re.Match[str]], str]]] = [
        (r"\{\{getvar::([^}]+)\}\}", lambda m: _js_str(_get_var(local, m.group(1).strip()))),
        (r"\{\{setvar::([^:]+)::([^}]+)\}\}", lambda m: _set(local, m.group(1).strip(), m.group(2))),
        (
            r"\{\{addvar::([^:]+)::([^}]+)\}\}",
            lambda m: (_add_var(local, m.group(1).strip(), m.group(2)), "")[1],
        ),
        (r"\{\{incvar::([^}]+)\}\}", lambda m: _js_str(_add_var(local, m.group(1).strip(), 1))),
        (r"\{\{decvar::([^}]+)\}\}", lambda m: _js_str(_add_var(local, m.group(1).strip(), -1))),
        (r"\{\{getglobalvar::([^}]+)\}\}", lambda m: _js_str(_get_var(glob, m.group(1).strip()))),
        (r"\{\{setglobalvar::([^:]+)::([^}]+)\}\}", lambda m: _set(glob, m.group(1).strip(), m.group(2))),
        (
            r"\{\{addglobalvar::([^:]+)::([^}]+)\}\}",
            lambda m: (_add_var(glob, m.group(1).strip(), m.group(2)), "")[1],
        ),
        (r"\{\{incglobalvar::([^}]+)\}\}", lambda m: _js_str(_add_var(glob, m.group(1).strip(), 1))),
        (r"\{\{decglobalvar::([^}]+)\}\}", lambda m: _js_str(_add_var(glob, m.group(1).strip(), -1))),
    ]
    for pattern, repl in steps:
        line = re.sub(pattern, repl, line, flags=re.IGNORECASE)
    return line


def _set(store: dict[str, Any], name: str, value: str) -> str:
    store[name] = value
    return ""


# ---------------------------------------------------------------------------------------------
# Lists for random / pick, dice

_ESCAPED_COMMA = "##\ufffdCOMMA\ufffd##"


def _split_list(body: str) -> list[str]:
    if "::" in body:
        return body.split("::")
    return [
        item.strip().replace(_ESCAPED_COMMA, ",") for item in body.replace("\\,", _ESCAPED_COMMA).split(",")
    ]


_DICE = re.compile(r"([1-9][0-9]*)?d([1-9][0-9]*)([+-][0-9]+)?", re.IGNORECASE)
_MAX_DICE = 1000


def _roll(formula: str, rng: _random.Random) -> str:
    formula = formula.strip()
    if re.fullmatch(r"[0-9]+", formula):
        formula = f"1d{formula}"
    m = _DICE.fullmatch(formula)
    if not m:
        return ""
    count = int(m.group(1) or 1)
    sides = int(m.group(2))
    modifier = int(m.group(3) or 0)
    if count > _MAX_DICE or sides > 10**9:  # keep a hostile card from stalling the prompt
        return ""
    return str(sum(rng.randint(1, sides) for _ in range(count)) + modifier)


# Instruct macros (``replaceInstructMacros``): name -> aliases, all case-insensitive.
_INSTRUCT_MACROS: dict[str, tuple[str, ...]] = {
    "instructSystemPromptPrefix": (),
    "instructSystemPromptSuffix": (),
    "instructInput": ("instructUserPrefix",),
    "instructUserSuffix": (),
    "instructOutput": ("instructAssistantPrefix",),
    "instructSeparator": ("instructAssistantSuffix",),
    "instructSystemPrefix": (),
    "instructSystemSuffix": (),
    "instructFirstOutput": ("instructFirstAssistantPrefix",),
    "instructLastOutput": ("instructLastAssistantPrefix",),
    "instructStop": (),
    "instructUserFiller": (),
    "instructSystemInstructionPrefix": (),
    "instructFirstInput": ("instructFirstUserPrefix",),
    "instructLastInput": ("instructLastUserPrefix",),
    "systemPrompt": (),
    "defaultSystemPrompt": ("instructSystem", "instructSystemPrompt"),
    "exampleSeparator": (),
    "chatStart": (),
}


def _instruct_value(ctx: MacroContext, name: str, aliases: tuple[str, ...]) -> str:
    lowered = {k.lower(): v for k, v in ctx.instruct.items()}
    for key in (name, *aliases):
        if key.lower() in lowered:
            return str(lowered[key.lower()])
    return ""


def _ci(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, re.IGNORECASE)


_LEGACY = [
    (_ci(r"<USER>"), "user"),
    (_ci(r"<BOT>"), "char"),
    (_ci(r"<CHAR>"), "char"),
    (_ci(r"<CHARIFNOTGROUP>"), "group"),
    (_ci(r"<GROUP>"), "group"),
]
_ROLL = _ci(r"\{\{roll[ :]([^}]+)\}\}")
_TRIM = _ci(r"(?:\r?\n)*\{\{trim\}\}(?:\r?\n)*")
_REVERSE = _ci(r"\{\{reverse:(.+?)\}\}")
_COMMENT = re.compile(r"\{\{//([\s\S]*?)\}\}")
_DATETIMEFORMAT = _ci(r"\{\{datetimeformat +([^}]*)\}\}")
_TIME_UTC = _ci(r"\{\{time_UTC([-+]\d+)\}\}")
_TIMEDIFF = _ci(r"\{\{timeDiff::(.*?)::(.*?)\}\}")
_BANNED = _ci(r"\{\{banned \"(.*)\"\}\}")
_RANDOM = _ci(r"\{\{random\s?::?([^}]+)\}\}")
_PICK = _ci(r"\{\{pick\s?::?([^}]+)\}\}")


def _const(value: str) -> Callable[[re.Match[str]], str]:
    """A re.sub replacement that inserts ``value`` as is (no backslash or group processing)."""
    return lambda _m: value


def _opt_int(value: int | None) -> str:
    return "" if value is None else str(value)


def substitute(text: str, ctx: MacroContext) -> str:
    """Replace SillyTavern macros in ``text`` (see the module docstring for the order)."""
    if not text:
        return ""
    raw = text
    group = ctx.group if ctx.group is not None else ctx.char
    legacy_values = {"user": ctx.user, "char": ctx.char, "group": group}
    for pattern, key in _LEGACY:
        text = pattern.sub(_const(legacy_values[key]), text)
    if "{{" not in text:
        return text

    rng = ctx.rng()
    text = _ROLL.sub(lambda m: _roll(m.group(1), rng), text)

    for name, aliases in _INSTRUCT_MACROS.items():
        names = "|".join(re.escape(n) for n in (name, *aliases))
        value = _instruct_value(ctx, name, aliases)
        text = re.sub(r"\{\{(" + names + r")\}\}", _const(value), text, flags=re.IGNORECASE)

    text = "\n".join(
        _variable_line(line, ctx) if line and "{{" in line else line for line in text.split("\n")
    )
    text = re.sub(r"\{\{newline\}\}", "\n", text, flags=re.IGNORECASE)
    text = _TRIM.sub("", text)
    text = re.sub(r"\{\{noop\}\}", "", text, flags=re.IGNORECASE)
    text = re.sub(r"\{\{input\}\}", lambda _m: ctx.input, text, flags=re.IGNORECASE)

    env: list[tuple[str, Any]] = []
    if ctx.original is not None:
        used = [False]

        def original() -> str:
            if used[0]:
                return ""
            used[0] = True
            return ctx.original or ""

        env.append(("original", original))
    env += [
        ("charPrompt", ctx.char_prompt),
        ("charJailbreak", ctx.char_jailbreak),
        ("charInstruction", ctx.char_jailbreak),
        ("description", ctx.description),
        ("personality", ctx.personality),
        ("scenario", ctx.scenario),
        ("persona", ctx.persona),
        ("mesExamples", ctx.mes_examples),
        ("charVersion", ctx.char_version),
        ("char_version", ctx.char_version),
        ("user", ctx.user),
        ("char", ctx.char),
        ("group", group),
        ("charIfNotGroup", group),
        ("model", ctx.model),
    ]
    env += list(ctx.extra.items())
    for name, value in env:

        def repl(_m: re.Match[str], value: Any = value) -> str:
            return _js_str(value() if callable(value) else value)

        text = re.sub(r"\{\{" + re.escape(name) + r"\}\}", repl, text, flags=re.IGNORECASE)

    chat_values = [
        ("maxPrompt", _opt_int(ctx.max_prompt)),
        ("lastMessage", ctx.last_message),
        ("lastMessageId", _opt_int(ctx.last_message_id)),
        ("lastUserMessage", ctx.last_user_message),
        ("lastCharMessage", ctx.last_char_message),
        ("firstIncludedMessageId", _opt_int(ctx.first_included_message_id)),
        ("lastSwipeId", _opt_int(ctx.last_swipe_id)),
        ("currentSwipeId", _opt_int(ctx.current_swipe_id)),
    ]
    for name, value in chat_values:
        text = re.sub(r"\{\{" + name + r"\}\}", _const(value), text, flags=re.IGNORECASE)
    text = _REVERSE.sub(lambda m: m.group(1)[::-1], text)
    text = _COMMENT.sub("", text)

    now = ctx.clock()
    text = re.sub(r"\{\{time\}\}", lambda _m: _moment_format(now, "LT"), text, flags=re.IGNORECASE)
    text = re.sub(r"\{\{date\}\}", lambda _m: _moment_format(now, "LL"), text, flags=re.IGNORECASE)
    text = re.sub(r"\{\{weekday\}\}", lambda _m: _moment_format(now, "dddd"), text, flags=re.IGNORECASE)
    text = re.sub(r"\{\{isotime\}\}", lambda _m: _moment_format(now, "HH:mm"), text, flags=re.IGNORECASE)
    text = re.sub(r"\{\{isodate\}\}", lambda _m: _moment_format(now, "YYYY-MM-DD"), text, flags=re.IGNORECASE)
    text = _DATETIMEFORMAT.sub(lambda m: _moment_format(now, m.group(1)), text)
    text = re.sub(r"\{\{idle_duration\}\}", lambda _m: _idle_duration(ctx, now), text, flags=re.IGNORECASE)
    text = _TIME_UTC.sub(lambda m: _time_utc(now, int(m.group(1))), text)
    text = _TIMEDIFF.sub(lambda m: _time_diff(m.group(1), m.group(2)), text)

    def banned(m: re.Match[str]) -> str:
        ctx.banned_words.append(m.group(1))
        return ""

    text = _BANNED.sub(banned, text)
    text = _RANDOM.sub(lambda m: _pick_from(_split_list(m.group(1)), rng.random()), text)
    text = _pick(text, raw, ctx)
    return text


def _pick_from(items: list[str], r: float) -> str:
    return items[math.floor(r * len(items))] if items else ""


def _pick(text: str, raw: str, ctx: MacroContext) -> str:
    if not _PICK.search(text):  # hashing long text costs ~0.5 ms: only when a pick is there
        return text
    chat_hash = ctx.chat_id_hash if ctx.chat_id_hash is not None else st_string_hash(ctx.chat_id)
    raw_hash = st_string_hash(raw)

    def repl(m: re.Match[str]) -> str:
        offset = _utf16_len(text[: m.start()])  # JavaScript offsets count UTF-16 units
        seed = st_string_hash(f"{chat_hash}-{raw_hash}-{offset}")
        return _pick_from(_split_list(m.group(1)), _SeedRandom(seed).random())

    return _PICK.sub(repl, text)


def _idle_duration(ctx: MacroContext, now: datetime) -> str:
    if ctx.last_user_time is None:
        return "just now"
    then = ctx.last_user_time
    if (now.tzinfo is None) != (then.tzinfo is None):
        now, then = now.astimezone(UTC), then.astimezone(UTC)
    return _humanize((now - then).total_seconds())


def _time_utc(now: datetime, offset_hours: int) -> str:
    moment_offset = (
        timedelta(hours=offset_hours) if abs(offset_hours) < 16 else timedelta(minutes=offset_hours)
    )
    return _moment_format(now.astimezone(timezone(moment_offset)), "LT")


def _time_diff(a: str, b: str) -> str:
    t1, t2 = _parse_moment(a), _parse_moment(b)
    if t1 is None or t2 is None:
        return "Invalid date"
    if (t1.tzinfo is None) != (t2.tzinfo is None):
        t1, t2 = t1.astimezone(UTC), t2.astimezone(UTC)
    return _humanize((t1 - t2).total_seconds(), with_suffix=True)


# Macros whose value changes from one turn to the next (or as the chat goes on).
_VOLATILE = [
    ("time", r"\{\{time\}\}"),
    ("date", r"\{\{date\}\}"),
    ("weekday", r"\{\{weekday\}\}"),
    ("isotime", r"\{\{isotime\}\}"),
    ("isodate", r"\{\{isodate\}\}"),
    ("datetimeformat", r"\{\{datetimeformat [^}]*\}\}"),
    ("time_UTC", r"\{\{time_UTC[-+]\d+\}\}"),
    ("idle_duration", r"\{\{idle_duration\}\}"),
    ("random", r"\{\{random\s?::?[^}]+\}\}"),
    ("roll", r"\{\{roll[ :][^}]+\}\}"),
    ("lastMessage", r"\{\{lastMessage\}\}"),
    ("lastMessageId", r"\{\{lastMessageId\}\}"),
    ("lastUserMessage", r"\{\{lastUserMessage\}\}"),
    ("lastCharMessage", r"\{\{lastCharMessage\}\}"),
    ("firstIncludedMessageId", r"\{\{firstIncludedMessageId\}\}"),
    ("lastSwipeId", r"\{\{lastSwipeId\}\}"),
    ("currentSwipeId", r"\{\{currentSwipeId\}\}"),
    ("input", r"\{\{input\}\}"),
    ("setvar", r"\{\{set(?:global)?var::"),
    ("addvar", r"\{\{add(?:global)?var::"),
    ("incvar", r"\{\{inc(?:global)?var::"),
    ("decvar", r"\{\{dec(?:global)?var::"),
    ("getvar", r"\{\{get(?:global)?var::"),
]


def volatile_macros(text: str) -> list[str]:
    """Macros in ``text`` whose value can change every turn (time, random, idle time, dice,
    last message, variables...), in order of first appearance. In a system prompt each one
    rewrites the start of the prompt and costs a full re-evaluation of the context.
    (``{{pick}}`` is stable per chat and not listed.)"""
    found: list[tuple[int, str]] = []
    for name, pattern in _VOLATILE:
        m = re.search(pattern, text or "", re.IGNORECASE)
        if m:
            found.append((m.start(), name))
    return [name for _pos, name in sorted(found)]
