"""The lorebook editor at 80x24, driven with Pilot: edits land in the file after ctrl+s (read
back with load_lorebook), entries are toggled, created and deleted, unsaved changes are guarded,
and the lorebooks list opens and creates books."""

from __future__ import annotations

from pathlib import Path

from textual.app import App
from textual.widgets import Checkbox, Input, OptionList, Select, Static, TextArea
from tui.pilot_wait import waiter

from tavern.lore import Lorebook, LoreEntry, load_lorebook, save_lorebook
from tavern.session import Tavern
from tavern.tui.screens.lore_editor import LoreBooksScreen, LoreEditorScreen
from tavern.tui.screens.modals import ConfirmModal, TextPromptModal

wait_until = waiter(10.0)


class Host(App):
    def __init__(self, tavern: Tavern, screen_factory) -> None:
        super().__init__()
        self.tavern = tavern
        self.screen_factory = screen_factory

    def on_mount(self) -> None:
        self.push_screen(self.screen_factory(self.tavern))


def make_book(tavern: Tavern) -> Path:
    path = Path(tavern.home.lorebooks) / "Harbor.json"
    book = Lorebook(
        name="Harbor",
        entries=[
            LoreEntry(uid=0, key=["harbor", "docks"], comment="The harbor", content="Ships come and go."),
            LoreEntry(uid=1, key=["kestrel"], comment="The Kestrel", content="An old airship."),
            LoreEntry(uid=2, key=["mira"], comment="Mira", content="Runs the inn.", disable=True),
        ],
        extra={"name": "Harbor"},
    )
    save_lorebook(book, path)
    return path


def rows(screen: LoreEditorScreen) -> list[str]:
    options = screen.query_one("#lore-list", OptionList)
    return [str(options.get_option_at_index(i).prompt) for i in range(options.option_count)]


async def open_editor(pilot, app: Host) -> LoreEditorScreen:
    await wait_until(pilot, lambda: isinstance(app.screen, LoreEditorScreen) and app.screen.book is not None)
    return app.screen


async def test_edits_persist_after_ctrl_s(tmp_path: Path) -> None:
    tavern = Tavern.open(tmp_path / "home")
    path = make_book(tavern)
    app = Host(tavern, lambda t: LoreEditorScreen(t, path))
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_editor(pilot, app)
        assert [r.split("  ")[0] for r in rows(screen)] == ["✓ The harbor", "✓ The Kestrel", "✗ Mira"]
        await pilot.press("down")
        await wait_until(pilot, lambda: screen.entry is not None and screen.entry.uid == 1)
        assert screen.query_one("#f-keys", Input).value == "kestrel"
        assert not screen.dirty  # loading an entry is not an edit

        # Keys: type into the comma-separated field.
        keys = screen.query_one("#f-keys", Input)
        keys.focus()
        await pilot.press("end", *", sky")
        await wait_until(pilot, lambda: screen.entry.key == ["kestrel", "sky"])
        keys.value = "kestrel, airship, /sky ?ship/i"  # set whole, as a paste would
        await wait_until(pilot, lambda: screen.entry.key == ["kestrel", "airship", "/sky ?ship/i"])
        assert screen.dirty
        assert "unsaved" in str(screen.query_one("#lore-status", Static).content)

        # Content, position, depth, order, probability, constant, case.
        area = screen.query_one("#f-content", TextArea)
        area.focus()
        await pilot.press("end", *" Fly!")
        screen.query_one("#f-position", Select).value = 4
        depth = screen.query_one("#f-depth", Input)
        depth.focus()
        await pilot.press("backspace", "2")
        order = screen.query_one("#f-order", Input)
        order.value = "250"
        screen.query_one("#f-probability", Input).value = "abc"  # not a number: refused, marked
        screen.query_one("#f-constant", Checkbox).value = True
        screen.query_one("#f-case_sensitive", Select).value = "yes"
        screen.query_one("#f-logic", Select).value = 3
        await wait_until(pilot, lambda: screen.entry.constant and screen.entry.case_sensitive is True)
        assert screen.query_one("#f-probability", Input).has_class("-invalid")

        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: not screen.dirty)

    saved = load_lorebook(path)
    e = saved.entry(1)
    assert e.key == ["kestrel", "airship", "/sky ?ship/i"]
    assert e.content == "An old airship. Fly!"
    assert (e.position, e.depth, e.order, e.probability) == (4, 2, 250, 100)
    assert e.constant is True and e.case_sensitive is True and e.selective_logic == 3
    assert e.match_whole_words is None  # untouched tri-state stays "use the global setting"
    assert saved.entry(0).content == "Ships come and go."  # other entries untouched
    assert saved.extra.get("name") == "Harbor"


