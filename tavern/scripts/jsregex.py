"""A script's `findRegex` read as SillyTavern reads it, compiled for the `regex` package.

SillyTavern builds the pattern with `regexFromString` (public/scripts/utils.js) and runs it on
the browser's JavaScript engine. Reading the string:
- `/pattern/flags` is split at the last `/`; the letters right after it are the flags and
  anything after those is ignored (`/a/g junk` is `/a/g`). The shape test stops at the first
  line break, so only the first line of a string counts (a pattern must write `\n`).
- A string without the slashes is itself the pattern, with no flags: a regex (not escaped),
  case-sensitive, replacing the first match only.
- Flags must be distinct letters from `gmixXsuUAJ`; anything else (`y`, `d`, `v`, `G`, `gg`)
  makes SillyTavern take the whole string, slashes and all, as the pattern. `x X U A J` pass
  that test but JavaScript refuses them, so such a script never runs.
- `g` replaces every match (without it only the first), `i` ignores case, `m` makes `^`/`$`
  match at line breaks, `s` lets `.` match them, `u` allows `\\u{...}` and `\\p{...}`.

JavaScript syntax that the `regex` package reads differently is rewritten (`_Translator`):
`\\d \\w \\b` are ASCII-only as in JavaScript; `.`, `^`, `$` and `\\s` use JavaScript's line
breaks and spaces; `[^]` and `[]`; a `{` that is no quantifier is a literal (`regex` would read
`{e<=1}` as fuzzy matching); `\\k<name>`; identity escapes such as `\\e` or `\\A` are the letter;
legacy octal escapes. Left as `regex` has them: `\\D \\W \\S` inside a class are Unicode there.

Bounds, because a script may come from any card: the pattern's length, each repeat count, and
its size with counts multiplied out (`regex` unrolls `{n}` when it compiles: `a{1000000}` is
hundreds of MB). Matching time is bounded by the caller (`timeout=`, see `tavern.scripts.regex`).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

# No type information ships with `regex`: its patterns are typed as what it returns (Any).
import regex

MAX_PATTERN_CHARS = 10_000
MAX_REPEAT = 100_000
MAX_EXPANSION = 10_000  # units once counts are multiplied out; `regex` costs ~260 bytes a unit

# regexFromString's shape test: JavaScript's `.` stops at these four line breaks.
_SHAPE = re.compile(r"(/?)([^\n\r\u2028\u2029]+)\1([A-Za-z]*)")
_CHECKED_FLAGS = frozenset("gmixXsuUAJ")
_REFUSED_FLAGS = frozenset("xXUAJ")  # pass SillyTavern's test, then `new RegExp` throws

_WORD = "A-Za-z0-9_"
_DIGIT = "0-9"
_SPACE = r"\t\n\v\f\r \xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
_LINE_END = r"\n\r\u2028\u2029"
_CLASS_ESCAPES = {
    "d": (_DIGIT, False),
    "D": (_DIGIT, True),
    "w": (_WORD, False),
    "W": (_WORD, True),
    "s": (_SPACE, False),
    "S": (_SPACE, True),
}
_BOUNDARY = f"(?:(?<=[{_WORD}])(?![{_WORD}])|(?<![{_WORD}])(?=[{_WORD}]))"
_NOT_BOUNDARY = f"(?:(?<=[{_WORD}])(?=[{_WORD}])|(?<![{_WORD}])(?![{_WORD}]))"
_SIMPLE_ESCAPES = frozenset("nrtfv")
_QUANTIFIER = re.compile(r"\{([0-9]+)(?:(,)([0-9]*))?\}")
_HEX2 = re.compile(r"[0-9A-Fa-f]{2}")
_HEX4 = re.compile(r"[0-9A-Fa-f]{4}")
_BRACED_HEX = re.compile(r"\{([0-9A-Fa-f]+)\}")
_GROUP_PREFIXES = ("(?:", "(?=", "(?!", "(?<=", "(?<!")
_NAMED_GROUP = re.compile(r"\(\?<([^>=!][^>]*)>")


class PatternError(ValueError):
    """A findRegex that SillyTavern would not run, or one over Tavern's bounds."""


