"""Terminal key sequences Textual's input parser does not name: Alt+Enter.

A terminal without the kitty keyboard protocol (xterm, tmux, most SSH sessions) sends Alt+Enter
as ESC CR. Textual 8.2.8 knows no such sequence: its parser kept waiting for more of it,
appended the keys typed next, and after the escape delay reissued the lot with the Alt
dropped, so Alt+Enter sent the message and the keys typed just after it were lost in the
send. `name_alt_enter()` adds ESC CR to the parser's table as the key `alt+enter`, which the
composer reads as a new line (terminals with the kitty protocol already report it so).

The table is Textual's private name (the version is pinned exactly in pyproject);
tests/tui/test_drafts_and_keys.py feeds the raw bytes through Textual's parser and fails if a
new Textual stops reading it.
"""

from __future__ import annotations

from enum import StrEnum

ALT_ENTER = "\x1b\r"


class _TavernKeys(StrEnum):
    # The parser turns a table entry's keys into `events.Key(key.value, ...)`.
    ALT_ENTER = "alt+enter"


def name_alt_enter() -> None:
    """Idempotent; in effect for the whole process (every app in it reads keys the same way)."""
    from textual import _ansi_sequences

    table = _ansi_sequences.ANSI_SEQUENCES_KEYS
    if isinstance(table, dict) and ALT_ENTER not in table:
        table[ALT_ENTER] = (_TavernKeys.ALT_ENTER,)
