"""The lorebook editor: `LoreBooksScreen(tavern)` lists the books of the data home,
`LoreEditorScreen(tavern, book_path)` edits one.

Callers: the library screen ("w"), and whatever else the app wires to these classes. The book
is read with `Tavern.lorebooks.read` and written back whole with `Tavern.lorebooks.save` (atomic:
temp file, fsync, rename) on ctrl+s; nothing touches the file before that. Edits go straight
into the in-memory `LoreEntry` as the user types (assigning attributes, which also tells the
scan cache), so the list and the saved file always agree with what the form shows.

Form fields are loaded inside `widget.prevent(...Changed)`, so loading an entry is never
mistaken for an edit; a field that does not parse (a depth of "abc") is marked red and not
applied. Case-sensitive and whole-words are three-way (default / yes / no) because
SillyTavern stores null for "use the global setting", and a checkbox would lose that.

Keys: ctrl+s save, ctrl+n new entry, delete (in the list) or ctrl+delete remove the entry
(after a confirm), space (in the list) or ctrl+e toggle enabled, Esc leaves (asking first
when there are unsaved changes).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import Checkbox, Footer, Input, Label, OptionList, Select, Static, TextArea
from textual.widgets.option_list import Option

from tavern.errors import TavernError
from tavern.lore import Lorebook, LoreEntry, split_keys
from tavern.tui.screens.modals import ConfirmModal, TextPromptModal

if TYPE_CHECKING:
    from tavern.session import Tavern

POSITIONS: list[tuple[str, int]] = [
    ("before card", 0),
    ("after card", 1),
    ("AN top", 2),
    ("AN bottom", 3),
    ("@depth", 4),
    ("examples top", 5),
    ("examples bottom", 6),
]
LOGICS: list[tuple[str, int]] = [("AND ANY", 0), ("NOT ALL", 1), ("NOT ANY", 2), ("AND ALL", 3)]
ROLES: list[tuple[str, int]] = [("system", 0), ("user", 1), ("assistant", 2)]
TRISTATE: list[tuple[str, str]] = [("default", "default"), ("yes", "yes"), ("no", "no")]
_TRI_TO_VALUE: dict[str, bool | None] = {"default": None, "yes": True, "no": False}


def _tri(value: bool | None) -> str:
    return "default" if value is None else ("yes" if value else "no")


def _number(text: str, integer: bool) -> int | float | None:
    """Parse a number field; None for blank; ValueError when it is not a number."""
    text = text.strip()
    if not text:
        return None
    if integer:
        return int(text)
    value = float(text)
    return int(value) if value.is_integer() else value


LABEL_WIDTH = 25
"""Cells for a list row (the list is 30 wide): OptionList wraps long prompts, so cut them."""


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(0, width - 1)] + "…"


def _entry_label(entry: LoreEntry) -> Text:
    """One line: on/off/constant mark, the title, then the keys if there is room."""
    if entry.disable:
        mark = Text("✗ ", style="red")
    elif entry.constant:
        mark = Text("● ", style="blue")
    else:
        mark = Text("✓ ", style="green")
    title = _cut(entry.title, LABEL_WIDTH - 2)
    text = mark + Text(title)
    room = LABEL_WIDTH - 2 - len(title) - 2
    keys = ", ".join(entry.key)
    if keys and keys != entry.title and room >= 4:
        text.append("  " + _cut(keys, room), style="dim")
    return text


def _entry_matches(entry: LoreEntry, needle: str) -> bool:
    needle = needle.casefold()
    hay = [entry.comment, entry.content, *entry.key, *entry.keysecondary, str(entry.uid), entry.group]
    return any(needle in h.casefold() for h in hay)


class LoreEditorScreen(Screen):
    DEFAULT_CSS = """
    LoreEditorScreen { layout: vertical; }
    LoreEditorScreen #lore-status { height: 1; background: $panel; color: $text-muted; padding: 0 1; }
    LoreEditorScreen #lore-status.-dirty { color: $warning; }
    LoreEditorScreen #lore-body { height: 1fr; }
    LoreEditorScreen #lore-left { width: 30; height: 1fr; }
    LoreEditorScreen #lore-list { height: 1fr; border: round $primary; }
    LoreEditorScreen #lore-list:focus { border: round $accent; }
    LoreEditorScreen #lore-form { width: 1fr; height: 1fr; border: round $secondary; padding: 0 1; }
    LoreEditorScreen .row { height: 1; margin-bottom: 0; }
    LoreEditorScreen .row Label { width: 9; color: $text-muted; }
    LoreEditorScreen .row Label.short { width: 7; margin-left: 1; }
    LoreEditorScreen .row Input, LoreEditorScreen .row Select { width: 1fr; }
    LoreEditorScreen .row .num { width: 8; }
    LoreEditorScreen .row Checkbox { width: auto; margin-right: 2; }
    LoreEditorScreen #f-content { height: 7; margin: 0 0 0 0; }
    LoreEditorScreen Input.-invalid { color: $error; text-style: bold; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+s", "save", "Save", id="lore.save", priority=True),
        Binding("ctrl+n", "new_entry", "New", id="lore.new", priority=True),
        Binding("delete,ctrl+delete", "delete_entry", "Delete", id="lore.delete"),
        Binding("space,ctrl+e", "toggle_enabled", "On/off", id="lore.toggle"),
        Binding("slash", "search", "Search", id="lore.search", show=False),
        Binding("escape", "leave", "Back", id="lore.back"),
    ]

    def __init__(self, tavern: Tavern, book_path: Path | str) -> None:
        super().__init__()
        self.tavern = tavern
        self.path = Path(book_path)
        self.book: Lorebook | None = None
        self.shown: list[LoreEntry] = []
        self.entry: LoreEntry | None = None
        self.dirty = False

    # -- layout ---------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield Static("", id="lore-status")
        with Horizontal(id="lore-body"):
            with Vertical(id="lore-left"):
                yield Input(placeholder="search entries", id="lore-search", compact=True)
                yield OptionList(id="lore-list")
            with VerticalScroll(id="lore-form"):
                with Horizontal(classes="row"):
                    yield Label("Title")
                    yield Input(id="f-comment", compact=True, placeholder="comment / memo")
                with Horizontal(classes="row"):
                    yield Label("Keys")
                    yield Input(id="f-keys", compact=True, placeholder="key, other key, /regex/i")
                with Horizontal(classes="row"):
                    yield Label("Also")
                    yield Input(id="f-keysecondary", compact=True, placeholder="secondary keys (optional)")
                with Horizontal(classes="row"):
                    yield Label("Logic")
                    yield Select(LOGICS, id="f-logic", allow_blank=False, compact=True)
                yield TextArea(
                    id="f-content", compact=True, placeholder="content inserted when the entry fires"
                )
                with Horizontal(classes="row"):
                    yield Label("Position")
                    yield Select(POSITIONS, id="f-position", allow_blank=False, compact=True)
                    yield Label("Depth", classes="short")
                    yield Input(id="f-depth", compact=True, type="integer", classes="num")
                with Horizontal(classes="row"):
                    yield Label("Role")
                    yield Select(ROLES, id="f-role", allow_blank=False, compact=True)
                    yield Label("Order", classes="short")
                    yield Input(id="f-order", compact=True, type="number", classes="num")
                with Horizontal(classes="row"):
                    yield Label("Group")
                    yield Input(id="f-group", compact=True)
                    yield Label("Prob %", classes="short")
                    yield Input(id="f-probability", compact=True, type="number", classes="num")
                with Horizontal(classes="row"):
                    yield Checkbox("constant", id="f-constant", compact=True)
                    yield Checkbox("disabled", id="f-disable", compact=True)
                with Horizontal(classes="row"):
                    yield Label("Case")
                    yield Select(TRISTATE, id="f-case_sensitive", allow_blank=False, compact=True)
                    yield Label("Words", classes="short")
                    yield Select(TRISTATE, id="f-match_whole_words", allow_blank=False, compact=True)
        yield Footer()

    def on_mount(self) -> None:
        try:
            self.book = self.tavern.lorebooks.read(self.path)
        except TavernError as err:
            self.notify(str(err), severity="error")
            self.book = None
            self.query_one("#lore-form").disabled = True
            self._status()
            return
        self.apply_filter()
        self.query_one("#lore-list", OptionList).focus()

    # -- list -----------------------------------------------------------------------------------

    def _status(self) -> None:
        status = self.query_one("#lore-status", Static)
        if self.book is None:
            status.update(f"{self.path.name}: cannot open")
            return
        n = len(self.book.entries)
        on_count = sum(1 for e in self.book.entries if not e.disable)
        text = f"Lorebook {self.book.name} — {n} entries, {on_count} enabled"
        if self.dirty:
            text += "  ● unsaved (ctrl+s saves)"
        status.update(text)
        status.set_class(self.dirty, "-dirty")

    def apply_filter(self, keep: LoreEntry | None = None) -> None:
        if self.book is None:
            return
        needle = self.query_one("#lore-search", Input).value.strip()
        entries = self.book.entries
        self.shown = [e for e in entries if _entry_matches(e, needle)] if needle else list(entries)
        options = self.query_one("#lore-list", OptionList)
        options.clear_options()
        options.add_options([Option(_entry_label(e)) for e in self.shown])
        self._status()
        keep = keep if keep is not None else self.entry
        index = next((i for i, e in enumerate(self.shown) if e is keep), 0 if self.shown else None)
        if index is None:
            self.load_entry(None)
            return
        options.highlighted = index
        self.load_entry(self.shown[index])

    def _refresh_row(self, entry: LoreEntry) -> None:
        index = next((i for i, e in enumerate(self.shown) if e is entry), None)
        if index is not None:
            self.query_one("#lore-list", OptionList).replace_option_prompt_at_index(
                index, _entry_label(entry)
            )

    @on(Input.Changed, "#lore-search")
    def _search_changed(self, event: Input.Changed) -> None:
        self.apply_filter()

    @on(Input.Submitted, "#lore-search")
    def _search_submitted(self, event: Input.Submitted) -> None:
        self.query_one("#lore-list", OptionList).focus()

    def action_search(self) -> None:
        self.query_one("#lore-search", Input).focus()

    @on(OptionList.OptionHighlighted, "#lore-list")
    def _highlighted(self, event: OptionList.OptionHighlighted) -> None:
        if 0 <= event.option_index < len(self.shown):
            self.load_entry(self.shown[event.option_index])

    @on(OptionList.OptionSelected, "#lore-list")
    def _selected(self, event: OptionList.OptionSelected) -> None:
        # Enter on an entry: go edit it.
        self.query_one("#f-keys", Input).focus()

    # -- form -----------------------------------------------------------------------------------

    def load_entry(self, entry: LoreEntry | None) -> None:
        """Show `entry` in the form without counting it as an edit."""
        self.entry = entry
        form = self.query_one("#lore-form")
        form.disabled = entry is None
        if entry is None:
            return
        values: dict[str, str] = {
            "f-comment": entry.comment,
            "f-keys": ", ".join(entry.key),
            "f-keysecondary": ", ".join(entry.keysecondary),
            "f-depth": "" if entry.depth is None else str(entry.depth),
            "f-order": str(entry.order),
            "f-group": entry.group,
            "f-probability": "" if entry.probability is None else str(entry.probability),
        }
        for wid, value in values.items():
            field = self.query_one(f"#{wid}", Input)
            with field.prevent(Input.Changed):
                field.value = value
                field.cursor_position = len(value)
            field.remove_class("-invalid")
        selects: dict[str, int | str] = {
            "f-logic": entry.selective_logic if entry.selective_logic in dict(LOGICS).values() else 0,
            "f-position": entry.position if entry.position in dict(POSITIONS).values() else 0,
            "f-role": entry.role if entry.role in (0, 1, 2) else 0,
            "f-case_sensitive": _tri(entry.case_sensitive),
            "f-match_whole_words": _tri(entry.match_whole_words),
        }
        for wid, choice in selects.items():
            select = self.query_one(f"#{wid}", Select)
            with select.prevent(Select.Changed):
                select.value = choice
        for wid, flag in (("f-constant", entry.constant), ("f-disable", entry.disable)):
            box = self.query_one(f"#{wid}", Checkbox)
            with box.prevent(Checkbox.Changed):
                box.value = bool(flag)
        area = self.query_one("#f-content", TextArea)
        with area.prevent(TextArea.Changed):
            area.load_text(entry.content)

    def _set(self, attr: str, value: object) -> None:
        """Apply one field to the current entry; a real change marks the book modified."""
        entry = self.entry
        if entry is None or getattr(entry, attr) == value:
            return
        setattr(entry, attr, value)
        self.dirty = True
        self._status()
        if attr in ("comment", "key", "disable", "constant"):
            self._refresh_row(entry)

    _TEXT_FIELDS: ClassVar[dict[str, tuple[str, Callable[[str], object]]]] = {
        "f-comment": ("comment", lambda s: s),
        "f-keys": ("key", split_keys),
        "f-keysecondary": ("keysecondary", split_keys),
        "f-group": ("group", lambda s: s),
        "f-depth": ("depth", lambda s: _number(s, integer=True)),
        "f-order": ("order", lambda s: _number(s, integer=False)),
        "f-probability": ("probability", lambda s: _number(s, integer=False)),
    }

    @on(Input.Changed, "#lore-form Input")
    def _field_changed(self, event: Input.Changed) -> None:
        spec = self._TEXT_FIELDS.get(event.input.id or "")
        if spec is None:
            return
        attr, parse = spec
        try:
            value = parse(event.value)
            if attr == "order" and value is None:
                value = 100  # SillyTavern's default; an entry always has an order
            if attr == "probability" and isinstance(value, int | float) and not 0 <= value <= 100:
                raise ValueError("probability is 0 to 100")
        except ValueError:
            event.input.add_class("-invalid")
            return
        event.input.remove_class("-invalid")
        if attr == "key" or attr == "keysecondary":
            current = getattr(self.entry, attr, None)
            if current is not None and isinstance(value, list) and ", ".join(current) == ", ".join(value):
                return
        self._set(attr, value)

    @on(Select.Changed, "#lore-form Select")
    def _select_changed(self, event: Select.Changed) -> None:
        wid = event.select.id or ""
        if event.value is Select.NULL:
            return
        if wid == "f-logic":
            self._set("selective_logic", event.value)
        elif wid == "f-position":
            self._set("position", event.value)
        elif wid == "f-role":
            self._set("role", event.value)
        elif wid in ("f-case_sensitive", "f-match_whole_words"):
            self._set(wid[2:], _TRI_TO_VALUE[str(event.value)])

    @on(Checkbox.Changed, "#lore-form Checkbox")
    def _checkbox_changed(self, event: Checkbox.Changed) -> None:
        wid = event.checkbox.id or ""
        if wid in ("f-constant", "f-disable"):
            self._set(wid[2:], event.value)

    @on(TextArea.Changed, "#f-content")
    def _content_changed(self, event: TextArea.Changed) -> None:
        self._set("content", event.text_area.text)

    # -- actions --------------------------------------------------------------------------------

    def action_save(self) -> None:
        if self.book is None:
            return
        try:
            self.tavern.lorebooks.save(self.book, self.path)
        except TavernError as err:
            self.notify(str(err), severity="error")
            return
        self.dirty = False
        self._status()
        self.notify(f"Saved {self.path.name}")

    def action_new_entry(self) -> None:
        if self.book is None:
            return
        entry = LoreEntry(uid=self.book.next_uid(), comment="New entry")
        self.book.entries = [*self.book.entries, entry]
        self.dirty = True
        self.query_one("#lore-search", Input).value = ""  # the new entry must be visible
        self.apply_filter(keep=entry)
        self.query_one("#f-comment", Input).focus()

    def action_delete_entry(self) -> None:
        entry = self.entry
        if self.book is None or entry is None:
            return

        def done(yes: bool | None) -> None:
            if not yes or self.book is None:
                return
            index = next((i for i, e in enumerate(self.shown) if e is entry), 0)
            self.book.entries = [e for e in self.book.entries if e is not entry]
            self.dirty = True
            rest = [e for e in self.shown if e is not entry]
            self.entry = None
            self.apply_filter(keep=rest[min(index, len(rest) - 1)] if rest else None)
            self.notify(f"Deleted {entry.title} (not saved yet: Esc and discard to undo)")

        self.app.push_screen(ConfirmModal(f"Delete the entry '{entry.title}'?", "Delete"), done)

    def action_toggle_enabled(self) -> None:
        entry = self.entry
        if entry is None:
            return
        self._set("disable", not entry.disable)
        box = self.query_one("#f-disable", Checkbox)
        with box.prevent(Checkbox.Changed):
            box.value = entry.disable

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # Space types a space in the form; it toggles only from the list.
        return not (action == "toggle_enabled" and isinstance(self.focused, (Input, TextArea)))

    def action_leave(self) -> None:
        if not self.dirty:
            self.dismiss_screen()
            return

        def done(yes: bool | None) -> None:
            if yes:
                self.dismiss_screen()

        name = self.book.name if self.book else self.path.stem
        self.app.push_screen(ConfirmModal(f"Discard the unsaved changes to {name}?", "Discard"), done)

    def dismiss_screen(self) -> None:
        if self.app.screen is self and len(self.app.screen_stack) > 1:
            self.app.pop_screen()