@dataclass(frozen=True)
class FindRegex:
    """A compiled findRegex, or why there is none (`error`, one line)."""

    pattern: regex.Pattern[str] | None
    replace_all: bool
    error: str | None = None


def split_regex_string(text: str) -> tuple[str, str] | None:
    """(pattern, flags) as regexFromString reads `text`; None where it finds no pattern."""
    found = _SHAPE.search(text)
    if found is None:
        return None
    body, flags = found.group(2), found.group(3)
    if flags and (len(set(flags)) != len(flags) or not set(flags) <= _CHECKED_FLAGS):
        return text, ""  # SillyTavern: `RegExp(input)`, the whole string is the pattern
    return body, flags


@functools.lru_cache(maxsize=64)
def compile_find_regex(text: str) -> FindRegex:
    """Compile a findRegex (macros already substituted). Cached: scripts run on every message."""
    if len(text) > MAX_PATTERN_CHARS:
        return FindRegex(None, False, f"the pattern is {len(text)} characters (limit {MAX_PATTERN_CHARS})")
    parts = split_regex_string(text)
    if parts is None:
        return FindRegex(None, False, "the pattern is empty")
    body, flags = parts
    refused = sorted(set(flags) & _REFUSED_FLAGS)
    if refused:
        return FindRegex(None, False, f"'{refused[0]}' is not a JavaScript regex flag")
    try:
        translated = _Translator(body, flags).run()
        options = regex.V0 | (regex.IGNORECASE if "i" in flags else 0)
        # Our own cache bounds how many compiled patterns stay alive; `regex`'s would add 500.
        compiled = regex.compile(translated, options, cache_pattern=False)
    except PatternError as err:
        return FindRegex(None, False, str(err))
    except (regex.error, ValueError, OverflowError, RecursionError, MemoryError) as err:
        return FindRegex(None, False, f"the pattern does not compile ({_one_line(str(err))})")
    return FindRegex(compiled, "g" in flags)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _count_groups(body: str) -> tuple[int, bool]:
    """Capture groups in a JavaScript pattern, and whether any is named (for `\\k` and `\\1`)."""
    count, named, i, in_class = 0, False, 0, False
    while i < len(body):
        ch = body[i]
        if ch == "\\":
            i += 2
            continue
        if in_class:
            in_class = ch != "]"
        elif ch == "[":
            in_class = True
            if body.startswith("]", i + 1) or body.startswith("^]", i + 1):
                in_class = False  # `[]` and `[^]`: JavaScript closes at the first `]`
                i += 1 if body[i + 1] == "]" else 2
        elif ch == "(" and not body.startswith("(?", i):
            count += 1
        elif ch == "(" and _NAMED_GROUP.match(body, i):
            count, named = count + 1, True
        i += 1
    return count, named


