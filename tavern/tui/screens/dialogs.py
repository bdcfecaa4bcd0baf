"""Small dialogs the screens share: edit a text, the author's note, pick from a filtered list.

(`ConfirmModal` and `TextPromptModal` live in modals.py.)
Each returns its result through `dismiss`; none of them reads or writes a file.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label, OptionList, Select, TextArea
from textual.widgets.option_list import Option

from tavern.store.metadata import NoteMeta

if TYPE_CHECKING:
    from tavern.chat.summary import SummaryState


class EditTextModal(ModalScreen[str | None]):
    """Edit a longer text (a message, a description). Ctrl+S saves, Esc cancels."""

    DEFAULT_CSS = """
    EditTextModal { align: center middle; }
    EditTextModal > Vertical {
        width: 90%; max-width: 100; height: 80%; border: thick $primary; background: $surface;
        padding: 0 1;
    }
    EditTextModal TextArea { height: 1fr; }
    EditTextModal .hint { color: $text-muted; height: 1; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+s", "save", "Save", id="edit.save", priority=True),
        Binding("escape", "cancel", "Cancel", id="edit.cancel", priority=True),
    ]

    def __init__(self, title: str, text: str) -> None:
        super().__init__()
        self.title_text = title
        self.text = text

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(Text(self.title_text, style="bold"))
            yield TextArea(self.text, id="edit-text", soft_wrap=True)
            yield Label("Ctrl+S save · Esc cancel", classes="hint")

    def on_mount(self) -> None:
        area = self.query_one("#edit-text", TextArea)
        area.focus()
        area.move_cursor(area.document.end)

    def action_save(self) -> None:
        self.dismiss(self.query_one("#edit-text", TextArea).text)

    def action_cancel(self) -> None:
        self.dismiss(None)


ROLES = [("system", 0), ("user", 1), ("assistant", 2)]


class AuthorNoteModal(ModalScreen[NoteMeta | None]):
    """The chat's author's note: text, depth, every-N-messages, role. Ctrl+S saves."""

    DEFAULT_CSS = """
    AuthorNoteModal { align: center middle; }
    AuthorNoteModal > Vertical {
        width: 90%; max-width: 100; height: 80%; border: thick $primary; background: $surface;
        padding: 0 1;
    }
    AuthorNoteModal TextArea { height: 1fr; }
    AuthorNoteModal Horizontal { height: 3; }
    AuthorNoteModal Horizontal Label { padding: 1 1 0 0; }
    AuthorNoteModal Input { width: 8; }
    AuthorNoteModal Select { width: 20; }
    AuthorNoteModal .hint { color: $text-muted; height: 1; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+s", "save", "Save", id="note.save", priority=True),
        Binding("escape", "cancel", "Cancel", id="note.cancel", priority=True),
    ]

    def __init__(self, note: Mapping[str, int | str]) -> None:
        super().__init__()
        self.note = note

    def compose(self) -> ComposeResult:
        n = self.note
        with Vertical():
            yield Label(Text("Author's note (inserted into the prompt at a depth)", style="bold"))
            yield TextArea(str(n["note_prompt"]), id="note-text", soft_wrap=True)
            with Horizontal():
                yield Label("depth")
                yield Input(str(n["note_depth"]), id="note-depth", type="integer")
                yield Label("every")
                yield Input(str(n["note_interval"]), id="note-interval", type="integer")
                yield Label("role")
                yield Select(ROLES, value=n["note_role"], allow_blank=False, id="note-role")
            yield Label("Ctrl+S save · Esc cancel · every 0 = off", classes="hint")

    def on_mount(self) -> None:
        self.query_one("#note-text", TextArea).focus()

    def action_save(self) -> None:
        try:
            depth = int(self.query_one("#note-depth", Input).value or 0)
            interval = int(self.query_one("#note-interval", Input).value or 0)
        except ValueError:
            self.notify("Depth and interval are whole numbers", severity="error")
            return
        role = self.query_one("#note-role", Select).value
        assert isinstance(role, int)  # the select offers the roles only, never a blank
        self.dismiss(NoteMeta(self.query_one("#note-text", TextArea).text, depth, interval, role))

    def action_cancel(self) -> None:
        self.dismiss(None)


class PickModal(ModalScreen[str | None]):
    """Type to filter, arrows to choose, Enter to pick. `search(text)` gives (id, label) rows."""

    DEFAULT_CSS = """
    PickModal { align: center middle; }
    PickModal > Vertical {
        width: 90%; max-width: 100; height: 80%; border: thick $primary; background: $surface;
        padding: 0 1;
    }
    PickModal OptionList { height: 1fr; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel", id="pick.cancel", priority=True),
        Binding("down", "move(1)", show=False, priority=True),
        Binding("up", "move(-1)", show=False, priority=True),
    ]

    def __init__(self, title: str, search: Callable[[str], list[tuple[str, str]]], value: str = "") -> None:
        super().__init__()
        self.title_text = title
        self.search = search
        self.value = value

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(Text(self.title_text, style="bold"))
            yield Input(self.value, placeholder="type to search", id="pick-input")
            yield OptionList(id="pick-list")

    def on_mount(self) -> None:
        self.query_one("#pick-input", Input).focus()
        self._fill(self.value)

    @on(Input.Changed, "#pick-input")
    def _changed(self, event: Input.Changed) -> None:
        self._fill(event.value)

    def _fill(self, text: str) -> None:
        options = self.query_one("#pick-list", OptionList)
        options.clear_options()
        options.add_options([Option(label, id=key) for key, label in self.search(text)])
        if options.option_count:
            options.highlighted = 0

    def action_move(self, step: int) -> None:
        options = self.query_one("#pick-list", OptionList)
        if options.option_count:
            options.highlighted = max(0, min(options.option_count - 1, (options.highlighted or 0) + step))

    @on(Input.Submitted, "#pick-input")
    def _submitted(self) -> None:
        options = self.query_one("#pick-list", OptionList)
        if options.highlighted is not None and options.option_count:
            self.dismiss(options.get_option_at_index(options.highlighted).id)

    @on(OptionList.OptionSelected, "#pick-list")
    def _selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)

    def action_cancel(self) -> None:
        self.dismiss(None)


