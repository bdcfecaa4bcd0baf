"""How one lorebook key is read and matched: plain text or a `/pattern/flags` regex.

Callers: `tavern.lore.index` (compiles every key once per lorebook), `tavern.lore.matching`
(matches them each turn), and `split_keys` for the file readers and the TUI's lore editor
(comma-separated key strings, split without breaking a regex).

Rules (SillyTavern's `matchKeys` and `parseRegexFromString`, with Tavern's differences):
- A key written `/pattern/flags` (flags from `gimsuy`, the pattern without an unescaped `/`)
  is a regex; it ignores the case and whole-word settings. `i`, `m`, `s` mean what they mean in
  JavaScript, `y` anchors at the start, `g` and `u` change nothing for a yes/no test.
- Regexes run on the `regex` package with a timeout, so a catastrophic pattern cannot hang a
  turn (SillyTavern's browser would freeze). A pattern that does not compile marks its entry
  broken; SillyTavern silently matches such a key as literal text instead, which in practice
  never matches, so the entries that activate are the same.
- The timeout covers matching only, and `regex` unrolls repeat counts when it compiles
  (`a{1000000}` takes 270 MB, `(?:a{60000}){60000}` tens of GB). So a pattern is measured
  before it is compiled (`pattern_size`): over `MAX_PATTERN_CHARS`, a count over
  `MAX_REPEAT`, or a size with its counts multiplied out over `MAX_EXPANSION`, and it is
  refused like a pattern that does not compile. All regex keys alive at once share
  `MAX_LIVE_EXPANSION`, so many big keys cannot add up either.
- A `{` that does not start a JavaScript quantifier (`{n}`, `{n,}`, `{n,m}`) is a literal, as in
  JavaScript; `regex` would read `{e<=1}` as fuzzy matching and `{,5}` as a count.
- Character classes such as `\\w` are Unicode in Tavern (ASCII in JavaScript without `u`).
- A plain key is lower-cased with the text unless case-sensitive. With whole-word matching, a
  key containing whitespace is a plain substring test, and any other key must be bounded by
  the start/end of the text or a non-word character. **Tavern's word characters are Unicode**
  (letters and digits of every script, `_`): SillyTavern's boundary is ASCII-only, so there a
  Cyrillic key "кот" matches inside "который"; in Tavern it does not.
"""

from __future__ import annotations

import re
import threading
import weakref
from dataclasses import dataclass

# No type information ships with `regex`: its patterns are typed as what it returns (Any).
import regex

# JavaScript's shape test for a regex key, and its "unescaped delimiter inside" rejection.
_REGEX_SHAPE = re.compile(r"^/([\w\W]+?)/([gimsuy]*)$")
_UNESCAPED_SLASH = re.compile(r"(^|[^\\])/")

# JavaScript's quantifier braces: `{n}`, `{n,}`, `{n,m}`; any other `{` is a literal there.
_QUANTIFIER = re.compile(r"\{([0-9]+)(,([0-9]*))?\}")
# Escapes whose braces belong to the escape in `regex` (`\p{L}`, `\N{DASH}`, `\x{41}`).
_BRACED_ESCAPES = frozenset("pPNxu")
# A group's opening (`(?:`, `(?=`, `(?<=`, `(?<name>`...): not atoms of the pattern.
_GROUP_OPEN = re.compile(r"\((?:\?(?:[:=!]|<[=!]|P?<[^>]*>))?")

# Bounds checked before a pattern is compiled. Real lorebook keys are a few dozen characters
# with counts like {2,5}; `regex` costs about 260 bytes of memory per unrolled unit.
MAX_PATTERN_CHARS = 4096
MAX_REPEAT = 100_000  # any single count, minimum or maximum
MAX_EXPANSION = 10_000  # the pattern's size with its minimum counts multiplied out (~2.6 MB)
MAX_LIVE_EXPANSION = 1_000_000  # all compiled regex keys alive at once (~260 MB)

WORD_RUN = re.compile(r"\w+")
_WORD_ONLY = re.compile(r"\w+")

# Kinds of compiled keys.
NEVER = 0  # empty key: never matches
ALWAYS = 1  # whitespace-only key: SillyTavern trims it to "" and "" is found in any text
WORD = 2  # all word characters, whole-word mode: an exact word of the text
SUBSTR = 3  # plain substring test
BOUNDARY = 4  # whole-word key with non-word characters: word boundaries checked by a regex
REGEX = 5  # `/pattern/flags`
INVALID = 6  # `/pattern/flags` that does not compile


@dataclass(frozen=True)
class RegexKey:
    """A parsed `/pattern/flags` key; `error` is set when the pattern does not compile."""

    source: str
    pattern: regex.Pattern[str] | None  # None when `error`
    anchored: bool
    error: str | None


