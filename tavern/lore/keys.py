"""How one lorebook key is read and matched: plain text or a `/pattern/flags` regex.

Callers: `tavern.lore.scan` (compiles every key once per lorebook and matches them each turn)
and `tavern.lore.convert` (splits comma-separated key strings without breaking a regex).

Rules (SillyTavern's `matchKeys` and `parseRegexFromString`, with Tavern's differences):
- A key written `/pattern/flags` (flags from `gimsuy`, the pattern without an unescaped `/`)
  is a regex; it ignores the case and whole-word settings. `i`, `m`, `s` mean what they mean in
  JavaScript, `y` anchors at the start, `g` and `u` change nothing for a yes/no test.
- Regexes run on the `regex` package with a timeout, so a catastrophic pattern cannot hang a
  turn (SillyTavern's browser would freeze). A pattern that does not compile marks its entry
  broken; SillyTavern silently matches such a key as literal text instead, which in practice
  never matches, so the entries that activate are the same.
- Character classes such as `\\w` are Unicode in Tavern (ASCII in JavaScript without `u`).
- A plain key is lower-cased with the text unless case-sensitive. With whole-word matching, a
  key containing whitespace is a plain substring test, and any other key must be bounded by
  the start/end of the text or a non-word character. **Tavern's word characters are Unicode**
  (letters and digits of every script, `_`): SillyTavern's boundary is ASCII-only, so there a
  Cyrillic key "кот" matches inside "который"; in Tavern it does not.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import regex

# JavaScript's shape test for a regex key, and its "unescaped delimiter inside" rejection.
_REGEX_SHAPE = re.compile(r"^/([\w\W]+?)/([gimsuy]*)$")
_UNESCAPED_SLASH = re.compile(r"(^|[^\\])/")

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
    pattern: Any  # regex.Pattern, or None when `error`
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
        compiled = regex.compile(_from_javascript(body, multiline="m" in flags), options)
    except (regex.error, ValueError, OverflowError, RecursionError) as err:
        return RegexKey(key, None, False, str(err))
    return RegexKey(key, compiled, "y" in flags, None)


def _from_javascript(pattern: str, multiline: bool) -> str:
    """Rewrite the JavaScript-only bits of a pattern: `[^]`, `[]`, and `$` (end of input)."""
    out: list[str] = []
    i = 0
    in_class = False
    n = len(pattern)
    while i < n:
        ch = pattern[i]
        if ch == "\\" and i + 1 < n:
            out.append(pattern[i : i + 2])
            i += 2
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
        if ch == "$" and not multiline:
            # JavaScript's `$` is the end of the input; Python's also matches before a final \n.
            out.append(r"\Z")
            i += 1
            continue
        out.append(ch)
        i += 1
    return "".join(out)


class Key:
    """One key compiled for matching. `text` is the (lower-cased unless case-sensitive) key."""

    __slots__ = ("anchored", "case", "dynamic", "error", "kind", "raw", "runs", "rx", "text")

    def __init__(self, raw: str, case_sensitive: bool, whole_words: bool) -> None:
        self.raw = raw
        # `{{macro}}` keys are substituted before matching when the caller gives a substituter.
        self.dynamic = "{{" in raw
        self.case = case_sensitive
        self.rx: Any = None
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
                self.kind, self.rx, self.anchored = REGEX, parsed.pattern, parsed.anchored
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