class SummaryModal(ModalScreen[tuple[str, str | bool | None] | None]):
    """The chat's rolling summary: edit the text (Ctrl+S), regenerate it (Ctrl+R), switch it
    off or on (Ctrl+O). Dismisses with (action, value): ("save", text), ("regenerate", None) or
    ("enabled", bool); the chat screen calls the service."""

    DEFAULT_CSS = """
    SummaryModal { align: center middle; }
    SummaryModal > Vertical {
        width: 90%; max-width: 100; height: 80%; border: thick $primary; background: $surface;
        padding: 0 1;
    }
    SummaryModal TextArea { height: 1fr; }
    SummaryModal .hint, SummaryModal #summary-state { color: $text-muted; height: 1; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+s", "save", "Save", id="summary.save", priority=True),
        Binding("ctrl+r", "regenerate", "Regenerate", id="summary.regenerate", priority=True),
        Binding("ctrl+o", "toggle_summary", "On/off", id="summary.toggle", priority=True),
        Binding("escape", "cancel", "Cancel", id="summary.cancel", priority=True),
    ]

    def __init__(self, state: SummaryState) -> None:
        super().__init__()
        self.state = state

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(Text("Summary of the chat (inserted into the prompt)", style="bold"))
            yield Label(Text(self.state.describe()), id="summary-state")
            yield TextArea(self.state.text, id="summary-text", soft_wrap=True)
            toggle = "switch on" if self.state.off else "switch off"
            yield Label(f"Ctrl+S save · Ctrl+R regenerate · Ctrl+O {toggle} · Esc cancel", classes="hint")

    def on_mount(self) -> None:
        self.query_one("#summary-text", TextArea).focus()

    def action_save(self) -> None:
        self.dismiss(("save", self.query_one("#summary-text", TextArea).text))

    def action_regenerate(self) -> None:
        self.dismiss(("regenerate", None))

    def action_toggle_summary(self) -> None:
        # Not `action_toggle`: that name is DOMNode's `toggle(attribute_name)` action.
        self.dismiss(("enabled", self.state.off))

    def action_cancel(self) -> None:
        self.dismiss(None)


class CfgModal(ModalScreen[tuple[str, float] | None]):
    """The chat's negative prompt (CFG) and guidance scale. Ctrl+S saves (text, scale)."""

    DEFAULT_CSS = """
    CfgModal { align: center middle; }
    CfgModal > Vertical {
        width: 90%; max-width: 100; height: 70%; border: thick $primary; background: $surface;
        padding: 0 1;
    }
    CfgModal TextArea { height: 1fr; }
    CfgModal Horizontal { height: 3; }
    CfgModal Horizontal Label { padding: 1 1 0 0; }
    CfgModal Input { width: 10; }
    CfgModal .hint { color: $text-muted; height: 1; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+s", "save", "Save", id="cfg.save", priority=True),
        Binding("escape", "cancel", "Cancel", id="cfg.cancel", priority=True),
    ]

    def __init__(self, negative: str, scale: float) -> None:
        super().__init__()
        self.negative, self.scale = negative, scale

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(Text("Negative prompt (CFG): replies are steered away from this", style="bold"))
            yield TextArea(self.negative, id="cfg-negative", soft_wrap=True)
            with Horizontal():
                yield Label("guidance scale")
                yield Input(f"{self.scale:g}", id="cfg-scale", type="number")
            yield Label("Ctrl+S save · Esc cancel · scale 1 = off, try 1.5", classes="hint")

    def on_mount(self) -> None:
        self.query_one("#cfg-negative", TextArea).focus()

    def action_save(self) -> None:
        try:
            scale = float(self.query_one("#cfg-scale", Input).value or 1)
        except ValueError:
            self.notify("The guidance scale is a number (1 = off)", severity="error")
            return
        if scale <= 0:
            self.notify("The guidance scale must be above 0 (1 = off)", severity="error")
            return
        self.dismiss((self.query_one("#cfg-negative", TextArea).text, scale))

    def action_cancel(self) -> None:
        self.dismiss(None)
