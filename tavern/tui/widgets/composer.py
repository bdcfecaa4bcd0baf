"""The chat composer: a multi-line text box where Enter sends.

Enter posts `Composer.Submitted`; Shift+Enter (terminals that report it), Ctrl+J and Alt+Enter
insert a newline (a terminal sends Alt+Enter as ESC CR: tavern/tui/keys.py names it). Up on the first line posts `Composer.LeaveUp`, so the chat screen can move
the focus onto the messages (to edit, delete or copy one). The box grows with its text up to
a few lines. Ctrl+U and Ctrl+D belong to the chat screen (impersonate, delete): they are
priority bindings there, so this box's own line-editing uses of them never swallow them.

When the model writes into the box (impersonation), `take_over` and `hand_back` around it make
the whole replacement one undo step: Ctrl+Z gives back what was typed before.
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
        self._before_takeover: str | None = None

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

    def take_over(self) -> None:
        """The model is about to replace the text: remember it for `hand_back`."""
        self._before_takeover = self.text

    def hand_back(self) -> None:
        """The model is done: its text replaces the one `take_over` kept in one undoable edit
        (the streamed pieces and the clearing before them leave no undo steps of their own).
        When it wrote nothing (it failed, or was stopped at once) the kept text comes back."""
        before, self._before_takeover = self._before_takeover, None
        after = self.text
        if not before or before == after:
            return
        self.load_text(before)  # also forgets the streamed pieces' undo steps
        if after.strip():
            self.replace(after, (0, 0), self.document.end)
        self.move_cursor(self.document.end)

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
