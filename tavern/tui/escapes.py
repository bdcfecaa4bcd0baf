"""The TUI's gate for terminal escapes: card and chat text is shown on screen, never run.

`guard_rich_text()` makes every Rich `Text` and Textual `Content` show control characters
instead of passing them to the terminal, widgets Tavern does not own included (option lists,
inputs, text areas, toasts). Both libraries already translate each string they are given
through a table that drops BEL, BS, VT, FF and CR; ESC, the other C0 controls, DEL, C1 and
bidi controls went to the terminal raw (an OSC 52 in a card's name wrote the clipboard). This
widens that same table with `tavern.textsafe`'s marks, so the marks are in the text before it
is measured and the layout stays right. CR is still dropped, as the libraries do: cards written
on Windows end every line with one.

The tables are the libraries' private names; tests/tui/test_terminal_escapes.py reads the bytes
the app writes and fails if a new Rich or Textual stops using them.
"""

from __future__ import annotations

from tavern.textsafe import CONTROL_MARKS


def guard_rich_text() -> None:
    """Idempotent; in effect for the whole process (every app in it renders the same way)."""
    from rich import control
    from textual import content

    marks = {cp: mark for cp, mark in CONTROL_MARKS.items() if cp != 0x0D}
    for module in (control, content):
        table = getattr(module, "_CONTROL_STRIP_TRANSLATE", None)
        if isinstance(table, dict):
            table.update(marks)
