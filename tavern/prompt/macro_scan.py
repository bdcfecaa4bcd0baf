"""Finding SillyTavern macros in linear time, and the replacements that insert their values
within a :class:`~tavern.prompt.macro_context.MacroContext`'s expansion limit.

Who calls it: :func:`tavern.prompt.macros.substitute` and its macro families. SillyTavern's
regexes for macros whose body runs to a delimiter (``{{roll:…}}``, ``{{timeDiff::…::…}}``,
``{{// …}}``…) retry from every ``{{`` and rescan to the end of the text when a macro is unclosed
(quadratic, cubic for ``timeDiff``); :class:`Delimited` finds the same matches in one pass.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tavern.prompt.macro_js import js_str

if TYPE_CHECKING:
    from tavern.prompt.macro_context import MacroContext


class ScanText:
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


Close = Callable[[ScanText, int], int]


@dataclass(frozen=True)
class Delimited:
    """A macro whose body runs to a delimiter. ``pattern`` is SillyTavern's regex for it,
    ``opener`` matches its fixed start, and ``close(text, end of the opener)`` says where a match
    of ``pattern`` from there ends (-1: there is none). ``re.sub(pattern)`` finds the same
    matches, but retries from every ``{{`` and, when a macro is unclosed, rescans the rest of the
    text each time: 2,000 unclosed ``{{timeDiff::`` took minutes. Here a failed start costs a
    cached search, and the regex only runs over the span of a real match."""

    pattern: re.Pattern[str]
    opener: re.Pattern[str]
    close: Close

    def finditer(self, text: str) -> Iterator[re.Match[str]]:
        scan = ScanText(text)
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


def to_brace(scan: ScanText, pos: int, least: int = 1) -> int:
    """End of ``([^}]+)\\}\\}`` from pos (``least=0``: ``([^}]*)``)."""
    brace = scan.find("}", pos)
    return brace + 2 if brace - pos >= least and scan.text.startswith("}", brace + 1) else -1


def to_brace_or_empty(scan: ScanText, pos: int) -> int:
    return to_brace(scan, pos, least=0)


def to_pair(scan: ScanText, pos: int) -> int:
    """End of ``([^:]+)::([^}]+)\\}\\}``."""
    colon = scan.find(":", pos)
    if colon <= pos or not scan.text.startswith(":", colon + 1):
        return -1
    return to_brace(scan, colon + 2)


def to_time_diff(scan: ScanText, pos: int) -> int:
    """End of ``(.*?)::(.*?)\\}\\}``: the first "::" on the line, then the first "}}" after it (a
    later "::" could only find a later "}}")."""
    end = scan.line_end(pos)
    colons = scan.find("::", pos)
    close = scan.find("}}", colons + 2) if 0 <= colons and colons + 2 <= end else -1
    return close + 2 if 0 <= close and close + 2 <= end else -1


def to_reverse(scan: ScanText, pos: int) -> int:
    """End of ``(.+?)\\}\\}``: the first "}}" past one character, on the same line."""
    close = scan.find("}}", pos + 1)
    return close + 2 if 0 <= close and close + 2 <= scan.line_end(pos) else -1


def to_comment(scan: ScanText, pos: int) -> int:
    """End of ``([\\s\\S]*?)\\}\\}``."""
    close = scan.find("}}", pos)
    return close + 2 if close >= 0 else -1


def to_banned(scan: ScanText, pos: int) -> int:
    """End of ``(.*)"\\}\\}``: greedy, so the last '"}}' on the line."""
    close = scan.last_in_line('"}}', pos)
    return close + 3 if close >= 0 else -1


def delimited(pattern: str, opener: str, close: Close, flags: int = re.IGNORECASE) -> Delimited:
    return Delimited(re.compile(pattern, flags), re.compile(opener, flags), close)


# ---------------------------------------------------------------------------------------------
# Replacements


def put(ctx: MacroContext, value: Callable[[re.Match[str]], object]) -> Callable[[re.Match[str]], str]:
    """A replacement that inserts ``value(match)`` as is (no backslash or group processing), or
    leaves the macro as written when ``value`` gives None (a limit reached) or inserting it would
    go over the context's expansion limit."""

    def repl(m: re.Match[str]) -> str:
        got = value(m)
        if got is None:
            return m.group(0)
        out = js_str(got)
        return out if ctx.fits(m.group(0), out) else m.group(0)

    return repl


def const(ctx: MacroContext, value: object) -> Callable[[re.Match[str]], str]:
    """A replacement that inserts ``value`` (called first when it is a function: a value
    worked out only where the macro is)."""
    return put(ctx, lambda _m: js_str(value() if callable(value) else value))