async def test_toggle_new_and_delete_entries(tmp_path: Path) -> None:
    tavern = Tavern.open(tmp_path / "home")
    path = make_book(tavern)
    app = Host(tavern, lambda t: LoreEditorScreen(t, path))
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_editor(pilot, app)
        # Space on the list toggles the highlighted entry.
        await pilot.press("space")
        assert screen.entry.uid == 0 and screen.entry.disable is True
        assert rows(screen)[0].startswith("✗")
        assert screen.query_one("#f-disable", Checkbox).value is True
        await pilot.press("down", "down", "ctrl+e")  # Mira was disabled: now enabled
        assert screen.entry.uid == 2 and screen.entry.disable is False

        # ctrl+n: a new entry, highlighted, its title field focused.
        await pilot.press("ctrl+n")
        await wait_until(pilot, lambda: len(rows(screen)) == 4)
        assert screen.entry.uid == 3
        assert screen.focused is screen.query_one("#f-comment", Input)
        screen.query_one("#f-comment", Input).value = "Lighthouse"
        screen.query_one("#f-keys", Input).value = "lighthouse, beacon"
        await wait_until(pilot, lambda: screen.entry.key == ["lighthouse", "beacon"])
        assert "Lighthouse" in rows(screen)[3]

        # Delete the Kestrel (confirmed).
        screen.query_one("#lore-list", OptionList).focus()
        screen.query_one("#lore-list", OptionList).highlighted = 1
        await wait_until(pilot, lambda: screen.entry.uid == 1)
        await pilot.press("delete")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmModal))
        await pilot.press("y")
        await wait_until(pilot, lambda: len(rows(screen)) == 3)
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: not screen.dirty)

    saved = load_lorebook(path)
    assert [(e.uid, e.comment, e.disable) for e in saved.entries] == [
        (0, "The harbor", True),
        (2, "Mira", False),
        (3, "Lighthouse", False),
    ]
    assert saved.entry(3).key == ["lighthouse", "beacon"]


async def test_search_and_unsaved_changes_guard(tmp_path: Path) -> None:
    tavern = Tavern.open(tmp_path / "home")
    path = make_book(tavern)
    before = path.read_bytes()
    app = Host(tavern, lambda t: LoreBooksScreen(t))
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until(pilot, lambda: isinstance(app.screen, LoreBooksScreen))
        books = app.screen
        assert path in books.paths  # beside the bundled books
        books.query_one("#books-list", OptionList).highlighted = books.paths.index(path)
        await pilot.press("enter")  # opens the highlighted book
        screen = await open_editor(pilot, app)

        await pilot.press("slash", *"airs")  # searches content too
        await wait_until(pilot, lambda: len(rows(screen)) == 1 and "Kestrel" in rows(screen)[0])
        screen.query_one("#lore-search", Input).value = ""
        await wait_until(pilot, lambda: len(rows(screen)) == 3)

        screen.query_one("#f-comment", Input).value = "Changed"
        await wait_until(pilot, lambda: screen.dirty)
        screen.query_one("#lore-list", OptionList).focus()
        await pilot.press("escape")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmModal))
        await pilot.press("n")  # keep editing
        await wait_until(pilot, lambda: app.screen is screen)
        await pilot.press("escape")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmModal))
        await pilot.press("y")  # discard
        await wait_until(pilot, lambda: app.screen is books)
        assert path.read_bytes() == before

        # n: a new, empty book, opened in the editor.
        await pilot.press("n")
        await wait_until(pilot, lambda: isinstance(app.screen, TextPromptModal))
        await pilot.press(*"Sky Lore", "enter")
        screen = await open_editor(pilot, app)
        assert screen.path.name == "Sky Lore.json" and rows(screen) == []
        await pilot.press("escape")
        await wait_until(pilot, lambda: app.screen is books)
        assert {"Harbor.json", "Sky Lore.json"} <= {p.name for p in books.paths}
    assert load_lorebook(Path(tavern.home.lorebooks) / "Sky Lore.json").entries == []


async def test_a_broken_book_is_a_notification(tmp_path: Path) -> None:
    tavern = Tavern.open(tmp_path / "home")
    bad = Path(tavern.home.lorebooks) / "Broken.json"
    bad.write_text("{not json", encoding="utf-8")
    app = Host(tavern, lambda t: LoreEditorScreen(t, bad))
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until(pilot, lambda: isinstance(app.screen, LoreEditorScreen))
        screen = app.screen
        await wait_until(
            pilot, lambda: "cannot open" in str(screen.query_one("#lore-status", Static).content)
        )
        await pilot.press("ctrl+s", "ctrl+n")  # nothing to act on: no crash, no file written
    assert bad.read_text(encoding="utf-8") == "{not json"
