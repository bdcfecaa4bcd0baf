"""Create and edit a character card; import cards from a path (a file or a folder).

`CardEditorScreen(tavern, key)` (key None: a new character) dismisses with the saved key;
`ImportScreen(tavern)` dismisses with the imported keys. Writing goes through
`Tavern.cards.save` and `tavern.importing` (cards, lorebooks, chats, presets: the service
`tavern import` uses); nothing here touches a file itself. A big folder imports in a thread
worker behind a progress bar.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.notifications import SeverityLevel
from textual.screen import ModalScreen, Screen
from textual.widgets import Footer, Input, Label, ProgressBar, Static, TextArea

from tavern.errors import TavernError
from tavern.importing import ImportReport

if TYPE_CHECKING:
    from tavern.cards.model import Card
    from tavern.session import Tavern

GREETING_SEPARATOR = "\n---\n"
# (field, label, multi-line)
FIELDS = [
    ("name", "Name", False),
    ("tags", "Tags (comma separated)", False),
    ("creator", "Creator", False),
    ("description", "Description", True),
    ("personality", "Personality", True),
    ("scenario", "Scenario", True),
    ("first_mes", "First message", True),
    ("alternate_greetings", "Alternate greetings (separated by a line with ---)", True),
    ("mes_example", "Example dialogue", True),
    ("system_prompt", "System prompt (overrides the main one)", True),
    ("post_history_instructions", "Post-history instructions", True),
    ("creator_notes", "Creator's notes", True),
]


class CardEditorScreen(Screen[str | None]):
    DEFAULT_CSS = """
    CardEditorScreen #card-title { height: 1; background: $panel; padding: 0 1; }
    CardEditorScreen #card-form { height: 1fr; padding: 0 1; }
    CardEditorScreen #card-form Label { color: $text-muted; margin-top: 1; }
    CardEditorScreen #card-form TextArea { height: 6; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+s", "save", "Save", id="card.save", priority=True),
        Binding("escape", "cancel", "Cancel", id="card.cancel", priority=True),
    ]

    def __init__(self, tavern: Tavern, key: str | None) -> None:
        super().__init__()
        self.tavern = tavern
        self.key = key
        if key is None:
            from tavern.cards import Card

            self.card = Card(name="")
        else:
            self.card = copy.deepcopy(tavern.cards.library.get(key))

    def compose(self) -> ComposeResult:
        title = f"Edit {self.card.name}" if self.key else "New character"
        yield Static(Text(f"{title}   (Ctrl+S save, Esc cancel)", style="bold"), id="card-title")
        # The form scrolls to the focused field; as a focus of its own it showed nothing.
        with VerticalScroll(id="card-form", can_focus=False):
            for name, label, multi in FIELDS:
                yield Label(label)
                value = self._value(name)
                if multi:
                    yield TextArea(value, id=f"card-{name}", soft_wrap=True)
                else:
                    yield Input(value, id=f"card-{name}")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#card-name", Input).focus()

    def _value(self, name: str) -> str:
        value = getattr(self.card, name)
        if name == "tags":
            return ", ".join(value)
        if name == "alternate_greetings":
            return GREETING_SEPARATOR.join(value)
        return value

    def form(self) -> Card:
        card = copy.deepcopy(self.card)
        for name, _label, multi in FIELDS:
            widget = self.query_one(f"#card-{name}")
            text = widget.text if multi else widget.value  # type: ignore[attr-defined]
            if name == "tags":
                card.tags = [t.strip() for t in text.split(",") if t.strip()]
            elif name == "alternate_greetings":
                card.alternate_greetings = [
                    g.strip() for g in text.replace("\r\n", "\n").split(GREETING_SEPARATOR) if g.strip()
                ]
            else:
                setattr(card, name, text.strip() if name == "name" else text)
        return card

    def action_save(self) -> None:
        try:
            key = self.tavern.cards.save(self.key, self.form())
        except TavernError as err:
            self.notify(str(err), severity="error")
            return
        self.notify(f"Saved {key}")
        self.dismiss(key)

    def action_cancel(self) -> None:
        self.dismiss(None)


class ImportScreen(ModalScreen[list[str] | None]):
    DEFAULT_CSS = """
    ImportScreen { align: center middle; }
    ImportScreen > Vertical {
        width: 90%; max-width: 100; height: auto; border: thick $primary; background: $surface;
        padding: 1 2;
    }
    ImportScreen ProgressBar { margin-top: 1; }
    ImportScreen #import-report { height: auto; max-height: 10; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "close", "Close", id="import.close")]

    def __init__(self, tavern: Tavern) -> None:
        super().__init__()
        self.tavern = tavern
        self.keys: list[str] = []
        self.running = False

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(Text("Import a card, lorebook, chat or preset, or a folder of them", style="bold"))
            yield Input(placeholder="~/Downloads/card.png", id="import-path")
            yield ProgressBar(total=None, id="import-progress", show_eta=False)
            yield Static("", id="import-report")

    def on_mount(self) -> None:
        self.query_one("#import-path", Input).focus()

    @on(Input.Submitted, "#import-path")
    def _go(self, event: Input.Submitted) -> None:
        if self.running or not event.value.strip():
            return
        self.running = True
        self.query_one("#import-report", Static).update("importing…")
        self.run_import(event.value.strip())

    @work(thread=True, exclusive=True, group="import", exit_on_error=False)
    def run_import(self, path: str) -> None:
        bar = self.query_one("#import-progress", ProgressBar)

        def progress(done: int, total: int) -> None:
            self.app.call_from_thread(bar.update, total=total, progress=done)

        tavern = self.tavern
        try:
            report = tavern.import_files([path], progress=progress)
        except Exception as err:  # noqa: BLE001 - a bug must not leave the dialog "importing…" for ever
            self.app.call_from_thread(self._broken, f"import failed: {err}")
            return
        self.app.call_from_thread(self._done, report)

    def _broken(self, message: str) -> None:
        self.running = False
        self.query_one("#import-report", Static).update(Text(message, style="red"))
        self.notify(message, severity="error", markup=False)

    def _done(self, report: ImportReport) -> None:
        self.running = False
        self.keys += report.card_keys
        self.query_one("#import-report", Static).update(_report_text(report))
        if report.imported:
            # Says what each file became (a renamed lorebook included), not just a count.
            lines = [item.summary for item in report.imported[:4]]
            if len(report.imported) > 4:
                lines.append(f"…and {len(report.imported) - 4} more imported")
            if report.failed:
                lines.append(f"{len(report.failed)} could not be imported")
            severity: SeverityLevel = "warning" if report.failed or report.warnings else "information"
            self.notify("\n".join(lines), severity=severity, markup=False)
        elif report.failed:
            self.notify(report.failed[0].error or "nothing imported", severity="error", markup=False)

    def action_close(self) -> None:
        self.dismiss(self.keys or None)


_REPORT_LINES = 8


def _report_text(report: ImportReport) -> Text:
    """One line per file (what it became, or why not), its warnings under it."""
    text = Text()
    shown = 0
    for item in report.items:
        if shown >= _REPORT_LINES:
            text.append(f"…and {len(report.items) - shown} more files\n", style="dim")
            break
        shown += 1
        if item.error is not None:
            text.append(item.error + "\n", style="red")
            continue
        text.append(f"{item.source.name}: {item.summary}\n", style="green")
        for warning in item.warnings[:3]:
            text.append(f"  {warning}\n", style="yellow")
    text.append("Esc closes; another path imports more.", style="dim")
    return text
