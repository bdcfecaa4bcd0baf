"""The character library screen at 80x24, driven with Pilot: list, search, greetings, rename,
duplicate, delete to the trash and undo, and the avatar. No model is loaded: the screen runs
in a small host app that records which chat the user asked for."""

from __future__ import annotations

from pathlib import Path

from textual import events
from textual.app import App
from textual.widgets import Input, OptionList, Static
from tui.pilot_wait import waiter

from tavern.cards.avatar import placeholder_avatar
from tavern.session import Tavern
from tavern.tui.screens.library import LibraryScreen
from tavern.tui.screens.library_search import parse_query
from tavern.tui.screens.modals import ConfirmModal, TextPromptModal
from tavern.tui.widgets.avatar import AvatarView, decode, half_block_rows

wait_until = waiter(10.0)


class Host(App):
    """Stands in for TavernApp: shows the library, records `open_character` calls."""

    def __init__(self, tavern: Tavern) -> None:
        super().__init__()
        self.tavern = tavern
        self.opened: list[tuple[str, bool, int]] = []
        self.notes: list[tuple[str, str]] = []

    def notify(self, message, *, severity="information", **kwargs) -> None:
        self.notes.append((severity, str(message)))
        super().notify(message, severity=severity, **kwargs)

    def on_mount(self) -> None:
        self.push_screen(LibraryScreen(self.tavern))

    def open_character(self, key: str, new: bool = False, greeting_index: int = 0) -> None:
        self.opened.append((key, new, greeting_index))


def rows(screen: LibraryScreen) -> list[str]:
    options = screen.query_one("#lib-list", OptionList)
    return [str(options.get_option_at_index(i).prompt) for i in range(options.option_count)]


def text_of(screen: LibraryScreen, selector: str) -> str:
    return str(screen.query_one(selector, Static).content)


async def started(pilot, app: Host) -> LibraryScreen:
    await wait_until(pilot, lambda: isinstance(app.screen, LibraryScreen))
    screen = app.screen
    await wait_until(pilot, lambda: screen.card is not None)
    return screen


async def test_lists_characters_and_searches_by_name_tag_and_creator(tmp_path: Path) -> None:
    tavern = Tavern.open(tmp_path / "home")
    app = Host(tavern)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await started(pilot, app)
        assert rows(screen) == ["Captain Ilse Varga", "Mira"]
        assert "2 characters" in text_of(screen, "#lib-status")
        # The preview shows the highlighted card: name, tags, creator, greeting.
        assert "Captain Ilse Varga" in text_of(screen, "#lib-info")
        assert "airship" in text_of(screen, "#lib-info")
        assert "Kestrel" in screen.greeting_text

        # Typing searches at once (the search box has the focus), and letters typed while the
        # list or the preview has the focus go there too: they never run a command, and the
        # search box taking the focus back does not select what was typed (the next letter
        # would replace it).
        await pilot.press(*"m")
        screen.query_one("#lib-list", OptionList).focus()
        await pilot.press(*"i")
        await pilot.click("#lib-preview")
        await pilot.press(*"r")
        # A remote terminal (textual-serve, SSH) delivers typing in bursts: the letters are all
        # on their way to the preview before the first one moves the focus.
        await pilot.click("#lib-preview")
        for letter in "a b":
            app.post_message(events.Key(letter if letter != " " else "space", letter))
        await wait_until(pilot, lambda: rows(screen) == [])
        assert screen.query_one("#lib-search", Input).value == "mira b"
        await pilot.press(*["backspace"] * 2)
        await wait_until(pilot, lambda: rows(screen) == ["Mira"])
        assert screen.query_one("#lib-search", Input).value == "mira"
        await wait_until(pilot, lambda: screen.card is not None and screen.card.name == "Mira")
        assert "1 of 2 characters" in text_of(screen, "#lib-status")

        search = screen.query_one("#lib-search", Input)
        search.value = "tag:airship"
        await wait_until(pilot, lambda: rows(screen) == ["Captain Ilse Varga"])
        search.value = "tag:fantasy creator:tavern"
        await wait_until(pilot, lambda: rows(screen) == ["Captain Ilse Varga", "Mira"])
        search.value = "creator:nobody"
        await wait_until(pilot, lambda: rows(screen) == [])
        assert "No characters match" in text_of(screen, "#lib-info")
        search.value = ""
        await wait_until(pilot, lambda: len(rows(screen)) == 2)


def test_query_syntax() -> None:
    q = parse_query('tag:"slice of life" creator:Tav  Mira')
    assert q.tags == ["slice of life"] and q.creators == ["tav"] and q.words == ["mira"]


async def test_greeting_picker_and_opening_chats(tmp_path: Path) -> None:
    tavern = Tavern.open(tmp_path / "home")
    app = Host(tavern)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await started(pilot, app)
        await pilot.press("down")  # Mira: a first message and two alternate greetings
        await wait_until(pilot, lambda: screen.card is not None and screen.card.name == "Mira")
        first = screen.greeting_text
        assert "waves a towel" in first
        assert "greeting 1 of 3" in text_of(screen, "#lib-picker")
        await pilot.press("alt+right")
        assert "greeting 2 of 3" in text_of(screen, "#lib-picker")
        second = screen.greeting_text
        assert second != first and second.strip()
        assert second.strip() in tavern.cards.library.get("Mira").alternate_greetings[0].replace("{{user}}", "User")
        await pilot.press("alt+left", "ctrl+left")
        assert "greeting 3 of 3" in text_of(screen, "#lib-picker")  # wraps around
        await pilot.press("ctrl+n")
        assert app.opened[-1] == ("Mira", True, 2)
        await pilot.press("enter")
        assert app.opened[-1] == ("Mira", False, 0)


