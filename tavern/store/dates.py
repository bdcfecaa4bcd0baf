"""Dates and file names as SillyTavern writes them in chat files.

Used by the chat store (`message.py`, `jsonl.py`, `chatstore.py`) and by anyone who shows a
message's time. SillyTavern has written `send_date` three ways over the years and its chats
still hold all of them:

- epoch milliseconds, a number (TavernAI-era files, early 2023);
- `"September 15, 2024 2:03pm"` (1.10 to 1.12: what Tavern writes, so ST shows it as usual);
- ISO 8601, `"2025-03-02T09:15:00.000Z"` (later releases; also every `gen_started`).

`create_date` and file names use the "humanized" `2024-09-15@14h03m22s` form; even older files
have `2023-6-2 @21h 09m 51s 363ms`. The humanized and meridiem forms carry no zone: they are the
writer's local time, and we read them as this machine's local time.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from tavern.store.names import sanitize_file_name  # the one sanitizer

MONTHS = (
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
)
# Full names and three-letter abbreviations, lower-cased, to month numbers.
_MONTH_NUMBERS = {name.lower(): i + 1 for i, name in enumerate(MONTHS)} | {
    name[:3].lower(): i + 1 for i, name in enumerate(MONTHS)
}

_MERIDIEM = re.compile(
    r"([A-Za-z]+)\.?\s+(\d{1,2}),\s*(\d{4})\s+(\d{1,2}):(\d{1,2})\s*([ap]m)", re.IGNORECASE
)
_HUMANIZED = re.compile(r"(\d{4})-(\d{1,2})-(\d{1,2})\s*@(\d{1,2})h(\d{1,2})m(\d{1,2})s")
_HUMANIZED_MS = re.compile(r"(\d{4})-(\d{1,2})-(\d{1,2}) @(\d{1,2})h (\d{1,2})m (\d{1,2})s (\d{1,3})ms")
_DIGITS = re.compile(r"\d+")


def parse_send_date(value: object) -> datetime | None:
    """Read any `send_date`/`create_date` SillyTavern ever wrote; None if it is not a date.

    The result is always timezone-aware: epoch and ISO values keep their zone (UTC for epoch),
    forms without a zone are taken as local time.
    """
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float) or (isinstance(value, str) and _DIGITS.fullmatch(value)):
        try:
            return datetime.fromtimestamp(float(value) / 1000.0, tz=UTC)
        except (OverflowError, OSError, ValueError):
            return None
    if not isinstance(value, str):
        return None
    text = value.strip()
    if not text:
        return None
    if match := _MERIDIEM.fullmatch(text):
        month = _MONTH_NUMBERS.get(match[1].lower())
        if month is None:
            return None
        hour = int(match[4]) % 12 + (12 if match[6].lower() == "pm" else 0)
        return _local(int(match[3]), month, int(match[2]), hour, int(match[5]))
    if match := _HUMANIZED_MS.fullmatch(text):
        y, mo, d, h, mi, sec, ms = (int(g) for g in match.groups())
        return _local(y, mo, d, h, mi, sec, ms * 1000)
    if match := _HUMANIZED.fullmatch(text):
        y, mo, d, h, mi, sec = (int(g) for g in match.groups())
        return _local(y, mo, d, h, mi, sec)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.astimezone()


def _local(
    year: int, month: int, day: int, hour: int, minute: int, second: int = 0, microsecond: int = 0
) -> datetime | None:
    try:
        return datetime(year, month, day, hour, minute, second, microsecond).astimezone()
    except ValueError:
        return None


def _as_local(when: datetime | None) -> datetime:
    if when is None:
        return datetime.now().astimezone()
    return when.astimezone() if when.tzinfo else when


def format_send_date(when: datetime | None = None) -> str:
    """`send_date` as SillyTavern 1.12 writes it: "September 15, 2024 2:03pm" (local time)."""
    dt = _as_local(when)
    hour = dt.hour % 12 or 12
    meridiem = "pm" if dt.hour >= 12 else "am"
    return f"{MONTHS[dt.month - 1]} {dt.day}, {dt.year} {hour}:{dt.minute:02d}{meridiem}"


def format_humanized(when: datetime | None = None) -> str:
    """`create_date` and the date in chat file names: "2024-09-15@14h03m22s" (local time)."""
    return _as_local(when).strftime("%Y-%m-%d@%Hh%Mm%Ss")


def format_iso(when: datetime | None = None) -> str:
    """`gen_started`/`gen_finished` as JavaScript's `Date.toISOString()`: UTC, milliseconds, Z."""
    dt = (when or datetime.now(UTC)).astimezone(UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def chat_file_name(character_name: str, when: datetime | None = None) -> str:
    """SillyTavern's chat file name: "<Character name> - 2024-09-15@14h03m22s.jsonl"."""
    return f"{sanitize_file_name(character_name, 'Chat')} - {format_humanized(when)}.jsonl"