def parse_regex_key(key: str) -> RegexKey | None:
    """Parse a `/pattern/flags` key; None when `key` is plain text (SillyTavern's rules)."""
    shape = _REGEX_SHAPE.match(key)
    if not shape:
        return None
    body, flags = shape.group(1), shape.group(2)
    if _UNESCAPED_SLASH.search(body):
        return None
    body = body.replace("\\/", "/", 1)  # JavaScript's String.replace: the first one only
    if len(set(flags)) != len(flags):
        return RegexKey(key, None, False, f"repeated flag in {flags!r}")
    options = regex.V0
    if "i" in flags:
        options |= regex.IGNORECASE
    if "m" in flags:
        options |= regex.MULTILINE
    if "s" in flags:
        options |= regex.DOTALL
    try:
        size = pattern_size(body)
    except PatternTooBig as err:
        return RegexKey(key, None, False, str(err))
    if not _LIVE.reserve(size):
        return RegexKey(key, None, False, f"regex keys in memory are over {MAX_LIVE_EXPANSION} units")
    try:
        compiled = regex.compile(_from_javascript(body, multiline="m" in flags), options)
    except (regex.error, ValueError, OverflowError, RecursionError, MemoryError) as err:
        _LIVE.release(size)
        return RegexKey(key, None, False, _one_line(str(err)) or type(err).__name__)
    # The reservation lasts as long as the compiled pattern (`regex` caches and shares them).
    weakref.finalize(compiled, _LIVE.release, size)
    return RegexKey(key, compiled, "y" in flags, None)


class PatternTooBig(ValueError):
    """A pattern refused before compiling: it would take too much memory to compile."""


def pattern_size(pattern: str) -> int:
    """The size of a JavaScript regex body with its repeat counts multiplied out.

    `regex` unrolls the minimum count of a repeat when it compiles, so this is what its
    memory grows with: `(?:ab{3}){1000}` is 4,000. Raises PatternTooBig past the bounds; the
    running sums are checked as they grow, so the numbers never get big.
    """
    if len(pattern) > MAX_PATTERN_CHARS:
        raise PatternTooBig(f"pattern is {len(pattern)} characters (limit {MAX_PATTERN_CHARS})")
    # One frame per open group: [size of the group so far, size of its last atom].
    frames: list[list[int]] = [[0, 0]]
    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        frame = frames[-1]
        if ch == "\\":
            i = _skip_escape(pattern, i)
            _atom(frame, 1)
            continue
        if ch == "[":
            i = _skip_class(pattern, i)
            _atom(frame, 1)
            continue
        if ch == "(":
            frames.append([0, 0])
            opening = _GROUP_OPEN.match(pattern, i)
            i = opening.end() if opening else i + 1
            continue
        if ch == ")" and len(frames) > 1:
            inner = frames.pop()[0]
            _atom(frames[-1], max(inner, 1))
        elif ch == "{" and (m := _QUANTIFIER.match(pattern, i)):
            _repeat(frame, m)
            i = m.end()
            continue
        elif ch not in "|?*+":
            _atom(frame, 1)
        i += 1
    while len(frames) > 1:  # unclosed groups: `regex` will refuse the pattern anyway
        inner = frames.pop()[0]
        _atom(frames[-1], max(inner, 1))
    return frames[0][0]


def _atom(frame: list[int], size: int) -> None:
    frame[0] += size
    frame[1] = size
    _check_expansion(frame[0])


def _repeat(frame: list[int], m: re.Match[str]) -> None:
    low = int(m.group(1)) if len(m.group(1)) <= 9 else MAX_REPEAT + 1
    high_text = m.group(3) or "0"  # `{n}` and `{n,}`: the minimum is all there is to check
    high = int(high_text) if len(high_text) <= 9 else MAX_REPEAT + 1
    if max(low, high) > MAX_REPEAT:
        raise PatternTooBig(f"repeat count {m.group(0)} is over {MAX_REPEAT}")
    # The last atom is counted once already; `{0,m}` keeps that one copy.
    times = max(low, 1)
    frame[0] += frame[1] * (times - 1)
    frame[1] *= times
    _check_expansion(frame[0])


def _check_expansion(size: int) -> None:
    if size > MAX_EXPANSION:
        raise PatternTooBig(
            f"pattern repeats too much: over {MAX_EXPANSION} units once its counts are multiplied out"
        )


def _skip_escape(pattern: str, i: int) -> int:
    """Index just past the escape at `i` (`\\p{...}` and the like with their braces)."""
    j = i + 2
    if i + 1 < len(pattern) and pattern[i + 1] in _BRACED_ESCAPES and pattern.startswith("{", j):
        close = pattern.find("}", j)
        return len(pattern) if close < 0 else close + 1
    return min(j, len(pattern))


def _skip_class(pattern: str, i: int) -> int:
    """Index just past the character class at `i` (JavaScript: `]` first closes it, `[]`)."""
    j = i + 1
    if pattern.startswith("^", j):
        j += 1
    while j < len(pattern):
        if pattern[j] == "\\":
            j += 2
            continue
        if pattern[j] == "]":
            return j + 1
        j += 1
    return len(pattern)