async def test_rename_duplicate_delete_and_undo(tmp_path: Path) -> None:
    tavern = Tavern.open(tmp_path / "home")
    library = tavern.cards.library
    app = Host(tavern)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await started(pilot, app)
        await pilot.press("down")
        await wait_until(pilot, lambda: screen.card is not None and screen.card.name == "Mira")

        # F2: rename in a small dialog; the file keeps its key, the card its new name.
        await pilot.press("f2")
        await wait_until(pilot, lambda: isinstance(app.screen, TextPromptModal))
        app.screen.query_one(Input).value = ""
        await pilot.press(*"Mira the Innkeeper", "enter")
        await wait_until(pilot, lambda: "Mira the Innkeeper" in rows(screen))
        assert library.get("Mira").name == "Mira the Innkeeper"
        await wait_until(pilot, lambda: "Mira the Innkeeper" in text_of(screen, "#lib-info"))

        # Typed letters search; they do not duplicate ("Ed" once did), quit or open chats.
        await pilot.press(*"Ed", "backspace", "backspace")
        await pilot.pause(0.1)
        assert len(library.list()) == 2 and app.opened == []

        # F5: duplicate under a new key, highlighted at once.
        await pilot.press("f5")
        await wait_until(pilot, lambda: len(rows(screen)) == 3)
        keys = {e.key for e in library.list()}
        assert keys == {"Captain Ilse Varga", "Mira", "Mira_1"}
        assert screen.current_key() == "Mira_1"

        # F8 deletes, asking first; "n" keeps the card.
        await pilot.press("f8")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmModal))
        await pilot.press("n")
        await wait_until(pilot, lambda: app.screen is screen)
        assert len(library.list()) == 3

        # Confirmed, it goes to the trash; Ctrl+Z brings it back.
        await pilot.press("f8")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmModal))
        await pilot.press("y")
        await wait_until(pilot, lambda: len(rows(screen)) == 2)
        assert "Mira_1" not in {e.key for e in library.list()}
        assert len(library.trash()) == 1
        await pilot.press("ctrl+z")
        await wait_until(pilot, lambda: len(rows(screen)) == 3)
        assert "Mira_1" in {e.key for e in library.list()}
        assert library.trash() == []
        assert screen.current_key() == "Mira_1"
        await pilot.press("ctrl+z")  # nothing left to undo: a warning, no crash
        assert len(rows(screen)) == 3


async def test_errors_are_notifications(tmp_path: Path) -> None:
    tavern = Tavern.open(tmp_path / "home")
    (Path(tavern.home.characters) / "Broken.png").write_bytes(b"not a png at all")
    app = Host(tavern)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until(pilot, lambda: isinstance(app.screen, LibraryScreen))
        screen = app.screen
        # A damaged file is listed (marked) so the user can see and delete it.
        assert rows(screen)[0] == "⚠ Broken"
        await wait_until(pilot, lambda: "Cannot read this card" in text_of(screen, "#lib-info"))
        await pilot.press("down")
        await wait_until(pilot, lambda: screen.card is not None)
        await pilot.press("f2")
        await wait_until(pilot, lambda: isinstance(app.screen, TextPromptModal))
        app.screen.query_one(Input).value = "   "
        await pilot.press("enter")  # a blank name is refused by the library
        await wait_until(pilot, lambda: app.screen is screen)
        assert any(sev == "error" and "name" in msg for sev, msg in app.notes)
        assert [e.name for e in tavern.cards.library.list()] == ["Broken", "Captain Ilse Varga", "Mira"]


async def test_avatar_half_blocks_and_narrow_terminal(tmp_path: Path) -> None:
    image = decode(placeholder_avatar("Mira"))
    grid = half_block_rows(image, 16, 12)
    assert len(grid) == 12 and all(len(r) == 16 for r in grid)
    colours = {c for row in grid for cell in row for c in cell}
    assert len(colours) > 2  # the picture, not a blank box
    assert decode(b"not a png") is None and half_block_rows(None, 16, 12) == []

    tavern = Tavern.open(tmp_path / "home")
    app = Host(tavern)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await started(pilot, app)
        avatar = screen.query_one("#lib-avatar", AvatarView)
        await wait_until(pilot, lambda: avatar.has_image and avatar.display and avatar.size.width == 16)
        assert avatar.size.height == 12
        assert "▀" in "".join(str(line.text) for line in [avatar.render_line(0)])
        await pilot.resize_terminal(60, 24)
        await wait_until(pilot, lambda: not avatar.display)
        assert rows(screen) == ["Captain Ilse Varga", "Mira"]


async def test_the_real_app_starts_on_the_library_even_without_a_model(tmp_path: Path) -> None:
    from tavern.tui.app import make_app

    tavern = Tavern.open(tmp_path / "home", **{"model.path": str(tmp_path / "no-such-model.gguf")})
    app = make_app(tavern)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until(pilot, lambda: isinstance(app.screen, LibraryScreen))
        screen = app.screen
        await wait_until(pilot, lambda: "loading" not in app.engine_status)
        assert app.engine_status == "no model"
        assert rows(screen) == ["Captain Ilse Varga", "Mira"]
        await pilot.press(*"tag:inn")
        await wait_until(pilot, lambda: rows(screen) == ["Mira"])
        # F3: the lorebooks list, and back.
        from tavern.tui.screens.lore_editor import LoreBooksScreen

        screen.query_one("#lib-list", OptionList).focus()
        await pilot.press("f3")
        await wait_until(pilot, lambda: isinstance(app.screen, LoreBooksScreen))
        await pilot.press("escape")
        await wait_until(pilot, lambda: app.screen is screen)
