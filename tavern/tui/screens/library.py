"""The character library: pick a character, see its greeting, open its latest chat."""

from __future__ import annotations

from typing import Any

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import Footer, OptionList, Static
from textual.widgets.option_list import Option


class LibraryScreen(Screen):
    BINDINGS = [
        Binding("enter", "open", "Chat", id="library.open", show=True),
        Binding("n", "new_chat", "New chat", id="library.new"),
        Binding("q", "app.quit", "Quit", id="app.quit"),
    ]

    def __init__(self, tavern: Any) -> None:
        super().__init__()
        self.tavern = tavern
        self.entries: list[Any] = []

    def compose(self) -> ComposeResult:
        yield Static("Tavern — choose a character", id="status")
        with Horizontal(id="library"):
            yield OptionList(id="library-list")
            yield Static("", id="library-preview")
        yield Footer()

    def on_mount(self) -> None:
        self.reload()

    def reload(self) -> None:
        self.entries = self.tavern.library.list()
        options = self.query_one("#library-list", OptionList)
        options.clear_options()
        options.add_options([Option(e.name, id=e.key) for e in self.entries])
        if self.entries:
            options.highlighted = 0
        options.focus()

    @on(OptionList.OptionHighlighted, "#library-list")
    def _preview(self, event: OptionList.OptionHighlighted) -> None:
        key = event.option.id
        try:
            card = self.tavern.library.get(key)
        except Exception as err:  # a broken card shows its error, not a crash
            self.query_one("#library-preview", Static).update(f"cannot read card: {err}")
            return
        tags = ", ".join(card.tags)
        greeting = card.first_mes.replace("{{char}}", card.name).replace("{{user}}", self.tavern.settings.chat.user_name)
        text = f"[b]{card.name}[/b]\n[dim]{tags}[/dim]\n\n{_escape(greeting)}"
        if card.alternate_greetings:
            text += f"\n\n[dim]+{len(card.alternate_greetings)} alternate greetings[/dim]"
        self.query_one("#library-preview", Static).update(text)

    @on(OptionList.OptionSelected, "#library-list")
    def _selected(self, event: OptionList.OptionSelected) -> None:
        self.app.open_character(event.option.id, new=False)

    def _current(self) -> str | None:
        options = self.query_one("#library-list", OptionList)
        if options.highlighted is None:
            return None
        return options.get_option_at_index(options.highlighted).id

    def action_open(self) -> None:
        key = self._current()
        if key:
            self.app.open_character(key, new=False)

    def action_new_chat(self) -> None:
        key = self._current()
        if key:
            self.app.open_character(key, new=True)


def _escape(text: str) -> str:
    return text.replace("[", r"\[")