class _LiveBudget:
    """Units (see `pattern_size`) reserved by the compiled regex keys still alive."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._lock = threading.Lock()

    def reserve(self, size: int) -> bool:
        with self._lock:
            if self.used + size > self.limit:
                return False
            self.used += size
            return True

    def release(self, size: int) -> None:
        with self._lock:
            self.used = max(self.used - size, 0)


_LIVE = _LiveBudget(MAX_LIVE_EXPANSION)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def short_key(raw: str, limit: int = 80) -> str:
    """A key as messages show it: on one line, long ones cut."""
    flat = _one_line(raw) if raw.strip() else raw
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _from_javascript(pattern: str, multiline: bool) -> str:
    """Rewrite the JavaScript-only bits of a pattern: `[^]`, `[]`, and `$` (end of input)."""
    out: list[str] = []
    i = 0
    in_class = False
    n = len(pattern)
    while i < n:
        ch = pattern[i]
        if ch == "\\" and i + 1 < n:
            end = _skip_escape(pattern, i)
            out.append(pattern[i:end])
            i = end
            continue
        if in_class:
            if ch == "]":
                in_class = False
            out.append(ch)
            i += 1
            continue
        if ch == "[":
            if pattern.startswith("[^]", i):
                out.append(r"[\s\S]")
                i += 3
                continue
            if pattern.startswith("[]", i):
                out.append("(?!)")
                i += 2
                continue
            in_class = True
            out.append(ch)
            # A `]` right after `[` or `[^` is literal in Python but closes the class in
            # JavaScript; the two cases above cover JavaScript's meanings.
            i += 1
            continue
        if ch == "{" and not _QUANTIFIER.match(pattern, i):
            out.append(r"\{")  # a literal in JavaScript
            i += 1
            continue
        if ch == "$" and not multiline:
            # JavaScript's `$` is the end of the input; Python's also matches before a final \n.
            out.append(r"\Z")
            i += 1
            continue
        out.append(ch)
        i += 1
    return "".join(out)


class Key:
    """One key compiled for matching. `text` is the (lower-cased unless case-sensitive) key.

    `pattern` is a REGEX key's compiled `/pattern/`; `rx` is the stdlib boundary test of a
    BOUNDARY key (and, made when first needed, the one that locates a WORD key for messages).
    """

    __slots__ = ("anchored", "case", "dynamic", "error", "kind", "pattern", "raw", "runs", "rx", "text")

    def __init__(self, raw: str, case_sensitive: bool, whole_words: bool) -> None:
        self.raw = raw
        # `{{macro}}` keys are substituted before matching when the caller gives a substituter.
        self.dynamic = "{{" in raw
        self.case = case_sensitive
        self.pattern: regex.Pattern[str] | None = None
        self.rx: re.Pattern[str] | None = None
        self.error: str | None = None
        self.anchored = False
        self.runs: list[tuple[str, bool, bool]] = []
        stripped = raw.strip()
        if not raw:
            self.kind, self.text = NEVER, ""
            return
        if not stripped:
            self.kind, self.text = ALWAYS, ""
            return
        parsed = parse_regex_key(stripped)
        if parsed is not None:
            self.text = stripped
            if parsed.error is not None:
                self.kind, self.error = INVALID, parsed.error
            else:
                self.kind, self.pattern, self.anchored = REGEX, parsed.pattern, parsed.anchored
            return
        text = stripped if case_sensitive else stripped.lower()
        self.text = text
        if not whole_words or len(text.split()) > 1:
            self.kind = SUBSTR
        elif _WORD_ONLY.fullmatch(text):
            self.kind = WORD
        else:
            self.kind = BOUNDARY
            self.rx = re.compile(r"(?<!\w)" + re.escape(text) + r"(?!\w)")
        # Word runs of the key and whether each is closed on the left/right inside the key
        # (or by the whole-word boundary): the scan's index uses them to find candidates.
        edge_closed = self.kind == BOUNDARY
        for m in WORD_RUN.finditer(text):
            left = m.start() > 0 or edge_closed
            right = m.end() < len(text) or edge_closed
            self.runs.append((m.group(), left, right))

    def __repr__(self) -> str:
        return f"Key({self.raw!r})"


def split_keys(text: str) -> list[str]:
    """Split a comma-separated key string the way SillyTavern's key editor does.

    A `/regex/flags` key may contain commas; a slash opens a regex until the next unescaped
    slash. Empty pieces are dropped, pieces are trimmed.
    """
    keys: list[str] = []
    current = text
    inside = closed = False
    i = 0
    while i < len(current):
        ch = current[i]
        if ch == "/" and (i == 0 or current[i - 1] != "\\"):
            if not inside:
                inside = True
            elif not closed:
                closed = True
        if ch == ",":
            token = current[:i].strip()
            if inside and not closed:
                i += 1
                continue
            if token:
                if token.startswith("/") and not _looks_like_regex(token):
                    keys.extend(x.strip() for x in token.split(",") if x.strip())
                else:
                    keys.append(token)
            current = current[i + 1 :]
            inside = closed = False
            i = 0
            continue
        i += 1
    rest = current.strip()
    if rest:
        keys.append(rest)
    return keys


def _looks_like_regex(token: str) -> bool:
    parsed = parse_regex_key(token)
    return parsed is not None and parsed.error is None
