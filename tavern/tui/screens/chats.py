"""A character's chats: search, open, start a new one, rename, delete (to the trash), export.

`ChatListScreen(tavern, session)` is pushed by the chat screen (Ctrl+L) and dismisses with what the
user chose: `("open", name)`, `("new", "")` or None. Renames, deletes and exports go through
`Tavern.chats` and the `ChatSession`; the open chat is renamed through its own session so
it keeps writing to the right file.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Footer, Input, Label, OptionList
from textual.widgets.option_list import Option

from tavern.errors import TavernError
from tavern.tui.screens.modals import ConfirmModal, TextPromptModal

if TYPE_CHECKING:
    from tavern.chat.session import ChatSession
    from tavern.session import Tavern
    from tavern.store import ChatInfo


class ChatListScreen(ModalScreen[tuple[str, str] | None]):
    DEFAULT_CSS = """
    ChatListScreen { align: center middle; }
    ChatListScreen > Vertical {
        width: 100%; height: 100%; background: $surface; padding: 0 1;
    }
    ChatListScreen #chats-list { height: 1fr; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Back", id="chats.back", priority=True),
        Binding("ctrl+n", "new", "New chat", id="chats.new", priority=True),
        Binding("f2", "rename", "Rename", id="chats.rename", priority=True),
        Binding("f8,ctrl+d", "delete", "Delete", id="chats.delete", priority=True),
        Binding("ctrl+e", "export", "Export", id="chats.export", priority=True),
        Binding("down", "move(1)", show=False, priority=True),
        Binding("up", "move(-1)", show=False, priority=True),
    ]

    def __init__(self, tavern: Tavern, session: ChatSession) -> None:
        super().__init__()
        self.session = session
        self.tavern = tavern
        self.infos: list[ChatInfo] = []

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(Text(f"Chats with {self.session.card.name}", style="bold"), id="chats-title")
            yield Input(placeholder="type to search chats", id="chats-search")
            yield OptionList(id="chats-list")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#chats-search", Input).focus()
        self.reload(keep=self.session.chat.name)

    def reload(self, keep: str | None = None) -> None:
        try:
            self.infos = self.tavern.chats.list(self.session.key)
        except TavernError as err:
            self.notify(str(err), severity="error")
            self.infos = []
        needle = self.query_one("#chats-search", Input).value.casefold().strip()
        shown = [
            i
            for i in self.infos
            if not needle or needle in i.name.casefold() or needle in i.preview.casefold()
        ]
        options = self.query_one("#chats-list", OptionList)
        options.clear_options()
        current = self.session.chat.name
        for info in shown:
            label = Text()
            label.append("● " if info.name == current else "  ", style="bold")
            label.append(info.name, style="bold")
            label.append(f"  {info.message_count} msgs · {info.modified:%Y-%m-%d %H:%M}", style="dim")
            preview = " ".join(info.preview.split())
            if preview:
                label.append(
                    "\n    " + (preview[:70] + "…" if len(preview) > 70 else preview), style="italic"
                )
            options.add_option(Option(label, id=info.name))
        if shown:
            names = [i.name for i in shown]
            options.highlighted = names.index(keep) if keep in names else 0

    @on(Input.Changed, "#chats-search")
    def _search(self) -> None:
        self.reload(keep=self.current())

    def current(self) -> str | None:
        options = self.query_one("#chats-list", OptionList)
        if options.highlighted is None or not options.option_count:
            return None
        return options.get_option_at_index(options.highlighted).id

    def action_move(self, step: int) -> None:
        options = self.query_one("#chats-list", OptionList)
        if options.option_count:
            options.highlighted = max(0, min(options.option_count - 1, (options.highlighted or 0) + step))

    @on(Input.Submitted, "#chats-search")
    def _submitted(self) -> None:
        name = self.current()
        if name:
            self.dismiss(("open", name))

    @on(OptionList.OptionSelected, "#chats-list")
    def _selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(("open", event.option.id or ""))

    def action_new(self) -> None:
        self.dismiss(("new", ""))

    def action_cancel(self) -> None:
        self.dismiss(None)

    def action_rename(self) -> None:
        name = self.current()
        if not name:
            return

        def done(new: str | None) -> None:
            if not new or new == name:
                return
            try:
                if name == self.session.chat.name:
                    new_name = self.session.rename(new)
                    # Its draft and the last-opened record follow it (other chats' do in
                    # Chats.rename).
                    self.tavern.chats.state.renamed(self.session.key, name, new_name)
                else:
                    new_name = self.tavern.chats.rename(self.session.key, name, new)
            except TavernError as err:
                self.notify(str(err), severity="error")
                return
            self.reload(keep=new_name)
            self.notify(f"Renamed to {new_name}")

        self.app.push_screen(TextPromptModal(f"Rename chat '{name}'", name), done)

    def action_delete(self) -> None:
        name = self.current()
        if not name:
            return

        def done(yes: bool | None) -> None:
            if not yes:
                return
            try:
                where = self.tavern.chats.delete(self.session.key, name)
            except TavernError as err:
                self.notify(str(err), severity="error")
                return
            self.notify(f"Moved to the trash: {where}")
            if name == self.session.chat.name:
                self.dismiss(("deleted", name))  # the open chat is gone: the screen opens another
                return
            self.reload()

        self.app.push_screen(ConfirmModal(f"Move the chat '{name}' to the trash?", "Delete"), done)

    def action_export(self) -> None:
        name = self.current()
        if not name:
            return

        def done(path: str | None) -> None:
            if not path:
                return
            try:
                to = self.tavern.chats.export(self.session.key, name, path)
            except (TavernError, OSError) as err:
                self.notify(str(err), severity="error")
                return
            self.notify(f"Exported to {to}")

        self.app.push_screen(TextPromptModal(f"Export '{name}' to (.jsonl, .md or .txt)", f"{name}.md"), done)
