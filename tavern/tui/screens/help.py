"""The help screen (F1): every key of every screen, read from the screens' own bindings (so it
never goes stale), with the binding ids that `[ui.keys]` in settings.toml can rebind. The
screen F1 was pressed on is listed first."""

from __future__ import annotations

from typing import ClassVar

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Static

Section = tuple[str, type, list[tuple[str, str]]]
"""A titled part of the help: the class whose BINDINGS it lists, and keys those do not show."""


_NAMES = {"escape": "Esc", "pageup": "PgUp", "pagedown": "PgDn"}


def _key_label(key: str) -> str:
    """ "ctrl+g,f3" -> "Ctrl+G, F3"."""

    def one(part: str) -> str:
        return _NAMES.get(part, part.upper() if len(part) == 1 else part.capitalize())

    return ", ".join("+".join(one(p) for p in k.strip().split("+")) for k in key.split(","))


def help_table(sections: list[Section], keymap: dict[str, str], first: type | None = None) -> list[Table | Text]:
    out: list[Table | Text] = []
    sections = list(sections)
    sections.sort(key=lambda s: s[1] is not first)
    for title, cls, extra in sections:
        table = Table(
            title=title, title_justify="left", show_header=False, box=None, padding=(0, 1), expand=True
        )
        table.add_column("key", style="bold", min_width=12, ratio=2)
        table.add_column("what", ratio=5)
        table.add_column("id", style="dim", min_width=18, overflow="fold")
        for key, what in extra:
            table.add_row(key, what, "")
        for b in getattr(cls, "BINDINGS", []) if cls is not type(None) else []:
            if not isinstance(b, Binding) or not b.description:
                continue
            key = keymap.get(b.id or "", b.key)
            table.add_row(_key_label(key), b.description, b.id or "")
        out.append(table)
        out.append(Text(""))
    return out


class HelpScreen(ModalScreen[None]):
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll { width: 100%; height: 100%; background: $surface; padding: 0 1; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,f1,q", "dismiss_help", "Close", id="help.close"),
    ]

    def __init__(self, sections: list[Section], under: Screen[object] | None = None) -> None:
        """`sections`: what to list (the app knows its screens; this module imports none of
        them); `under`: the screen the help was opened on, whose keys come first."""
        super().__init__()
        self.sections = sections
        self.under = type(under) if under is not None else None

    def compose(self) -> ComposeResult:
        from rich.console import Group

        keymap = getattr(self.app, "user_keys", {})
        self.tables = help_table(self.sections, keymap, self.under)
        with VerticalScroll():
            yield Static(
                Text("Tavern keys  (Esc closes; [ui.keys] in settings.toml rebinds an id)", style="bold")
            )
            yield Static(Group(*self.tables), id="help-body")

    def plain_text(self, width: int = 120) -> str:
        import io

        from rich.console import Console

        console = Console(width=width, record=True, file=io.StringIO())
        for table in self.tables:
            console.print(table)
        return console.export_text()

    def action_dismiss_help(self) -> None:
        self.dismiss(None)