class LoreBooksScreen(Screen):
    """The lorebooks in the data home (`lorebooks/*.json`); Enter edits one, n makes one."""

    DEFAULT_CSS = """
    LoreBooksScreen { layout: vertical; }
    LoreBooksScreen #books-status { height: 1; background: $panel; color: $text-muted; padding: 0 1; }
    LoreBooksScreen #books-list { height: 1fr; border: round $primary; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("n", "new_book", "New book", id="lorebooks.new"),
        Binding("escape", "back", "Back", id="lorebooks.back"),
    ]

    def __init__(self, tavern: Tavern) -> None:
        super().__init__()
        self.tavern = tavern
        self.paths: list[Path] = []

    @property
    def folder(self) -> Path:
        return Path(self.tavern.home.lorebooks)

    def compose(self) -> ComposeResult:
        yield Static("", id="books-status")
        yield OptionList(id="books-list")
        yield Footer()

    def on_mount(self) -> None:
        self.reload()
        self.query_one("#books-list", OptionList).focus()

    def on_screen_resume(self) -> None:
        if self.is_mounted:
            self.reload()

    def reload(self, keep: Path | None = None) -> None:
        folder = self.folder
        try:
            sized = self.tavern.lorebooks.sizes()
        except TavernError as err:
            sized = []
            self.notify(str(err), severity="error")
        self.paths = [p for p, _ in sized]
        options = self.query_one("#books-list", OptionList)
        old = options.highlighted
        options.clear_options()
        for p, size in sized:
            label = Text(p.stem)
            label.append(f"  {_size(size)}", style="dim")
            options.add_option(Option(label, id=str(p)))
        self.query_one("#books-status", Static).update(
            f"Lorebooks in {folder} — {len(self.paths)}" + ("" if self.paths else "  (n makes one)")
        )
        if self.paths:
            index = self.paths.index(keep) if keep in self.paths else min(old or 0, len(self.paths) - 1)
            options.highlighted = index

    @on(OptionList.OptionSelected, "#books-list")
    def _open(self, event: OptionList.OptionSelected) -> None:
        if event.option.id:
            self.app.push_screen(LoreEditorScreen(self.tavern, Path(event.option.id)))

    def action_new_book(self) -> None:
        def done(name: str | None) -> None:
            if name is None:
                return
            try:
                path = self.tavern.lorebooks.create(name)
            except TavernError as err:
                self.notify(str(err), severity="error")
                return
            self.reload(keep=path)
            self.app.push_screen(LoreEditorScreen(self.tavern, path))

        self.app.push_screen(TextPromptModal("Name of the new lorebook"), done)

    def action_back(self) -> None:
        if len(self.app.screen_stack) > 1:
            self.app.pop_screen()


def _size(n: int | None) -> str:
    if n is None:
        return ""
    return f"{n / 1024:.0f} KB" if n >= 1024 else f"{n} B"


__all__ = ["LOGICS", "POSITIONS", "LoreBooksScreen", "LoreEditorScreen"]
