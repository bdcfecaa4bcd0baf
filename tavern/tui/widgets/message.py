"""One chat message on screen: a name line and the rendered text.

The text goes through `tavern.tui.render` (actions, speech, Markdown) into a Textual
`Content` whose styles name theme variables, so a theme change recolours every message. The
live reply is the same widget, re-rendered by the chat screen in batches (~every 50 ms),
never per token. The view can take the focus: the chat screen moves it with up/down to pick
a message to edit, delete, hide, branch from or copy.
"""

from __future__ import annotations

from textual.content import Content, Span
from textual.widgets import Static

from tavern.tui.render import render

STYLES = {
    "action": "italic $text-muted",
    "speech": "$text-warning",
    "bold": "bold",
    "code": "$text-accent on $boost",
    "code_block": "$text-accent",
    "fence": "$text-muted",
    "heading": "bold $text-primary",
    "quote": "italic $text-muted",
}


def render_content(text: str) -> Content:
    shown, spans = render(text)
    return Content(shown, spans=[Span(a, b, STYLES[kind]) for a, b, kind in spans])


class ChatMessageView(Static, can_focus=True):
    def __init__(
        self, name: str, text: str, is_user: bool, index: int, swipe: str = "", hidden: bool = False
    ) -> None:
        super().__init__(classes="user" if is_user else "char")
        self.speaker = name
        self.body = text
        self.index = index
        self.swipe = swipe
        self.hidden = hidden
        self.set_class(hidden, "hidden")

    def on_mount(self) -> None:
        self._refresh()

    def set_text(self, text: str, swipe: str | None = None) -> None:
        self.body = text
        if swipe is not None:
            self.swipe = swipe
        self._refresh()

    def set_hidden(self, hidden: bool) -> None:
        self.hidden = hidden
        self.set_class(hidden, "hidden")
        self._refresh()

    def append(self, delta: str) -> None:
        self.body += delta
        self._refresh()

    @property
    def shown_text(self) -> str:
        """The text as rendered (markers such as `*` removed): for tests and search."""
        return render(self.body)[0]

    def _refresh(self) -> None:
        head = Content.styled(self.speaker, "bold $text-primary" if not self.has_class("user") else "bold")
        if self.swipe:
            head += Content.styled(f"  {self.swipe}", "$text-muted")
        if self.hidden:
            head += Content.styled("  (hidden from the prompt)", "$text-muted")
        body = render_content(self.body) if self.body else Content.styled("…", "$text-muted")
        self.update(head + Content("\n") + body)