class _Translator:
    """One pass over a JavaScript pattern, writing the `regex` equivalent and sizing it."""

    def __init__(self, body: str, flags: str) -> None:
        self.src = body
        self.i = 0
        self.out: list[str] = []
        self.unicode = "u" in flags
        self.multiline = "m" in flags
        self.dotall = "s" in flags
        self.groups, self.named = _count_groups(body)
        # One frame per open group: [size so far, size of its last atom] (see `_repeat`).
        self.frames: list[list[int]] = [[0, 0]]

    def run(self) -> str:
        src = self.src
        while self.i < len(src):
            ch = src[self.i]
            if ch == "\\":
                self._escape()
            elif ch == "[":
                self._class()
            elif ch == "(":
                self._open()
            elif ch == ")":
                self._close()
            elif ch == "{":
                self._brace()
            elif ch in "*+?|":
                self._emit(ch, 0)
            elif ch == ".":
                self._emit(r"[\s\S]" if self.dotall else f"[^{_LINE_END}]")
            elif ch == "^":
                self._emit(f"(?:^|(?<=[{_LINE_END}]))" if self.multiline else "^", 0)
            elif ch == "$":
                self._emit(f"(?=[{_LINE_END}]|\\Z)" if self.multiline else r"\Z", 0)
            else:
                self._emit(ch)
        return "".join(self.out)

    def _emit(self, text: str, size: int = 1, width: int = 1) -> None:
        self.out.append(text)
        self.i += width
        if size:
            frame = self.frames[-1]
            frame[0] += size
            frame[1] = size
            self._check(frame[0])

    def _check(self, size: int) -> None:
        if size > MAX_EXPANSION:
            raise PatternError(
                f"the pattern repeats too much (over {MAX_EXPANSION} units with its counts multiplied out)"
            )

    def _brace(self) -> None:
        found = _QUANTIFIER.match(self.src, self.i)
        if found is None:
            self._emit(r"\{")  # a literal in JavaScript; `regex` could read fuzzy matching
            return
        low = _count(found.group(1))
        high = _count(found.group(3)) if found.group(3) else low
        if max(low, high) > MAX_REPEAT:
            raise PatternError(f"the repeat count {found.group(0)} is over {MAX_REPEAT}")
        frame = self.frames[-1]
        times = max(low, 1)  # `{0,m}` keeps the one copy already counted
        frame[0] += frame[1] * (times - 1)
        frame[1] *= times
        self._check(frame[0])
        self._emit(found.group(0), 0, len(found.group(0)))

    def _open(self) -> None:
        src, i = self.src, self.i
        self.frames.append([0, 0])
        named = _NAMED_GROUP.match(src, i)
        if named:
            self.out.append(named.group(0))
            self.i = named.end()
            return
        prefix = next((p for p in _GROUP_PREFIXES if src.startswith(p, i)), "(")
        self.out.append(prefix)
        self.i += len(prefix)

    def _close(self) -> None:
        if len(self.frames) > 1:
            inner = self.frames.pop()[0]
            self.out.append(")")
            self.i += 1
            # The whole group is the atom a quantifier after it repeats.
            frame = self.frames[-1]
            frame[0] += max(inner, 1)
            frame[1] = max(inner, 1)
            self._check(frame[0])
        else:
            self._emit(")", 0)  # unbalanced: `regex` refuses it, as JavaScript does

    def _escape(self) -> None:
        src, i = self.src, self.i
        if i + 1 >= len(src):
            raise PatternError("the pattern ends with a lone backslash")
        ch = src[i + 1]
        if ch == "b":
            self._emit(_BOUNDARY, 1, 2)
        elif ch == "B":
            self._emit(_NOT_BOUNDARY, 1, 2)
        elif ch in _CLASS_ESCAPES:
            chars, negated = _CLASS_ESCAPES[ch]
            self._emit(f"[{'^' if negated else ''}{chars}]", 1, 2)
        elif ch in "0123456789":
            self._digits()
        elif ch == "k" and self.named and src.startswith("<", i + 2):
            close = src.find(">", i + 3)
            if close < 0:
                raise PatternError("a \\k<name> backreference is not closed")
            self._emit(f"(?P={src[i + 3 : close]})", 1, close + 1 - i)
        else:
            text, width = _char_escape(src, i, self.unicode, in_class=False)
            self._emit(text, 1, width)

    def _digits(self) -> None:
        """`\\N`: a backreference when N names a group (JavaScript reads all the digits), else
        a legacy octal escape, or the digit itself for `\\8` and `\\9`."""
        src, i = self.src, self.i
        j = i + 1
        while j < len(src) and src[j] in "0123456789":
            j += 1
        digits = src[i + 1 : j]
        if digits[0] != "0" and len(digits) <= 6 and int(digits) <= self.groups:
            self._emit(f"(?:\\{int(digits)})", 1, j - i)
            return
        text, width = _octal(src, i)
        self._emit(text, 1, width)

    def _class(self) -> None:
        src, i = self.src, self.i
        if src.startswith("[^]", i):
            self._emit(r"[\s\S]", 1, 3)
            return
        if src.startswith("[]", i):
            self._emit("(?!)", 1, 2)
            return
        negated = src.startswith("[^", i)
        j = i + (2 if negated else 1)
        items: list[str] = []
        complements: list[str] = []
        while True:
            if j >= len(src):
                raise PatternError("a character class [ is not closed")
            ch = src[j]
            if ch == "]":
                break
            if ch == "\\":
                j = self._class_escape(j, items, complements)
                continue
            items.append(r"\[" if ch == "[" else ch)
            j += 1
        self._emit(_build_class(negated, "".join(items), complements), 1, j + 1 - i)

    def _class_escape(self, j: int, items: list[str], complements: list[str]) -> int:
        src = self.src
        if j + 1 >= len(src):
            raise PatternError("the pattern ends with a lone backslash")
        ch = src[j + 1]
        if ch in _CLASS_ESCAPES:
            chars, negated = _CLASS_ESCAPES[ch]
            (complements if negated else items).append(chars)
            return j + 2
        if ch == "b":
            items.append(r"\x08")  # backspace inside a class, in both languages
            return j + 2
        if ch in "0123456789":
            text, width = _octal(src, j)
            items.append(text)
            return j + width
        text, width = _char_escape(src, j, self.unicode, in_class=True)
        items.append(text)
        return j + width


