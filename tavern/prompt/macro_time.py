"""Time and date macros: ``{{time}}``, ``{{date}}``, ``{{weekday}}``, ``{{isotime}}``,
``{{isodate}}``, ``{{datetimeformat …}}``, ``{{idle_duration}}``, ``{{time_UTC±n}}`` and
``{{timeDiff::a::b}}``, with moment.js's English formats (``{{time}}`` "2:03 PM", ``{{date}}``
"September 15, 2024") and its humanized durations.

Who calls it: :func:`tavern.prompt.macros.substitute`, through :func:`time_macros`.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from tavern.prompt.macro_scan import const, delimited, put, to_brace_or_empty, to_time_diff
from tavern.store.dates import MONTHS  # the English names SillyTavern's dates use

if TYPE_CHECKING:
    from tavern.prompt.macro_context import MacroContext

DATETIMEFORMAT = delimited(r"\{\{datetimeformat +([^}]*)\}\}", r"\{\{datetimeformat ", to_brace_or_empty)
_TIME_UTC = re.compile(r"\{\{time_UTC([-+]\d+)\}\}", re.IGNORECASE)  # digits, then "}}": linear as it is
TIMEDIFF = delimited(r"\{\{timeDiff::(.*?)::(.*?)\}\}", r"\{\{timeDiff::", to_time_diff)


# ---------------------------------------------------------------------------------------------
# moment.js (English) formatting and humanizing

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
            "MMMM": lambda: MONTHS[dt.month - 1],
            "MMM": lambda: MONTHS[dt.month - 1][:3],
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
# The macros

_CLOCK_MACROS = {"time": "LT", "date": "LL", "weekday": "dddd", "isotime": "HH:mm", "isodate": "YYYY-MM-DD"}


def time_macros(text: str, ctx: MacroContext) -> str:
    """The time and date macros of ``text`` replaced, all read from one clock reading."""
    now = ctx.clock()
    for name, fmt in _CLOCK_MACROS.items():
        clock = functools.partial(_moment_format, now, fmt)  # formatted only where the macro is
        text = re.sub(r"\{\{" + name + r"\}\}", const(ctx, clock), text, flags=re.I)
    text = DATETIMEFORMAT.sub(put(ctx, lambda m: _moment_format(now, m.group(1))), text)
    text = re.sub(r"\{\{idle_duration\}\}", put(ctx, lambda _m: _idle_duration(ctx, now)), text, flags=re.I)
    text = _TIME_UTC.sub(put(ctx, lambda m: _time_utc(now, m.group(1))), text)
    return TIMEDIFF.sub(put(ctx, lambda m: _time_diff(m.group(1), m.group(2))), text)


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
