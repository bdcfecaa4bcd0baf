"""Snapshots of the main screens at 80x24 (pytest-textual-snapshot). After a deliberate
change of the look, refresh them with `pytest tests/tui/test_snapshots.py --snapshot-update`
and look at the SVGs it writes under tests/tui/__snapshots__/."""

from __future__ import annotations

from pathlib import Path

import pytest
from tui.pilot_wait import open_chat, waiter

from tavern.session import Tavern
from tavern.store import ChatMessage
from tavern.tui.app import make_app
from tavern.tui.screens.help import HelpScreen
from tavern.tui.screens.settings import SettingsScreen

pytest.importorskip("pytest_textual_snapshot")

wait_until = waiter(20.0)

NO_MODEL = "/nonexistent/model.gguf"  # a fixed path: the settings screen shows it


def app_for(home: Path, chat: bool = False):
    tavern = Tavern.open(home, **{"model.path": NO_MODEL})
    if chat:
        key, card = tavern.cards.find("Mira")
        c = tavern.chats.new(key, card)
        c.append(ChatMessage(name="User", is_user=True, mes='*leans on the bar* "Anything warm?"'))
        c.append(
            ChatMessage(
                name="Mira",
                is_user=False,
                mes='*slides a mug across* "Cider, **hot**." She taps the menu:\n\n'
                "- stew\n- bread\n\n```\nspecial: `fish pie`\n```",
            )
        )
        # A fixed name: the status bar shows the chat's name, which is the time it began.
        tavern.chats.store.rename(c, "Mira - 2024-09-15@14h03m22s")
    return make_app(tavern)


async def still(pilot) -> None:
    """No blinking cursors: a snapshot taken mid-blink would differ by chance."""
    from textual.widgets import Input, TextArea

    for field in pilot.app.screen.query(Input):
        field.cursor_blink = False
    for area in pilot.app.screen.query(TextArea):
        area.cursor_blink = False
    await pilot.pause()  # the repaint with the cursors shown steadily


async def settle(pilot) -> None:
    app = pilot.app
    from textual.widgets import Footer

    from tavern.tui.screens.library import LibraryScreen

    def settled() -> bool:  # the model has failed to load, the preview is read, the footer is up
        screen = app.screen
        return (
            app.engine_status == "no model"
            and isinstance(screen, LibraryScreen)
            and screen.card is not None
            and bool(screen.query(Footer))
        )

    await wait_until(pilot, settled)
    await app.workers.wait_for_complete()
    await pilot.pause()
    app.clear_notifications()
    await still(pilot)


def test_library_snapshot(home: Path, snap_compare) -> None:
    assert snap_compare(app_for(home), terminal_size=(80, 24), run_before=settle)


def test_chat_snapshot(home: Path, snap_compare) -> None:
    async def open_the_chat(pilot) -> None:
        await settle(pilot)
        await open_chat(pilot, wait_until, views=3)  # the greeting and the two messages
        await pilot.app.workers.wait_for_complete()
        pilot.app.clear_notifications()
        await still(pilot)

    assert snap_compare(app_for(home, chat=True), terminal_size=(80, 24), run_before=open_the_chat)


def test_settings_snapshot(home: Path, snap_compare) -> None:
    async def open_settings(pilot) -> None:
        await settle(pilot)
        await pilot.press("f10")
        await wait_until(
            pilot, lambda: isinstance(pilot.app.screen, SettingsScreen) and pilot.app.screen.query("#set-model-path")
        )
        await still(pilot)

    assert snap_compare(app_for(home), terminal_size=(80, 24), run_before=open_settings)


def test_help_snapshot(home: Path, snap_compare) -> None:
    async def open_help(pilot) -> None:
        await settle(pilot)
        await pilot.press("f1")
        await wait_until(pilot, lambda: isinstance(pilot.app.screen, HelpScreen))

    assert snap_compare(app_for(home), terminal_size=(80, 24), run_before=open_help)
