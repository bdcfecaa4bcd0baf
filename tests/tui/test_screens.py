"""Settings, personas, the card editor and import, help, the command palette, keymap and
themes, on the real app at 80x24 (no model needed: its path points nowhere)."""

from __future__ import annotations

from pathlib import Path

from textual.command import CommandList, CommandPalette
from textual.widgets import Input, Select, TextArea
from tui.homes import offline
from tui.pilot_wait import waiter

from tavern.session import Tavern
from tavern.tui.app import make_app
from tavern.tui.screens.card_editor import CardEditorScreen, ImportScreen
from tavern.tui.screens.chat import ChatScreen
from tavern.tui.screens.help import HelpScreen
from tavern.tui.screens.library import LibraryScreen
from tavern.tui.screens.personas import PersonaScreen
from tavern.tui.screens.settings import SettingsScreen

DATA = Path(__file__).resolve().parents[1] / "data" / "cards"


wait_until = waiter(20.0)


def errors(app) -> list[str]:
    """The error notifications on screen, as the user reads them."""
    return [str(n.message) for n in app._notifications if n.severity == "error"]


def highlighted_command(app) -> str:
    """The command palette's highlighted command ("" while there is none)."""
    commands = app.screen.query(CommandList)
    if not commands or commands.first().highlighted is None:
        return ""
    option = commands.first().highlighted_option
    return getattr(option.prompt, "plain", str(option.prompt)) if option is not None else ""


async def library(pilot, app) -> LibraryScreen:
    await wait_until(pilot, lambda: isinstance(app.screen, LibraryScreen) and app.screen.card is not None)
    return app.screen


async def test_settings_screen_writes_settings_toml_and_keeps_comments(home: Path) -> None:
    tavern = offline(home)
    app = make_app(tavern)
    async with app.run_test(size=(80, 24)) as pilot:
        await library(pilot, app)
        await pilot.press("f10")
        await wait_until(pilot, lambda: isinstance(app.screen, SettingsScreen))
        screen = app.screen
        screen.query_one("#set-model-n_ctx", Input).value = "abc"
        await pilot.press("ctrl+s")  # a bad number: one error, nothing written
        bad = "Context size (tokens): 'abc' is not a number"
        await wait_until(pilot, lambda: bad in errors(app))
        assert errors(app).count(bad) == 1
        assert isinstance(app.screen, SettingsScreen)
        assert "n_ctx" not in (home / "settings.toml").read_text().split("[generation]")[0].replace(
            "n_ctx = 4096", ""
        )
        screen.query_one("#set-model-n_ctx", Input).value = "2048"
        screen.query_one("#set-generation-preset", Select).value = "Creative"
        screen.query_one("#set-generation-temperature", Input).value = "0.7"
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: isinstance(app.screen, LibraryScreen))
    text = (home / "settings.toml").read_text()
    assert "n_ctx = 2048" in text and 'preset = "Creative"' in text and "temperature = 0.7" in text
    assert text.startswith("# Tavern settings")  # the user's comments survive
    again = Tavern.open(home)
    assert again.settings.model.n_ctx == 2048 and again.settings.generation.temperature == 0.7


async def test_personas_are_made_and_used(home: Path) -> None:
    tavern = offline(home)
    app = make_app(tavern)
    async with app.run_test(size=(80, 24)) as pilot:
        await library(pilot, app)
        await pilot.press("f9")
        await wait_until(pilot, lambda: isinstance(app.screen, PersonaScreen))
        screen = app.screen
        await wait_until(pilot, lambda: app.focused is screen.query_one("#persona-name", Input))
        await pilot.press(*"Ada")
        screen.query_one("#persona-description", TextArea).text = "A cartographer from the north."
        await pilot.press("ctrl+u")
        await wait_until(pilot, lambda: tavern.settings.chat.user_name == "Ada")
    assert tavern.settings.chat.persona == "A cartographer from the north."
    assert 'user_name = "Ada"' in (home / "settings.toml").read_text()
    assert [p.name for p in tavern.personas.list()] == ["Ada"]


async def test_create_edit_and_import_characters(home: Path) -> None:
    tavern = offline(home)
    app = make_app(tavern)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await library(pilot, app)
        await pilot.press("f7")
        await wait_until(pilot, lambda: isinstance(app.screen, CardEditorScreen))
        editor = app.screen
        await pilot.press(*"Zed")
        editor.query_one("#card-first_mes", TextArea).text = '*nods* "Evening."'
        editor.query_one("#card-alternate_greetings", TextArea).text = "Hi.\n---\nHello again."
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: app.screen is screen)
        card = tavern.cards.library.get("Zed")
        assert card.first_mes == '*nods* "Evening."' and card.alternate_greetings == ["Hi.", "Hello again."]
        assert screen.current_key() == "Zed"

        await pilot.press("ctrl+e")
        await wait_until(pilot, lambda: isinstance(app.screen, CardEditorScreen))
        app.screen.query_one("#card-description", TextArea).text = "A quiet ferryman."
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: app.screen is screen)
        assert tavern.cards.library.get("Zed").description == "A quiet ferryman."

        await pilot.press("ctrl+o")
        await wait_until(pilot, lambda: isinstance(app.screen, ImportScreen))
        dialog = app.screen
        dialog.query_one(Input).value = str(DATA / "real")
        await pilot.press("enter")
        await wait_until(pilot, lambda: dialog.keys and not dialog.running)
        await pilot.press("escape")
        await wait_until(pilot, lambda: app.screen is screen)
    keys = {e.key for e in tavern.cards.library.list()}
    assert {"Seraphina", "Zed"} <= keys


async def test_help_palette_keymap_and_theme(home: Path) -> None:
    tavern = offline(home, **{"ui.keys": {"library.new": "ctrl+g"}, "ui.theme": "textual-light"})
    app = make_app(tavern)
    async with app.run_test(size=(80, 24)) as pilot:
        await library(pilot, app)
        assert app.theme == "textual-light"
        await pilot.press("f1")
        await wait_until(pilot, lambda: isinstance(app.screen, HelpScreen))
        body = app.screen.plain_text()
        assert "chat.regenerate" in body and "Ctrl+G" in body  # the user's key is listed
        await pilot.press("escape")
        await wait_until(pilot, lambda: isinstance(app.screen, LibraryScreen))

        await pilot.press("ctrl+p")
        await wait_until(pilot, lambda: isinstance(app.screen, CommandPalette) and app.screen.query(CommandList))
        await pilot.press(*"settings model")
        await wait_until(pilot, lambda: highlighted_command(app).startswith("Settings: model"))
        await pilot.press("enter")
        await wait_until(pilot, lambda: isinstance(app.screen, SettingsScreen))
        await pilot.press("escape")
        await wait_until(pilot, lambda: isinstance(app.screen, LibraryScreen))

        await pilot.press("ctrl+g")  # the rebound "new chat"
        await wait_until(pilot, lambda: isinstance(app.screen, ChatScreen))
        app.theme = "nord"
        await wait_until(pilot, lambda: 'theme = "nord"' in (home / "settings.toml").read_text())
    assert 'theme = "nord"' in (home / "settings.toml").read_text()
