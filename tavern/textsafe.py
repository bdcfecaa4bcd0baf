"""Text made safe for a terminal: control characters from cards, chats and servers shown, not run.

A card is somebody else's file. Its name, tags or greeting can carry terminal escapes: OSC 52
(`ESC ] 52 ; c ; <base64> BEL`) writes the user's clipboard, `ESC [ 2J` clears the screen, an
8-bit CSI (U+009B) does the same on terminals that read C1 controls in UTF-8, and a bidi
override (U+202E) makes the text on screen differ from the text in the file. Everything Tavern
prints for a person to read goes through `terminal_safe`; machine formats (`--json`, the
`.jsonl` export) stay exact and only escape what their own syntax can escape (`json_safe`).

What a user sees instead, so that nothing is silently lost from view:

- C0 controls other than newline and tab, and DEL: their Unicode control picture, one
  character for one (ESC -> "␛", BEL -> "␇", a lone CR -> "␍", DEL -> "␡"), as editors draw
  them. A CR just before a LF is dropped instead: on a terminal CRLF and LF look the same, and
  cards written on Windows would otherwise show "␍" at every line end.
- C1 controls (U+0080..U+009F), bidi embeddings, overrides and isolates (U+202A..U+202E,
  U+2066..U+2069), and lone surrogates (which cannot even be encoded to UTF-8): `<U+XXXX>`,
  as `less` shows characters it will not pass to the terminal. Unicode has no picture for these.

The CLI routes its stdout and stderr through `guard_output` (not the app: Textual draws the
screen itself, and tavern/tui/escapes.py gives its text the same marks); the store uses
`terminal_safe` for the `.txt` and `.md` exports. Standard library only: no UI, nothing heavy.
"""

from __future__ import annotations

import re
import sys
import threading
from collections.abc import Callable
from typing import TextIO

_KEPT = {0x09, 0x0A}  # tab and newline: layout, not commands


def _code_point_name(cp: int) -> str:
    return f"<U+{cp:04X}>"


def _build_table() -> dict[int, str]:
    table = {cp: chr(0x2400 + cp) for cp in range(0x20) if cp not in _KEPT}
    table[0x7F] = "\u2421"
    for cp in (*range(0x80, 0xA0), *range(0x202A, 0x202F), *range(0x2066, 0x206A)):
        table[cp] = _code_point_name(cp)
    return table


_TABLE = _build_table()
CONTROL_MARKS: dict[int, str] = dict(_TABLE)
"""Each character a terminal would act on, and the mark shown instead (for `str.translate`)."""

# JSON already escapes C0 controls (json.dumps writes \u001b); these it passes raw with
# ensure_ascii=False, and they can only occur inside JSON strings, where \uXXXX means the same.
_JSON_TABLE = {cp: f"\\u{cp:04x}" for cp in _TABLE if cp >= 0x7F}
# Lone surrogates (from a JSON "\ud800") are matched, not tabled: 2048 entries cost milliseconds
# to build on the app's first-frame path.
_SURROGATE = re.compile("[\ud800-\udfff]")


def terminal_safe(text: str) -> str:
    """`text` with every control character that a terminal would act on made visible.

    Each dangerous character is one code point, so text cut into pieces (a streamed reply, token
    by token) can be made safe piece by piece: an ESC split from its `[2J` is still caught."""
    text = text.replace("\r\n", "\n").translate(_TABLE)
    return _SURROGATE.sub(lambda m: _code_point_name(ord(m.group())), text)


def json_safe(dumped: str) -> str:
    """A `json.dumps(..., ensure_ascii=False)` result with DEL, C1, bidi controls and lone
    surrogates written as JSON escapes: the same JSON value, nothing raw for a terminal."""
    dumped = dumped.translate(_JSON_TABLE)
    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", dumped)


class SafeStream:
    """A text stream that writes `terminal_safe` text to the stream it wraps.

    A CR at the very end of a write is held back until the next one, so that a CRLF split
    across two writes (two streamed tokens) is still read as a line end."""

    def __init__(self, raw: TextIO) -> None:
        self._raw = raw
        self._pending = ""
        self._lock = threading.Lock()  # memory warnings may be printed from a worker thread

    def write(self, text: str) -> int:
        with self._lock:
            joined = self._pending + text
            self._pending = "\r" if joined.endswith("\r") else ""
            self._raw.write(terminal_safe(joined[: len(joined) - len(self._pending)]))
        return len(text)

    def flush(self) -> None:
        self._raw.flush()

    def finish(self) -> None:
        """Write a held-back CR (then it was a lone one) and flush."""
        with self._lock:
            pending, self._pending = self._pending, ""
        if pending:
            self._raw.write(terminal_safe(pending))
        self._raw.flush()

    def isatty(self) -> bool:
        return self._raw.isatty()

    def fileno(self) -> int:
        return self._raw.fileno()

    def __getattr__(self, name: str) -> object:
        return getattr(self._raw, name)  # encoding, errors, buffer...: those of the real stream


def guard_output() -> Callable[[], None]:
    """Route `sys.stdout` and `sys.stderr` through `SafeStream`, piped or not: output that goes
    to a file or a pipe usually reaches a terminal in the end (`cat`, `tee`, `less -R`), and the
    exact text is what `--json` and the `.jsonl` export are for. Returns the function that puts
    the real streams back."""
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = SafeStream(sys.stdout), SafeStream(sys.stderr)

    def restore() -> None:
        guarded = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = saved
        for stream in guarded:
            if isinstance(stream, SafeStream):
                try:
                    stream.finish()
                except (BrokenPipeError, ValueError):
                    pass  # the reader went away, or the stream was closed: nothing left to show

    return restore
