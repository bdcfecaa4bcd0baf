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

Hostile text costs linear time and bounded memory. SillyTavern's regexes for macros whose body
runs to a delimiter (``{{roll:…}}``, ``{{timeDiff::…::…}}``, ``{{// …}}``…) retry from every
``{{`` and rescan to the end of the text when a macro is unclosed (quadratic, cubic for
``timeDiff``); :class:`_Delimited` finds the same matches in one pass. A context may add at most
``max_expansion`` characters to its texts (``{{description}}`` a million times, a line that
doubles a variable), one variable holds at most :data:`MAX_VARIABLE_CHARS` and all of a store
:data:`MAX_VARIABLES_CHARS`; past a limit the macro stays as written (or the variable keeps its
last value) and ``MacroContext.warnings`` gets one line saying so. SillyTavern has no such limits;
they are far above what any card uses.
"""

from __future__ import annotations

import functools
import json
import math
import random as _random
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

__all__ = [
    "MAX_DRAWS",
    "MAX_EXPANSION_CHARS",
    "MAX_VARIABLES_CHARS",
    "MAX_VARIABLE_CHARS",
    "MAX_VARIABLE_WORK",
    "MACRO_NAMES",
    "MacroContext",
    "st_string_hash",
    "substitute",
    "volatile_macros",
]

MAX_VARIABLE_CHARS = 1 << 20  # one variable's value
MAX_VARIABLES_CHARS = 8 << 20  # all the variables of one store (the chat's, or the globals)
MAX_EXPANSION_CHARS = 4 << 20  # what macros may add to the texts of one MacroContext
MAX_VARIABLE_WORK = 64 << 20  # what variable macros may read (numbers, JSON lists) per MacroContext
MAX_DRAWS = 20_000  # dice rolled, {{random}} and {{pick}} drawn, per MacroContext
_MAX_WARNINGS = 16


@dataclass
class _Spent:
    """What one MacroContext has used of the limits (all the texts it substitutes share them)."""

    added: int = 0
    work: int = 0
    draws: int = 0
    stopped: bool = False  # expansion hit its limit: from then on variables keep their values
    totals: dict[int, int] = field(default_factory=dict)  # id(store) -> the size of its values


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
    ``extra`` adds more ``{{name}}`` macros. ``warnings`` collects one line per limit a macro
    ran into (see the module docstring); ``max_expansion`` is how many characters macros may add
    to the texts of this context, all together."""

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
    warnings: list[str] = field(default_factory=list)
    max_expansion: int = MAX_EXPANSION_CHARS
    _rng: _random.Random | None = field(default=None, init=False, repr=False, compare=False)
    _spent: _Spent = field(default_factory=_Spent, init=False, repr=False, compare=False)

    def rng(self) -> _random.Random:
        if self._rng is None:
            self._rng = _random.Random(self.rng_seed) if self.rng_seed is not None else _random.SystemRandom()
        return self._rng

    def clock(self) -> datetime:
        return self.now if self.now is not None else datetime.now()

    def warn(self, message: str) -> None:
        """Adds a one-line warning, once, and no more than a few of them."""
        if message not in self.warnings and len(self.warnings) < _MAX_WARNINGS:
            self.warnings.append(message)

    def fits(self, matched: str, value: str) -> bool:
        """Whether replacing ``matched`` by ``value`` keeps within ``max_expansion`` (counted if so)."""
        grow = len(value) - len(matched)
        if grow <= 0:
            return True
        if self._spent.added + grow > self.max_expansion:
            self._spent.stopped = True
            self.warn(
                f"macros: stopped expanding at {self.max_expansion:,} added characters; "
                "the macros left stay as written and variables keep their values"
            )
            return False
        self._spent.added += grow
        return True

    def draw(self, count: int = 1) -> bool:
        """Counts ``count`` random draws (dice, ``{{random}}``, ``{{pick}}``: a pick seeds its own
        generator, 0.1 ms); False (and a warning) past :data:`MAX_DRAWS`."""
        if self._spent.draws + count > MAX_DRAWS:
            self.warn(
                f"macros: stopped drawing at {MAX_DRAWS:,} dice and random picks; the ones left stay as written"
            )
            return False
        self._spent.draws += count
        return True

    def afford(self, chars: int) -> bool:
        """Counts ``chars`` of work for a variable macro; False (and a warning) past the limit."""
        if self._spent.work + chars > MAX_VARIABLE_WORK:
            self.warn(
                f"macros: variable macros stopped after reading {MAX_VARIABLE_WORK:,} characters; "
                "the ones left stay as written"
            )
            return False
        self._spent.work += chars
        return True


# ---------------------------------------------------------------------------------------------
# JavaScript semantics SillyTavern's values go through

# Possessive, and with one way to read each number: "\d+\.?\d*" tried every split of a long run of
# digits (a 20,000-digit variable took 8 s to read).
_JS_NUMBER = re.compile(r"[+-]?(?:(?:\d++(?:\.\d*+)?+|\.\d++)(?:[eE][+-]?\d++)?+|Infinity)")


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
    for pattern, base in ((r"0[xX][0-9a-fA-F]+", 16), (r"0[oO][0-7]+", 8), (r"0[bB][01]+", 2)):
        if re.fullmatch(pattern, s):
            try:
                return float(int(s, base))
            except OverflowError:  # JavaScript: Infinity
                return math.inf
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
        keys = (key * (256 // len(key) + 1))[:256]
        j = 0
        for i in range(256):
            t = s[i]
            j = (j + keys[i] + t) & 255
            s[i] = s[j]
            s[j] = t
        # RC4-drop[256]: stir without building the 2,048-bit number _bytes would (a pick each
        # time: a card may hold thousands).
        i = j = 0
        for _ in range(256):
            i = (i + 1) & 255
            t = s[i]
            j = (j + t) & 255
            s[i] = s[j]
            s[j] = t
        self.s, self.i, self.j = s, i, j

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
_MOMENT_WORDS = (
    r"LTS|LT|LLLL|LLL|LL|L|llll|lll|ll|l|YYYY|YY|Qo|Q|MMMM|MMM|MMo|Mo|MM|M|DDDD|DDDo|DDD|Do|DD|D|"
    r"dddd|ddd|dd|do|d|E|e|HH|H|hh|h|kk|k|mm|m|ss|s|SSS|SS|S|A|a|ZZ|Z|X|x|ww|wo|w|WW|Wo|W"
)
_MOMENT_TOKEN = re.compile(r"\[[^\]]*\]|" + _MOMENT_WORDS)
_MOMENT_WORD = re.compile(_MOMENT_WORDS)  # past the last "]", where no [literal] can close


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

    # A "[" with no "]" after it would rescan to the end of the format: after the last "]" no
    # bracket can match, so that part is read for tokens only (same result, linear).
    cut = fmt.rfind("]") + 1
    return _MOMENT_TOKEN.sub(token, fmt[:cut]) + _MOMENT_WORD.sub(token, fmt[cut:])


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
# Linear-time scanning for macros whose body runs to a delimiter


class _Text:
    """A text one macro pass scans, whose searches remember their last answer. A pass asks for
    the next "}" (or "::", or line end) from ever later places, so a macro left unclosed a
    thousand times costs one scan of the text, not a thousand."""

    __slots__ = ("text", "_found", "_last")

    def __init__(self, text: str) -> None:
        self.text = text
        self._found: dict[str, tuple[int, int]] = {}  # needle -> (from, first hit at or after it)
        self._last: dict[tuple[str, int], tuple[int, int]] = {}  # (needle, end) -> (from, last hit)

    def find(self, needle: str, pos: int) -> int:
        """``text.find(needle, pos)``."""
        start, hit = self._found.get(needle, (-1, -1))
        if 0 <= start <= pos and (hit < 0 or pos <= hit):
            return hit
        hit = self.text.find(needle, pos)
        self._found[needle] = (pos, hit)
        return hit

    def line_end(self, pos: int) -> int:
        end = self.find("\n", pos)
        return len(self.text) if end < 0 else end

    def last_in_line(self, needle: str, pos: int) -> int:
        """``text.rfind(needle, pos, end of pos's line)``."""
        end = self.line_end(pos)
        start, hit = self._last.get((needle, end), (-1, -1))
        if not 0 <= start <= pos:
            start, hit = pos, self.text.rfind(needle, pos, end)
            self._last[(needle, end)] = (start, hit)
        return hit if hit >= pos else -1


_Close = Callable[[_Text, int], int]


@dataclass(frozen=True)
class _Delimited:
    """A macro whose body runs to a delimiter. ``pattern`` is SillyTavern's regex for it,
    ``opener`` matches its fixed start, and ``close(text, end of the opener)`` says where a match
    of ``pattern`` from there ends (-1: there is none). ``re.sub(pattern)`` finds the same
    matches, but retries from every ``{{`` and, when a macro is unclosed, rescans the rest of the
    text each time: 2,000 unclosed ``{{timeDiff::`` took minutes. Here a failed start costs a
    cached search, and the regex only runs over the span of a real match."""

    pattern: re.Pattern[str]
    opener: re.Pattern[str]
    close: _Close

    def finditer(self, text: str) -> Iterator[re.Match[str]]:
        scan = _Text(text)
        pos = 0
        while (start := self.opener.search(text, pos)) is not None:
            end = self.close(scan, start.end())
            m = self.pattern.match(text, start.start(), end) if end >= 0 else None
            if m is None:
                pos = start.start() + 1
                continue
            yield m
            pos = m.end()

    def search(self, text: str) -> re.Match[str] | None:
        return next(self.finditer(text), None)

    def sub(self, repl: Callable[[re.Match[str]], str], text: str) -> str:
        """``pattern.sub(repl, text)``."""
        parts: list[str] = []
        done = 0
        for m in self.finditer(text):
            parts += (text[done : m.start()], repl(m))
            done = m.end()
        return "".join([*parts, text[done:]]) if parts else text


def _to_brace(scan: _Text, pos: int, least: int = 1) -> int:
    """End of ``([^}]+)\\}\\}`` from pos (``least=0``: ``([^}]*)``)."""
    brace = scan.find("}", pos)
    return brace + 2 if brace - pos >= least and scan.text.startswith("}", brace + 1) else -1


def _to_brace_or_empty(scan: _Text, pos: int) -> int:
    return _to_brace(scan, pos, least=0)


def _to_pair(scan: _Text, pos: int) -> int:
    """End of ``([^:]+)::([^}]+)\\}\\}``."""
    colon = scan.find(":", pos)
    if colon <= pos or not scan.text.startswith(":", colon + 1):
        return -1
    return _to_brace(scan, colon + 2)


def _to_time_diff(scan: _Text, pos: int) -> int:
    """End of ``(.*?)::(.*?)\\}\\}``: the first "::" on the line, then the first "}}" after it (a
    later "::" could only find a later "}}")."""
    end = scan.line_end(pos)
    colons = scan.find("::", pos)
    close = scan.find("}}", colons + 2) if 0 <= colons and colons + 2 <= end else -1
    return close + 2 if 0 <= close and close + 2 <= end else -1


def _to_reverse(scan: _Text, pos: int) -> int:
    """End of ``(.+?)\\}\\}``: the first "}}" past one character, on the same line."""
    close = scan.find("}}", pos + 1)
    return close + 2 if 0 <= close and close + 2 <= scan.line_end(pos) else -1


def _to_comment(scan: _Text, pos: int) -> int:
    """End of ``([\\s\\S]*?)\\}\\}``."""
    close = scan.find("}}", pos)
    return close + 2 if close >= 0 else -1


def _to_banned(scan: _Text, pos: int) -> int:
    """End of ``(.*)"\\}\\}``: greedy, so the last '"}}' on the line."""
    close = scan.last_in_line('"}}', pos)
    return close + 3 if close >= 0 else -1


def _delimited(pattern: str, opener: str, close: _Close, flags: int = re.IGNORECASE) -> _Delimited:
    return _Delimited(re.compile(pattern, flags), re.compile(opener, flags), close)


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


def _var_size(value: Any) -> int:
    return len(value) if isinstance(value, str) else len(_js_str(value))


def _short(name: str) -> str:
    return name if len(name) <= 40 else name[:39] + "…"


def _write(ctx: MacroContext, store: dict[str, Any], name: str, value: Any, macro: str) -> bool:
    """``store[name] = value``, unless that goes over a limit: then the variable keeps its last
    value, and a warning says why."""
    if ctx._spent.stopped:  # expansion stopped: what would be stored is text left half-expanded
        return False
    totals = ctx._spent.totals
    if id(store) not in totals:
        totals[id(store)] = sum(_var_size(v) for v in store.values())
    size, old = _var_size(value), (_var_size(store[name]) if name in store else 0)
    total = totals[id(store)] + size - old
    if size > MAX_VARIABLE_CHARS:
        ctx.warn(
            f"macros: {{{{{macro}::{_short(name)}}}}} not done: {size:,} characters is over the "
            f"{MAX_VARIABLE_CHARS:,} a variable may hold; it keeps its last value"
        )
        return False
    if size > old and total > MAX_VARIABLES_CHARS:
        ctx.warn(
            f"macros: {{{{{macro}::{_short(name)}}}}} not done: the variables would hold {total:,} "
            f"characters, over the {MAX_VARIABLES_CHARS:,} allowed; it keeps its last value"
        )
        return False
    store[name] = value
    totals[id(store)] = total
    return True


def _json_list(current: Any) -> list[Any] | None:
    text = current if isinstance(current, str) else _js_str(current)
    if not text.lstrip().startswith("["):  # only a JSON array is appended to: skip the parse
        return None
    try:
        parsed = json.loads(text)
    except (ValueError, RecursionError):  # "[[[[…" a hundred thousand deep
        return None
    return parsed if isinstance(parsed, list) else None


def _add_var(ctx: MacroContext, store: dict[str, Any], name: str, value: Any, macro: str) -> Any:
    """SillyTavern's ``addLocalVariable``: append to a JSON list, add numbers, else concatenate.
    Returns the new value (the old one when a limit refused it)."""
    current = _get_var(store, name) or 0
    parsed = _json_list(current)
    new: Any = None
    result: Any = None
    if parsed is not None:
        parsed.append(value)
        try:
            new, result = json.dumps(parsed, ensure_ascii=False, separators=(",", ":")), parsed
        except RecursionError:  # as deep as json.loads could just read
            new = None
    if new is None:
        increment = _js_number(value)
        current_number = _js_number(current)
        if increment is None or current_number is None:
            new = result = _js_str(current or "") + _js_str(value)
        else:
            total = current_number + increment
            new = result = int(total) if total.is_integer() and abs(total) < 2**53 else total
    return result if _write(ctx, store, name, new, macro) else current


def _read_cost(store: dict[str, Any], name: str) -> int:
    value = store.get(name)
    return len(value) if isinstance(value, str) else 8


def _get_step(store: dict[str, Any], ctx: MacroContext) -> Callable[[re.Match[str]], str]:
    def repl(m: re.Match[str]) -> str:
        name = m.group(1).strip()
        if not ctx.afford(_read_cost(store, name)):
            return m.group(0)
        value = _js_str(_get_var(store, name))
        return value if ctx.fits(m.group(0), value) else m.group(0)

    return repl


def _set_step(store: dict[str, Any], ctx: MacroContext, macro: str) -> Callable[[re.Match[str]], str]:
    def repl(m: re.Match[str]) -> str:
        _write(ctx, store, m.group(1).strip(), m.group(2), macro)
        return ""

    return repl


def _add_step(
    store: dict[str, Any], ctx: MacroContext, macro: str, by: int | None
) -> Callable[[re.Match[str]], str]:
    """addvar (``by`` None: the macro's second argument, and it leaves nothing) or inc/decvar."""

    def repl(m: re.Match[str]) -> str:
        name = m.group(1).strip()
        value: Any = m.group(2) if by is None else by
        cost = _read_cost(store, name) + (len(value) if isinstance(value, str) else 0)
        if not ctx.afford(cost):
            return m.group(0)
        result = _js_str(_add_var(ctx, store, name, value, macro))
        if by is None:
            return ""
        return result if ctx.fits(m.group(0), result) else m.group(0)

    return repl


# SillyTavern's order on each line: get, set, add, inc, dec; local then global.
_VARIABLE_MACROS = [
    (
        scope,
        kind,
        _delimited(rf"\{{\{{{kind}{scope}var::([^}}]+)\}}\}}", rf"\{{\{{{kind}{scope}var::", _to_brace)
        if kind in ("get", "inc", "dec")
        else _delimited(
            rf"\{{\{{{kind}{scope}var::([^:]+)::([^}}]+)\}}\}}", rf"\{{\{{{kind}{scope}var::", _to_pair
        ),
    )
    for scope in ("", "global")
    for kind in ("get", "set", "add", "inc", "dec")
]


def _variable_line(line: str, ctx: MacroContext) -> str:
    for scope, kind, macro in _VARIABLE_MACROS:
        store = ctx.global_variables if scope else ctx.variables
        name = f"{kind}{scope}var"
        if kind == "get":
            repl = _get_step(store, ctx)
        elif kind == "set":
            repl = _set_step(store, ctx, name)
        else:
            repl = _add_step(store, ctx, name, {"add": None, "inc": 1, "dec": -1}[kind])
        line = macro.sub(repl, line)
    return line


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


def _roll(formula: str, ctx: MacroContext) -> str | None:
    """The roll's total, "" for a formula that is not dice, None past the context's draws."""
    formula = formula.strip()
    if re.fullmatch(r"[0-9]+", formula):
        formula = f"1d{formula}"
    m = _DICE.fullmatch(formula)
    # Past 12 digits a roll is nonsense anyway, and int() refuses over 4,300 (a traceback).
    if not m or any(len(g or "") > 12 for g in m.groups()):
        return ""
    count = int(m.group(1) or 1)
    sides = int(m.group(2))
    modifier = int(m.group(3) or 0)
    if count > _MAX_DICE or sides > 10**9:  # keep a hostile card from stalling the prompt
        return ""
    if not ctx.draw(count):
        return None
    rng = ctx.rng()
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
_ROLL = _delimited(r"\{\{roll[ :]([^}]+)\}\}", r"\{\{roll[ :]", _to_brace)
_TRIM = _ci(r"\{\{trim\}\}")
_NEWLINES = re.compile(r"(?:\r?\n)*")
_REVERSE = _delimited(r"\{\{reverse:(.+?)\}\}", r"\{\{reverse:", _to_reverse)
_COMMENT = _delimited(r"\{\{//([\s\S]*?)\}\}", r"\{\{//", _to_comment, flags=0)
_DATETIMEFORMAT = _delimited(r"\{\{datetimeformat +([^}]*)\}\}", r"\{\{datetimeformat ", _to_brace_or_empty)
_TIME_UTC = _ci(r"\{\{time_UTC([-+]\d+)\}\}")  # digits, then "}}": linear as it is
_TIMEDIFF = _delimited(r"\{\{timeDiff::(.*?)::(.*?)\}\}", r"\{\{timeDiff::", _to_time_diff)
_BANNED = _delimited(r"\{\{banned \"(.*)\"\}\}", r"\{\{banned \"", _to_banned)
_RANDOM = _delimited(r"\{\{random\s?::?([^}]+)\}\}", r"\{\{random\s?:", _to_brace)
_PICK = _delimited(r"\{\{pick\s?::?([^}]+)\}\}", r"\{\{pick\s?:", _to_brace)


def _put(ctx: MacroContext, value: Callable[[re.Match[str]], Any]) -> Callable[[re.Match[str]], str]:
    """A replacement that inserts ``value(match)`` as is (no backslash or group processing), or
    leaves the macro as written when ``value`` gives None (a limit reached) or inserting it would
    go over the context's expansion limit."""

    def repl(m: re.Match[str]) -> str:
        got = value(m)
        if got is None:
            return m.group(0)
        out = _js_str(got)
        return out if ctx.fits(m.group(0), out) else m.group(0)

    return repl


def _const(ctx: MacroContext, value: Any) -> Callable[[re.Match[str]], str]:
    return _put(ctx, lambda _m: _js_str(value() if callable(value) else value))


def _opt_int(value: int | None) -> str:
    return "" if value is None else str(value)


def _trim(text: str) -> str:
    """Removes each ``{{trim}}`` with the line breaks around it: SillyTavern's
    ``(?:\\r?\\n)*{{trim}}(?:\\r?\\n)*``, which as a regex retries from every line break of a
    long run of them (20,000 blank lines took 5 s)."""
    parts: list[str] = []
    done = 0
    while (m := _TRIM.search(text, done)) is not None:
        start = m.start()
        while start > done and text[start - 1] == "\n":  # the line breaks before, back to the last match
            start -= 2 if start - 2 >= done and text[start - 2] == "\r" else 1
        parts.append(text[done:start])
        after = _NEWLINES.match(text, m.end())  # and after it (a star: it always matches)
        done = after.end() if after else m.end()
    return "".join([*parts, text[done:]]) if parts else text


def _sub_names(text: str, names: list[tuple[str, Any]], ctx: MacroContext) -> str:
    """``{{name}}`` -> value, one name after the other (a value's own macros meet later names)."""
    for name, value in names:
        text = re.sub(r"\{\{" + re.escape(name) + r"\}\}", _const(ctx, value), text, flags=re.IGNORECASE)
    return text


def substitute(text: str, ctx: MacroContext) -> str:
    """Replace SillyTavern macros in ``text`` (see the module docstring for the order)."""
    if not text:
        return ""
    raw = text
    group = ctx.group if ctx.group is not None else ctx.char
    legacy_values = {"user": ctx.user, "char": ctx.char, "group": group}
    for pattern, key in _LEGACY:
        text = pattern.sub(_const(ctx, legacy_values[key]), text)
    if "{{" not in text:
        return text

    rng = ctx.rng()
    text = _ROLL.sub(_put(ctx, lambda m: _roll(m.group(1), ctx)), text)

    for name, aliases in _INSTRUCT_MACROS.items():
        names = "|".join(re.escape(n) for n in (name, *aliases))
        value = _instruct_value(ctx, name, aliases)
        text = re.sub(r"\{\{(" + names + r")\}\}", _const(ctx, value), text, flags=re.IGNORECASE)

    text = "\n".join(
        _variable_line(line, ctx) if line and "{{" in line else line for line in text.split("\n")
    )
    text = re.sub(r"\{\{newline\}\}", "\n", text, flags=re.IGNORECASE)
    text = _trim(text)
    text = re.sub(r"\{\{noop\}\}", "", text, flags=re.IGNORECASE)
    text = re.sub(r"\{\{input\}\}", _const(ctx, ctx.input), text, flags=re.IGNORECASE)
    text = _sub_names(text, _fields(ctx, group), ctx)
    text = _sub_names(text, _chat_values(ctx), ctx)
    text = _REVERSE.sub(lambda m: m.group(1)[::-1], text)
    text = _COMMENT.sub(lambda _m: "", text)
    text = _time_macros(text, ctx)

    def banned(m: re.Match[str]) -> str:
        ctx.banned_words.append(m.group(1))
        return ""

    text = _BANNED.sub(banned, text)
    text = _RANDOM.sub(
        _put(ctx, lambda m: _pick_from(_split_list(m.group(1)), rng.random()) if ctx.draw() else None), text
    )
    text = _pick(text, raw, ctx)
    return text


def _fields(ctx: MacroContext, group: str) -> list[tuple[str, Any]]:
    """The character and user fields, ``{{original}}`` first (it is substituted once)."""
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
    return env + list(ctx.extra.items())


def _chat_values(ctx: MacroContext) -> list[tuple[str, Any]]:
    return [
        ("maxPrompt", _opt_int(ctx.max_prompt)),
        ("lastMessage", ctx.last_message),
        ("lastMessageId", _opt_int(ctx.last_message_id)),
        ("lastUserMessage", ctx.last_user_message),
        ("lastCharMessage", ctx.last_char_message),
        ("firstIncludedMessageId", _opt_int(ctx.first_included_message_id)),
        ("lastSwipeId", _opt_int(ctx.last_swipe_id)),
        ("currentSwipeId", _opt_int(ctx.current_swipe_id)),
    ]


_CLOCK_MACROS = {"time": "LT", "date": "LL", "weekday": "dddd", "isotime": "HH:mm", "isodate": "YYYY-MM-DD"}


def _time_macros(text: str, ctx: MacroContext) -> str:
    now = ctx.clock()
    for name, fmt in _CLOCK_MACROS.items():
        clock = functools.partial(_moment_format, now, fmt)  # formatted only where the macro is
        text = re.sub(r"\{\{" + name + r"\}\}", _const(ctx, clock), text, flags=re.I)
    text = _DATETIMEFORMAT.sub(_put(ctx, lambda m: _moment_format(now, m.group(1))), text)
    text = re.sub(r"\{\{idle_duration\}\}", _put(ctx, lambda _m: _idle_duration(ctx, now)), text, flags=re.I)
    text = _TIME_UTC.sub(_put(ctx, lambda m: _time_utc(now, m.group(1))), text)
    return _TIMEDIFF.sub(_put(ctx, lambda m: _time_diff(m.group(1), m.group(2))), text)


def _pick_from(items: list[str], r: float) -> str:
    return items[math.floor(r * len(items))] if items else ""


def _pick(text: str, raw: str, ctx: MacroContext) -> str:
    if not _PICK.search(text):  # hashing long text costs ~0.5 ms: only when a pick is there
        return text
    chat_hash = ctx.chat_id_hash if ctx.chat_id_hash is not None else st_string_hash(ctx.chat_id)
    raw_hash = st_string_hash(raw)
    counted = [0, 0]  # a place in text, and its offset in UTF-16 units: counted once, not per pick

    def choose(m: re.Match[str]) -> str | None:
        if not ctx.draw():
            return None
        place, units = counted
        units += _utf16_len(text[place : m.start()])  # JavaScript offsets count UTF-16 units
        counted[:] = [m.start(), units]
        seed = st_string_hash(f"{chat_hash}-{raw_hash}-{units}")
        return _pick_from(_split_list(m.group(1)), _SeedRandom(seed).random())

    return _PICK.sub(_put(ctx, choose), text)


def _idle_duration(ctx: MacroContext, now: datetime) -> str:
    if ctx.last_user_time is None:
        return "just now"
    then = ctx.last_user_time
    if (now.tzinfo is None) != (then.tzinfo is None):
        now, then = now.astimezone(UTC), then.astimezone(UTC)
    return _humanize((now - then).total_seconds())


def _time_utc(now: datetime, offset: str) -> str:
    """moment's ``utc().utcOffset(n)``: n hours when |n| < 16, else n minutes, with no bound (a
    day or more is fine); "Invalid date" past what a date can hold."""
    if len(offset) > 12:  # int() refuses over 4,300 digits; a date has no use for 13
        return "Invalid date"
    n = int(offset)
    try:
        shifted = now.astimezone(UTC).replace(tzinfo=None) + timedelta(minutes=n * 60 if abs(n) < 16 else n)
    except (OverflowError, ValueError):
        return "Invalid date"
    return _moment_format(shifted, "LT")


def _time_diff(a: str, b: str) -> str:
    t1, t2 = _parse_moment(a), _parse_moment(b)
    if t1 is None or t2 is None:
        return "Invalid date"
    try:
        if (t1.tzinfo is None) != (t2.tzinfo is None):
            t1, t2 = t1.astimezone(UTC), t2.astimezone(UTC)
        return _humanize((t1 - t2).total_seconds(), with_suffix=True)
    except (OverflowError, ValueError):  # year 1 or 9999 moved to UTC
        return "Invalid date"


# Macros whose value changes from one turn to the next (or as the chat goes on).
_VOLATILE: list[tuple[str, str | _Delimited]] = [
    ("time", r"\{\{time\}\}"),
    ("date", r"\{\{date\}\}"),
    ("weekday", r"\{\{weekday\}\}"),
    ("isotime", r"\{\{isotime\}\}"),
    ("isodate", r"\{\{isodate\}\}"),
    ("datetimeformat", _DATETIMEFORMAT),
    ("time_UTC", r"\{\{time_UTC[-+]\d+\}\}"),
    ("idle_duration", r"\{\{idle_duration\}\}"),
    ("random", _RANDOM),
    ("roll", _ROLL),
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
        m = (
            pattern.search(text or "")
            if isinstance(pattern, _Delimited)
            else re.search(pattern, text or "", re.I)
        )
        if m:
            found.append((m.start(), name))
    return [name for _pos, name in sorted(found)]


# Every macro name substitute() knows, as SillyTavern spells them (they are case-insensitive).
MACRO_NAMES: tuple[str, ...] = (
    *(n for name, aliases in _INSTRUCT_MACROS.items() for n in (name, *aliases)),
    *(f"{kind}{scope}var" for scope, kind, _macro in _VARIABLE_MACROS),
    *(name for name, _value in _fields(MacroContext(char="", user="", original=""), "")),
    *(name for name, _value in _chat_values(MacroContext(char="", user=""))),
    *("roll", "newline", "trim", "noop", "input", "reverse", "//", "time", "date", "weekday"),
    *("isotime", "isodate", "datetimeformat", "idle_duration", "time_UTC", "timeDiff", "banned"),
    *("random", "pick"),
)