def _count(digits: str) -> int:
    return int(digits) if len(digits) <= 9 else MAX_REPEAT + 1


def _build_class(negated: bool, items: str, complements: list[str]) -> str:
    """A class; `[\\W...]`-style complements become an alternation (exact, unlike `regex`)."""
    if not complements:
        return f"[{'^' if negated else ''}{items}]"
    parts = ([f"[{items}]"] if items else []) + [f"[^{chars}]" for chars in complements]
    union = "|".join(parts)
    return f"(?:(?!{union})[\\s\\S])" if negated else f"(?:{union})"


def _literal(ch: str) -> str:
    return ch if ch.isalnum() else regex.escape(ch)


def _octal(src: str, i: int) -> tuple[str, int]:
    """JavaScript's legacy `\\NNN` (up to 0o377) at `i`; `\\8` and `\\9` are the digits."""
    if src[i + 1] in "89":
        return src[i + 1], 2
    j = i + 1
    limit = 3 if src[j] in "0123" else 2
    while j < len(src) and j - (i + 1) < limit and src[j] in "01234567":
        j += 1
    return f"\\x{int(src[i + 1 : j], 8):02x}", j - i


def _char_escape(src: str, i: int, unicode: bool, *, in_class: bool) -> tuple[str, int]:
    """A backslash escape that stands for characters: (its `regex` text, chars consumed)."""
    ch = src[i + 1]
    if ch in _SIMPLE_ESCAPES:
        return "\\" + ch, 2
    if ch == "c":
        letter = src[i + 2 : i + 3]
        if letter.isascii() and (letter.isalpha() or (in_class and (letter.isdigit() or letter == "_"))):
            return f"\\x{ord(letter) % 32:02x}", 3
        return r"\\", 1  # JavaScript: the backslash itself, then `c` is read as a letter
    if ch == "x" and _HEX2.match(src, i + 2):
        return src[i : i + 4], 4
    if ch == "u":
        return _unicode_escape(src, i, unicode)
    if ch in "pP" and unicode and src.startswith("{", i + 2):
        close = src.find("}", i + 3)
        if close < 0:
            raise PatternError("a \\p{...} property is not closed")
        return src[i : close + 1], close + 1 - i
    if ch == "-":
        return r"\-", 2
    # Any other escape is the character itself (JavaScript's identity escapes: `\e` is "e",
    # `\A` is "A"), where `regex` would read some of them as anchors or refuse them.
    return _literal(ch), 2


def _unicode_escape(src: str, i: int, unicode: bool) -> tuple[str, int]:
    if _HEX4.match(src, i + 2):
        high = int(src[i + 2 : i + 6], 16)
        # A surrogate pair written as two escapes is one character in a Python string.
        if 0xD800 <= high <= 0xDBFF and src.startswith("\\u", i + 6) and _HEX4.match(src, i + 8):
            low = int(src[i + 8 : i + 12], 16)
            if 0xDC00 <= low <= 0xDFFF:
                point = 0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00)
                return f"\\U{point:08x}", 12
        return src[i : i + 6], 6
    braced = _BRACED_HEX.match(src, i + 2) if unicode else None
    if braced:
        point = int(braced.group(1), 16) if len(braced.group(1)) <= 8 else 0x110000
        if point > 0x10FFFF:
            raise PatternError(f"\\u{{{braced.group(1)}}} is beyond Unicode")
        return f"\\U{point:08x}", 2 + len(braced.group(0))
    return "u", 2
