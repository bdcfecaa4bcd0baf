"""The chat composer: a multi-line text box where Enter sends.

Enter posts `Composer.Submitted`; Shift+Enter (terminals that report it), Ctrl+J and Alt+Enter
insert a newline. Up on the first line posts `Composer.LeaveUp`, so the chat screen can move
the focus onto the messages (to edit, delete or copy one). The box grows with its text up to
a few lines. Ctrl+U and Ctrl+D belong to the chat screen (impersonate, delete): they are
priority bindings there, so this box's own line-editing uses of them never swallow them.
"""

from __future__ import annotations

from textual import events
from textual.message import Message
from textual.widgets import TextArea

NEWLINE_KEYS = frozenset({"shift+enter", "ctrl+j", "alt+enter", "ctrl+enter"})


class Composer(TextArea):
    DEFAULT_CSS = """
    Composer { height: auto; min-height: 2; max-height: 9; }
    """

    class Submitted(Message):
        def __init__(self, composer: Composer, value: str) -> None:
            super().__init__()
            self.composer = composer
            self.value = value

        @property
        def control(self) -> Composer:
            return self.composer

    class LeaveUp(Message):
        """Up was pressed on the first line: the screen may focus the messages above."""

    def __init__(self, placeholder: str = "", id: str | None = None) -> None:
        super().__init__(
            "",
            id=id,
            soft_wrap=True,
            tab_behavior="focus",
            show_line_numbers=False,
            placeholder=placeholder,
            compact=True,
            highlight_cursor_line=False,
        )

    @property
    def value(self) -> str:
        return self.text

    @value.setter
    def value(self, text: str) -> None:
        self.load_text(text)
        self.move_cursor(self.document.end)

    def append(self, text: str) -> None:
        """Add text at the end (an impersonated message as it streams in)."""
        self.insert(text, self.document.end)

    async def _on_key(self, event: events.Key) -> None:
        if event.key == "enter":
            event.stop()
            event.prevent_default()
            self.post_message(self.Submitted(self, self.text))
            return
        if event.key in NEWLINE_KEYS:
            event.stop()
            event.prevent_default()
            self.insert("\n")
            return
        if event.key == "up" and self.cursor_location[0] == 0:
            event.stop()
            event.prevent_default()
            self.post_message(self.LeaveUp())
            return
        await super()._on_key(event)
