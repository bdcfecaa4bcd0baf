"""The character library: find a character, see its picture and greetings, open a chat.

Callers: `TavernApp` pushes `LibraryScreen(tavern)` first. Every change goes through
`tavern.cards.library` (a `tavern.cards.CardLibrary`): rename, duplicate, delete to the trash and
undo (restore). Errors become notifications; nothing here writes files itself.

Layout at 80x24: a search box and the list on the left (~30 columns), the preview on the right
(picture 16x12 cells, hidden below 70 columns; name, tags, creator; the chosen greeting). The
list is an `OptionList`, which draws only the rows on screen, so a thousand cards scroll as
fast as ten. The card and picture of the highlighted row are read in a thread worker, so
holding the arrow key over big PNGs never freezes the screen.

Search syntax (library_search.py): words are matched against name, key, creator and tags;
`tag:x` keeps cards with a tag starting with x, `creator:x` cards whose creator contains x
(both repeatable, quotes allowed: `tag:"sci fi"`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Protocol, cast

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.content import Content
from textual.events import Key, Resize
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import Footer, Input, OptionList, Static
from textual.widgets.option_list import Option

from tavern.errors import TavernError
from tavern.tui.screens.library_search import greetings_of, matches, parse_query, substitute_greeting
from tavern.tui.screens.modals import ConfirmModal, TextPromptModal
from tavern.tui.widgets.avatar import AvatarView, decode

if TYPE_CHECKING:
    from tavern.cards.index import CardEntry
    from tavern.cards.model import Card
    from tavern.session import Tavern
    from tavern.tui.boot import Boot
    from tavern.tui.widgets.avatar import Decoded

NARROW = 70
"""Below this many columns the picture is hidden: the text needs the room more."""
LABEL_WIDTH = 26
DEBOUNCE_ABOVE = 300
"""Libraries bigger than this are filtered after a short pause in typing."""
DEBOUNCE_SECONDS = 0.15


class LibraryHost(Protocol):
    """What the library needs from the app it runs in (tavern.tui.app.TavernApp)."""

    @property
    def tavern(self) -> Tavern: ...

    def open_character(self, key: str, new: bool = False, greeting_index: int = 0) -> None: ...


class LibraryScreen(Screen[None]):
    DEFAULT_CSS = """
    LibraryScreen { layout: vertical; }
    LibraryScreen #lib-status { height: 1; background: $panel; color: $text-muted; padding: 0 1; }
    LibraryScreen #lib-body { height: 1fr; }
    LibraryScreen #lib-left { width: 30; height: 1fr; }
    LibraryScreen #lib-search { width: 1fr; margin: 0 0 0 0; }
    LibraryScreen #lib-list { height: 1fr; border: round $primary; }
    LibraryScreen #lib-list:focus { border: round $accent; }
    LibraryScreen #lib-preview { width: 1fr; height: 1fr; border: round $secondary; padding: 0 1; }
    LibraryScreen #lib-top { height: auto; }
    LibraryScreen #lib-avatar { width: 16; height: 12; margin-right: 1; }
    LibraryScreen #lib-avatar.-hidden { display: none; }
    LibraryScreen #lib-info { width: 1fr; height: auto; }
    LibraryScreen #lib-picker { height: 1; margin-top: 1; color: $accent; }
    LibraryScreen #lib-greeting { height: auto; }
    """
    # Typing always searches: no binding here is a printable key. (Letters typed while the list
    # has the focus go to the search box too.)
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "open", "Chat", id="library.open", show=False),
        Binding("ctrl+n", "new_chat", "New chat", id="library.new", priority=True),
        Binding("up", "move(-1)", show=False, priority=True),
        Binding("down", "move(1)", show=False, priority=True),
        Binding("pageup", "move(-10)", show=False, priority=True),
        Binding("pagedown", "move(10)", show=False, priority=True),
        Binding(
            "alt+left,ctrl+left",
            "greeting(-1)",
            "Greeting",
            id="library.greeting_prev",
            show=False,
            priority=True,
        ),
        Binding(
            "alt+right,ctrl+right",
            "greeting(1)",
            "Greeting",
            id="library.greeting_next",
            priority=True,
            show=False,
        ),
        Binding("left", "greeting(-1)", show=False),
        Binding("right", "greeting(1)", show=False),
        Binding("ctrl+e", "edit_card", "Edit", id="library.edit", priority=True),
        Binding("ctrl+o", "import_card", "Import", id="library.import", priority=True),
        Binding("f7", "create_card", "New character", id="library.create", priority=True, show=False),
        Binding("f2", "rename", "Rename", id="library.rename", priority=True, show=False),
        Binding("f5", "duplicate", "Duplicate", id="library.duplicate", show=False),
        Binding("f8", "delete", "Delete", id="library.delete", priority=True, show=False),
        Binding("delete", "delete", show=False),
        Binding("ctrl+z", "undo", "Undo delete", id="library.undo", show=False, priority=True),
        Binding("f3", "lorebooks", "Lorebooks", id="library.lorebooks", priority=True),
        Binding("escape", "clear_search", show=False),
    ]

    def __init__(self, tavern: Tavern | None = None, boot: Boot | None = None) -> None:
        super().__init__()
        self._tavern = tavern
        self.boot = boot
        self._preview_ready = False
        """The preview pane's widgets are mounted (right after the first frame)."""
        self._nothing: str | None = None
        """What the empty preview says (no characters, none matching), while it says that."""
        self._from_index: list[CardEntry] | None = None
        """The first frame shows the list only; the card and picture are read after it."""
        self.entries: list[CardEntry] = []
        """Every character, as listed by the library (CardEntry)."""
        self.shown: list[CardEntry] = []
        """The entries the search lets through, in list order."""
        self.card: Card | None = None
        """The card of the highlighted row, once read (None while reading or unreadable)."""
        self.card_key: str | None = None
        self.greetings: list[str] = []
        self.greeting_index = 0
        self._labels: dict[tuple[str, str, bool], Content] = {}
        self._filter_timer: Timer | None = None
        self._last_key: str | None = None
        self.deleted: list[tuple[str, str]] = []
        """(trash file name, display name) of this session's deletions, newest last (undo)."""

    # -- layout ---------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield Static("Tavern — characters", id="lib-status")
        with Horizontal(id="lib-body"):
            with Vertical(id="lib-left"):
                # Letters typed elsewhere are moved here (on_key): selecting the text when the
                # box takes the focus back would let the next letter replace them.
                yield Input(
                    placeholder="search  tag:x  creator:y",
                    id="lib-search",
                    compact=True,
                    select_on_focus=False,
                )
                yield OptionList(id="lib-list")
            # The preview's contents and the footer (a widget per key hint) are mounted right
            # after the first frame: the card is only read then anyway, and together they cost
            # about as much as the rest of the screen. The list is what a user looks at first.
            yield VerticalScroll(id="lib-preview")

    @property
    def tavern_app(self) -> LibraryHost:
        """`self.app` as what this screen needs of it."""
        # The screen runs inside TavernApp, which has these (the checker sees only an App).
        return cast(LibraryHost, self.app)

    @property
    def tavern(self) -> Tavern:
        return self._tavern if self._tavern is not None else self.tavern_app.tavern

    def on_mount(self) -> None:
        self.reload()
        self.query_one("#lib-search", Input).focus()
        # Heavy work (the footer, the thread that opens the Tavern) waits until the terminal
        # has the first frame, or it would delay it.
        after_frame = getattr(self.app, "after_frame", self.call_after_refresh)
        after_frame(self._first_frame_shown)

    async def _first_frame_shown(self) -> None:
        await self._mount_preview()
        if not self.query(Footer):
            self.mount(Footer())
            # A footer mounted late shows no keys until the bindings are announced again.
            self.call_after_refresh(self.refresh_bindings)
        starter = getattr(self.app, "first_frame_shown", None)
        if starter is not None:
            starter()  # now open the Tavern, then the model
        if self.card_key is not None:
            self._read_card(self.card_key)

    async def _mount_preview(self) -> None:
        if self._preview_ready:
            return
        await self.query_one("#lib-preview", VerticalScroll).mount(
            Horizontal(AvatarView(id="lib-avatar"), Static("", id="lib-info"), id="lib-top"),
            Static("", id="lib-picker"),
            Static("", id="lib-greeting"),
        )
        self._preview_ready = True
        self._place_avatar()
        if self._nothing is not None:
            self._show_nothing(self._nothing)

    def tavern_opened(self) -> None:
        """The app opened the Tavern after the first frame: list through the library now
        when the first frame had to make do with a stale index (or none)."""
        if self._from_index is None:
            self.reload(keep=self.current_key())

    def on_key(self, event: Key) -> None:
        # Letters typed while the list or the preview has the focus go to the search box. A
        # printable key only gets here when the search box did not take it (it takes them all),
        # so the focus is not checked: typing arrives in bursts, and the letters behind the
        # first are already on their way here when it moves the focus.
        if event.is_printable and event.character:
            event.stop()
            event.prevent_default()
            search = self.query_one("#lib-search", Input)
            self.set_focus(search)
            search.insert_text_at_cursor(event.character)

    def action_move(self, step: int) -> None:
        options = self.query_one("#lib-list", OptionList)
        if options.option_count:
            now = options.highlighted if options.highlighted is not None else 0
            options.highlighted = max(0, min(options.option_count - 1, now + step))

    def action_clear_search(self) -> None:
        search = self.query_one("#lib-search", Input)
        if search.value:
            search.value = ""

    def on_screen_resume(self) -> None:
        # Back from a chat (or another screen): the folder may have changed. (The first resume
        # comes with the first frame, right after on_mount listed the folder.)
        if self._preview_ready and self.entries:
            self.reload(keep=self.current_key())

    @on(Resize)
    def _resized(self, event: Resize) -> None:
        self._place_avatar()

    def _place_avatar(self) -> None:
        """No picture (or a narrow terminal): give its columns to the text."""
        if not self._preview_ready:
            return
        avatar = self.query_one("#lib-avatar", AvatarView)
        avatar.set_class(self.size.width < NARROW or not avatar.has_image, "-hidden")

    # -- listing --------------------------------------------------------------------------------

    def reload(self, keep: str | None = None) -> None:
        """Re-list the folder and re-apply the search; highlight `keep` if it is still shown."""
        self._from_index = None
        if self._tavern is None and not getattr(self.app, "tavern_ready", True):
            from tavern.tui.boot import first_listing

            self._from_index = first_listing(self.boot.home) if self.boot else None
            if self._from_index is None:
                self.query_one("#lib-status", Static).update("Tavern — opening the library…")
                return
            self.entries = self._from_index
            self.apply_filter(keep=keep)
            return
        try:
            self.entries = self.tavern.cards.library.list()
        except TavernError as err:
            self.entries = []
            self.notify(str(err), severity="error")
        self.apply_filter(keep=keep)

    def apply_filter(self, keep: str | None = None) -> None:
        q = parse_query(self.query_one("#lib-search", Input).value)
        self.shown = [e for e in self.entries if matches(e, q)]
        options = self.query_one("#lib-list", OptionList)
        options.clear_options()
        options.add_options([Option(self._label(e), id=e.key) for e in self.shown])
        n, total = len(self.shown), len(self.entries)
        count = f"{total} characters" if n == total else f"{n} of {total} characters"
        self.query_one("#lib-status", Static).update(f"Tavern — {count}")
        if not self.shown:
            self._show_nothing(
                "No characters match." if self.entries else "No characters yet: import a card."
            )
            return
        # A search that matched nothing for a moment must not lose the user's place.
        keep = keep or self._last_key
        index = next((i for i, e in enumerate(self.shown) if e.key == keep), 0)
        options.highlighted = index
        # OptionHighlighted is not sent when the index stays the same: load the preview anyway.
        self.load_preview(self.shown[index].key)

    def _label(self, entry: CardEntry) -> Content:
        """The row for an entry, cached: with a thousand cards every keystroke in the search
        rebuilds the list, and building the rows was a good part of that."""
        cache_key = (entry.key, entry.name, entry.error is not None)
        label = self._labels.get(cache_key)
        if label is None:
            # OptionList wraps a long prompt onto more lines: cut it to the list's width instead.
            name = entry.name if len(entry.name) <= LABEL_WIDTH else entry.name[: LABEL_WIDTH - 1] + "…"
            if entry.error is not None:
                label = Content.from_markup("[bold red]⚠[/] $name", name=name[: LABEL_WIDTH - 2])
            else:
                label = Content(name)
            self._labels[cache_key] = label
        return label

    def current_key(self) -> str | None:
        options = self.query_one("#lib-list", OptionList)
        if options.highlighted is None or not self.shown:
            return None
        return options.get_option_at_index(options.highlighted).id

    @on(Input.Changed, "#lib-search")
    def _search_changed(self, event: Input.Changed) -> None:
        # A big library is re-filtered once typing pauses, not on every key.
        if self._filter_timer is not None:
            self._filter_timer.stop()
            self._filter_timer = None
        if len(self.entries) <= DEBOUNCE_ABOVE:
            self.apply_filter(keep=self.current_key())
        else:
            self._filter_timer = self.set_timer(
                DEBOUNCE_SECONDS, lambda: self.apply_filter(keep=self.current_key())
            )

    @on(Input.Submitted, "#lib-search")
    def _search_submitted(self, event: Input.Submitted) -> None:
        self.action_open()

    def action_search(self) -> None:
        self.query_one("#lib-search", Input).focus()

    # -- preview --------------------------------------------------------------------------------

    @on(OptionList.OptionHighlighted, "#lib-list")
    def _highlighted(self, event: OptionList.OptionHighlighted) -> None:
        if event.option.id:
            self._last_key = event.option.id
            self.load_preview(event.option.id)

    def load_preview(self, key: str) -> None:
        self._nothing = None
        if key == self.card_key and self.card is not None:
            return
        self.card_key = key
        self.card = None
        if self._preview_ready:
            self._read_card(key)

    @work(thread=True, exclusive=True, group="library-preview", exit_on_error=False)
    def _read_card(self, key: str) -> None:
        try:
            card, avatar = self.tavern.cards.library.get_with_avatar(key)
        except TavernError as err:
            self.app.call_from_thread(self._show_error, key, str(err))
            return
        decoded = decode(avatar)  # the costly part, kept off the UI thread
        self.app.call_from_thread(self._show_card, key, card, avatar, decoded)

    def _show_error(self, key: str, error: str) -> None:
        if key != self.card_key:
            return  # the user moved on
        self.card, self.greetings = None, []
        self.query_one("#lib-avatar", AvatarView).set_image(None)
        self._place_avatar()
        self.query_one("#lib-info", Static).update(Text(f"Cannot read this card:\n{error}", style="red"))
        self.query_one("#lib-picker", Static).update("")
        self.query_one("#lib-greeting", Static).update("")

    def _show_nothing(self, message: str) -> None:
        self.card, self.card_key, self.greetings = None, None, []
        self._nothing = message
        if not self._preview_ready:
            return
        self.query_one("#lib-avatar", AvatarView).set_image(None)
        self._place_avatar()
        self.query_one("#lib-info", Static).update(Text(message, style="dim"))
        self.query_one("#lib-picker", Static).update("")
        self.query_one("#lib-greeting", Static).update("")

    def _show_card(self, key: str, card: Card, avatar: bytes | None, decoded: Decoded) -> None:
        if key != self.card_key:
            return
        self.card = card
        self.greetings = greetings_of(card)
        self.greeting_index = 0
        self.query_one("#lib-avatar", AvatarView).set_image(avatar, decoded)
        self._place_avatar()
        info = Text()
        info.append(card.name, style="bold")
        if key != card.name:
            info.append(f"  ({key})", style="dim")
        if card.tags:
            info.append("\n" + ", ".join(card.tags), style="italic")
        if card.creator:
            info.append(f"\nby {card.creator}", style="dim")
        if card.creator_notes.strip():
            notes = card.creator_notes.strip().splitlines()[0]
            info.append("\n" + (notes[:200] + "…" if len(notes) > 200 else notes), style="dim")
        self.query_one("#lib-info", Static).update(info)
        self._show_greeting()

    def _show_greeting(self) -> None:
        picker = self.query_one("#lib-picker", Static)
        body = self.query_one("#lib-greeting", Static)
        if self.card is None:
            return
        if not self.greetings:
            picker.update("")
            body.update(Text("(no greeting: the chat starts empty)", style="dim"))
            return
        n = len(self.greetings)
        if n > 1:
            picker.update(Text(f"◀ greeting {self.greeting_index + 1} of {n} ▶  (Alt+←/→; Ctrl+N new chat)"))
        else:
            picker.update(Text("greeting   (Enter: latest chat, Ctrl+N: new chat)"))
        user = self.tavern.settings.chat.user_name
        body.update(Text(substitute_greeting(self.greetings[self.greeting_index], self.card.name, user)))

    @property
    def greeting_text(self) -> str:
        """The greeting as shown (for tests and the command palette)."""
        if not self._preview_ready:
            return ""
        return str(self.query_one("#lib-greeting", Static).content)

    def action_greeting(self, step: int) -> None:
        if len(self.greetings) > 1:
            self.greeting_index = (self.greeting_index + step) % len(self.greetings)
            self._show_greeting()

    # -- opening --------------------------------------------------------------------------------

    @on(OptionList.OptionSelected, "#lib-list")
    def _selected(self, event: OptionList.OptionSelected) -> None:
        if event.option.id:
            self.tavern_app.open_character(event.option.id)

    def action_open(self) -> None:
        key = self.current_key()
        if key:
            self.tavern_app.open_character(key)

    def action_new_chat(self) -> None:
        key = self.current_key()
        if not key:
            return
        # The picker's index only means something once that card's greetings are loaded.
        index = self.greeting_index if key == self.card_key and self.card is not None else 0
        self.tavern_app.open_character(key, new=True, greeting_index=index)

    def action_lorebooks(self) -> None:
        from tavern.tui.screens.lore_editor import LoreBooksScreen

        self.app.push_screen(LoreBooksScreen(self.tavern))

    # -- changes --------------------------------------------------------------------------------

    def _entry(self, key: str) -> CardEntry | None:
        return next((e for e in self.entries if e.key == key), None)

    def action_rename(self) -> None:
        key = self.current_key()
        if not key:
            return
        entry = self._entry(key)
        name = entry.name if entry else key

        def done(new_name: str | None) -> None:
            if new_name is None or new_name == name:
                return
            try:
                self.tavern.cards.library.rename(key, new_name)
            except TavernError as err:
                self.notify(str(err), severity="error")
                return
            self.card_key = None  # re-read the preview
            self.reload(keep=key)
            self.notify(f"Renamed to {new_name}")

        self.app.push_screen(
            TextPromptModal(f"Rename {name} (the file and chats keep key '{key}')", name), done
        )

    def action_duplicate(self) -> None:
        key = self.current_key()
        if not key:
            return
        try:
            new_key = self.tavern.cards.library.duplicate(key)
        except TavernError as err:
            self.notify(str(err), severity="error")
            return
        self.reload(keep=new_key)
        self.notify(f"Duplicated as {new_key}")

    def action_delete(self) -> None:
        key = self.current_key()
        if not key:
            return
        entry = self._entry(key)
        name = entry.name if entry else key

        def done(yes: bool | None) -> None:
            if not yes:
                return
            # Keep the cursor where it was: on the next row, or the last one.
            index = next((i for i, e in enumerate(self.shown) if e.key == key), 0)
            try:
                trash_name = self.tavern.cards.library.delete(key)
            except TavernError as err:
                self.notify(str(err), severity="error")
                return
            self.deleted.append((trash_name, name))
            rest = [e.key for e in self.shown if e.key != key]
            self.card_key = None
            self.reload(keep=rest[min(index, len(rest) - 1)] if rest else None)
            self.notify(f"{name} moved to the trash — Ctrl+Z brings it back")

        self.app.push_screen(
            ConfirmModal(f"Move {name} to the trash? (Ctrl+Z brings it back; chats are kept)", "Delete"), done
        )

    def action_undo(self) -> None:
        if not self.deleted:
            self.notify("Nothing to undo", severity="warning")
            return
        trash_name, name = self.deleted[-1]
        try:
            key = self.tavern.cards.library.restore(trash_name)
        except TavernError as err:
            self.notify(str(err), severity="error")
            return
        self.deleted.pop()
        self.reload(keep=key)
        self.notify(f"{name} restored")

    # -- import, create, edit (the card editor and the library service do the work) ---------------

    def action_import_card(self) -> None:
        from tavern.tui.screens.card_editor import ImportScreen

        def done(keys: list[str] | None) -> None:
            if keys:
                self.reload(keep=keys[-1])

        self.app.push_screen(ImportScreen(self.tavern), done)

    def action_create_card(self) -> None:
        self._edit(None)

    def action_edit_card(self) -> None:
        key = self.current_key()
        if key:
            self._edit(key)

    def _edit(self, key: str | None) -> None:
        from tavern.tui.screens.card_editor import CardEditorScreen

        def done(saved: str | None) -> None:
            if saved:
                self.card_key = None
                self.reload(keep=saved)

        self.app.push_screen(CardEditorScreen(self.tavern, key), done)
