"""Personas (F9): who you are in a chat. A list on the left, name and description on the right.

Enter (or Ctrl+U) uses the highlighted persona (its name and description become `[chat]
user_name` / `persona` in settings.toml), Ctrl+S saves the form, Ctrl+N starts a new one,
F8 deletes. Everything goes through `Tavern.personas` and `Tavern.use_persona`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Footer, Input, Label, OptionList, Static, TextArea
from textual.widgets.option_list import Option

from tavern.errors import TavernError
from tavern.tui.screens.modals import ConfirmModal

if TYPE_CHECKING:
    from tavern.session import Tavern


class PersonaScreen(Screen[None]):
    DEFAULT_CSS = """
    PersonaScreen #persona-status { height: 1; background: $panel; padding: 0 1; }
    PersonaScreen #persona-list { width: 28; height: 1fr; border: round $primary; }
    PersonaScreen #persona-form { width: 1fr; height: 1fr; padding: 0 1; }
    PersonaScreen #persona-description { height: 1fr; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+s", "save", "Save", id="persona.save", priority=True),
        Binding("ctrl+u", "use", "Use", id="persona.use", priority=True),
        Binding("ctrl+n", "new", "New", id="persona.new", priority=True),
        Binding("f8", "delete", "Delete", id="persona.delete", priority=True),
        Binding("escape", "back", "Back", id="persona.back", priority=True),
    ]

    def __init__(self, tavern: Tavern) -> None:
        super().__init__()
        self.tavern = tavern
        self.editing: str | None = None

    def compose(self) -> ComposeResult:
        yield Static("", id="persona-status")
        with Horizontal():
            yield OptionList(id="persona-list")
            with Vertical(id="persona-form"):
                yield Label("Name")
                yield Input(id="persona-name")
                yield Label("Description ({{persona}} in the prompt)")
                yield TextArea(id="persona-description", soft_wrap=True)
        yield Footer()

    def on_mount(self) -> None:
        self.reload(keep=self.tavern.settings.chat.user_name)
        if self.editing is not None:  # else the empty form has the focus, to make the first one
            self.query_one("#persona-list", OptionList).focus()

    def reload(self, keep: str | None = None) -> None:
        personas = self.tavern.personas.list()
        current = self.tavern.settings.chat.user_name
        options = self.query_one("#persona-list", OptionList)
        options.clear_options()
        for p in personas:
            options.add_option(Option(Text(("● " if p.name == current else "  ") + p.name), id=p.name))
        status = f"Personas — you are {current}" + ("" if personas else "  (Ctrl+N: make one)")
        self.query_one("#persona-status", Static).update(status)
        names = [p.name for p in personas]
        if names:
            options.highlighted = names.index(keep) if keep in names else 0
            self._load(names[options.highlighted])
        else:
            self.action_new()

    def _load(self, name: str) -> None:
        try:
            p = self.tavern.personas.get(name)
        except TavernError:
            return
        self.editing = p.name
        self.query_one("#persona-name", Input).value = p.name
        self.query_one("#persona-description", TextArea).text = p.description

    @on(OptionList.OptionHighlighted, "#persona-list")
    def _highlighted(self, event: OptionList.OptionHighlighted) -> None:
        if event.option.id:
            self._load(event.option.id)

    @on(OptionList.OptionSelected, "#persona-list")
    def _selected(self, event: OptionList.OptionSelected) -> None:
        self.action_use()

    def action_new(self) -> None:
        self.editing = None
        self.query_one("#persona-name", Input).value = ""
        self.query_one("#persona-description", TextArea).text = ""
        self.query_one("#persona-name", Input).focus()

    def action_save(self) -> bool:
        from tavern.personas import Persona

        name = self.query_one("#persona-name", Input).value.strip()
        text = self.query_one("#persona-description", TextArea).text
        try:
            self.tavern.personas.save(Persona(name, text), old_name=self.editing)
        except TavernError as err:
            self.notify(str(err), severity="error")
            return False
        self.editing = name
        self.reload(keep=name)
        self.notify(f"Saved persona {name}", timeout=2)
        return True

    def action_use(self) -> None:
        name = self.query_one("#persona-name", Input).value.strip()
        if not name:
            return
        if not self.action_save():
            return
        try:
            self.tavern.use_persona(name)
        except TavernError as err:
            self.notify(str(err), severity="error")
            return
        self.reload(keep=name)
        self.notify(f"You are now {name}", timeout=3)

    def action_delete(self) -> None:
        name = self.editing
        if not name:
            return

        def done(yes: bool | None) -> None:
            if yes:
                try:
                    self.tavern.personas.delete(name)
                except TavernError as err:
                    self.notify(str(err), severity="error")
                    return
                self.reload()

        self.app.push_screen(ConfirmModal(f"Delete the persona {name}?", "Delete"), done)

    def action_back(self) -> None:
        self.dismiss(None)
