"""The one file-name sanitizer: every name a user or a card gives that becomes a file name
(a chat, a character key, a persona, a lorebook, a preset) goes through `sanitize_file_name`.

The rules are SillyTavern's (its `sanitize-filename`): path separators, the punctuation
Windows refuses (`?<>:*|"`) and control characters are removed, trailing dots and spaces are
cut (Windows drops them, so "Anna." and "Anna" would be one file there), a Windows device name
("con", "lpt1.txt") is made harmless and the name is kept under the 255-byte limit. Two rules
go further than SillyTavern: leading dots are cut too, since a name starting with "." is a
hidden file that Tavern's listings skip (and `.<name>.<random>.tmp` is the atomic writer's
temporary file), and DEL (\\x7f) counts as a control character.

A sanitizer loses information, so two names can map to one file ("Anna" and "Anna."): a store
that keeps one file per name must look for a free name (`free_file_name`) rather than trust the
sanitized one to be unique.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable

_UNSAFE = re.compile(r'[/\\?<>:*|"\x00-\x1f\x7f-\x9f]')
_RESERVED = re.compile(r"^(con|prn|aux|nul|com\d|lpt\d)(\..*)?$", re.IGNORECASE)
# Cut from both ends: leading dots hide a file, trailing dots and spaces vanish on Windows.
_EDGES = re.compile(r"^[\s.]+|[\s.]+$")

DEFAULT_MAX_BYTES = 200
"""Room under the common 255-byte limit for " - <date>", " (2)", ".jsonl" and sidecar suffixes."""


def sanitize_file_name(
    name: str, fallback: str = "chat", *, max_bytes: int = DEFAULT_MAX_BYTES, replacement: str = ""
) -> str:
    """`name` made safe as one file name (no folder part, never hidden) on every OS.

    Returns `fallback` when nothing usable is left ("", "...", "///"); pass "" to detect that.
    `replacement` stands for each unsafe character (SillyTavern's export names use "_").
    """
    cleaned = unicodedata.normalize("NFC", name)
    cleaned = cleaned.encode("utf-8", "ignore").decode("utf-8")  # drops lone surrogates
    cleaned = _EDGES.sub("", _UNSAFE.sub(replacement, cleaned))
    encoded = cleaned.encode("utf-8")
    if len(encoded) > max_bytes:
        cleaned = _EDGES.sub("", encoded[:max_bytes].decode("utf-8", errors="ignore"))
    if _RESERVED.match(cleaned):
        # A prefix rather than the fallback: a character called "Con" keeps its name.
        cleaned = "_" + cleaned
    return cleaned or fallback


def is_clean_file_name(name: str) -> bool:
    """True when `name` is already a file name `sanitize_file_name` leaves as it is: for a
    caller that refuses a name (a new lorebook) instead of changing it behind the user's back."""
    return bool(name) and sanitize_file_name(name, "") == name


def free_file_name(stem: str, suffix: str, taken: Callable[[str], bool]) -> str:
    """The first of `stem+suffix`, `stem (2)+suffix`, ... for which `taken(name)` is False."""
    n = 1
    while True:
        name = f"{stem}{suffix}" if n == 1 else f"{stem} ({n}){suffix}"
        if not taken(name):
            return name
        n += 1


__all__ = ["DEFAULT_MAX_BYTES", "free_file_name", "is_clean_file_name", "sanitize_file_name"]
