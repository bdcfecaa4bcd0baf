"""One chat message on screen: a name line and the text, rendered cheaply as plain text.

A finished message is a Static (one render); the live reply is the same widget updated in
batches by the chat screen (~every 50 ms), never per token.
"""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static


class ChatMessageView(Static):
    def __init__(self, name: str, text: str, is_user: bool, index: int, swipe: str = "") -> None:
        super().__init__(classes="user" if is_user else "char")
        self.speaker = name
        self.body = text
        self.index = index
        self.swipe = swipe

    def on_mount(self) -> None:
        self._refresh()

    def set_text(self, text: str, swipe: str | None = None) -> None:
        self.body = text
        if swipe is not None:
            self.swipe = swipe
        self._refresh()

    def append(self, delta: str) -> None:
        self.body += delta
        self._refresh()

    def _refresh(self) -> None:
        out = Text()
        out.append(self.speaker, style="bold")
        if self.swipe:
            out.append(f"  {self.swipe}", style="dim")
        out.append("\n")
        out.append(self.body or "…")
        self.update(out)
