"""Ctrl+O in the real app imports any SillyTavern file, not only cards: a lorebook (saved
beside a book of the same name), a chat (to the character its header names), and a bad file
(one red line). No model is loaded: its path points nowhere."""

from __future__ import annotations

import json
from pathlib import Path

from textual.widgets import Input, Static
from tui.pilot_wait import waiter

from tavern.session import Tavern
from tavern.tui.app import make_app
from tavern.tui.screens.card_editor import ImportScreen
from tavern.tui.screens.library import LibraryScreen

DATA = Path(__file__).resolve().parents[1] / "data"
SERAPHINA_CHAT = DATA / "chats" / "Seraphina" / "Seraphina - 2024-09-15@14h03m22s.jsonl"

wait_until = waiter(20.0)


def notes(app) -> list[str]:
    return [str(n.message) for n in app._notifications]


async def import_path(pilot, dialog: ImportScreen, path: Path) -> str:
    """Type a path into the open dialog, submit it, and return the report the user then reads."""
    report = dialog.query_one("#import-report", Static)
    report.update("")
    dialog.query_one("#import-path", Input).value = str(path)
    await pilot.press("enter")
    await wait_until(pilot, lambda: not dialog.running and "Esc closes" in str(report.content))
    return str(report.content)


async def test_ctrl_o_imports_a_lorebook_a_chat_and_says_what_each_became(tmp_path: Path) -> None:
    home = tmp_path / "home"
    tavern = Tavern.open(home, **{"model.path": str(home / "no-model.gguf")})
    bundled = tavern.home.lorebooks / "saltmere.json"
    before = bundled.read_bytes()
    book = tmp_path / "saltmere.json"
    book.write_text(json.dumps({"entries": {"0": {"uid": 0, "key": ["dock"], "content": "The dock."}}}))
    junk = tmp_path / "junk.json"
    junk.write_text('{"hello": "world"}')

    app = make_app(tavern)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until(pilot, lambda: isinstance(app.screen, LibraryScreen) and app.screen.card is not None)
        library = app.screen
        await pilot.press("ctrl+o")
        await wait_until(pilot, lambda: isinstance(app.screen, ImportScreen))
        dialog = app.screen

        shown = await import_path(pilot, dialog, book)
        assert "lorebook 'saltmere_1' imported" in shown and "kept both" in shown
        assert any("lorebook 'saltmere_1' imported" in n for n in notes(app))
        assert (tavern.home.lorebooks / "saltmere_1.json").is_file() and bundled.read_bytes() == before

        # A chat needs its character: the card first, then the chat finds Seraphina by itself.
        shown = await import_path(pilot, dialog, DATA / "cards" / "real" / "Seraphina.png")
        assert "character 'Seraphina' imported" in shown
        shown = await import_path(pilot, dialog, SERAPHINA_CHAT)
        assert "imported for Seraphina (9 messages)" in shown
        assert len(tavern.chats.list("Seraphina")) == 1

        shown = await import_path(pilot, dialog, junk)
        assert f"{junk}: not a card, lorebook, chat or preset" in shown
        assert any("not a card, lorebook, chat or preset" in n for n in notes(app))

        await pilot.press("escape")
        await wait_until(pilot, lambda: app.screen is library)
        await wait_until(pilot, lambda: library.current_key() == "Seraphina")  # the new card is chosen
