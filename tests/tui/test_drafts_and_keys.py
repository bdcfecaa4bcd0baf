"""Issue #27 items 1-4 on the real app through Pilot at 80x24 (and 60x20): Alt+Enter as a
terminal sends it, drafts that survive leaving a chat (and a restart), Tab and Esc, the undo of
an impersonation, keys typed while a screen opens, and which chat Enter in the library opens.

Keys that a terminal sends as one burst are fed as raw bytes through Textual's own input parser
(the one the terminal driver runs) and handed to the app without waiting between them, as a
terminal delivers them; Pilot's `press` waits for the app to go idle after every key, which
hides both the ESC CR parse and the keys lost while a screen opens."""

from __future__ import annotations

from pathlib import Path

from textual import events
from textual._xterm_parser import XTermParser
from textual.widgets import Input
from tui.homes import offline, seeded_chat
from tui.pilot_wait import open_chat, waiter

from tavern.engines.base import TurnStats
from tavern.session import Tavern
from tavern.tui.app import make_app
from tavern.tui.messages import ReplyFinished
from tavern.tui.screens.card_editor import CardEditorScreen
from tavern.tui.screens.chat import ChatScreen
from tavern.tui.screens.chats import ChatListScreen
from tavern.tui.screens.library import LibraryScreen
from tavern.tui.widgets.composer import Composer
from tavern.tui.widgets.message import ChatMessageView
from tavern.tui.widgets.statusbar import StatusBar

wait_until = waiter(20.0)


def type_raw(app, data: str) -> None:
    """`data` as a terminal sends it: parsed by Textual's parser, delivered in one burst."""
    parser = XTermParser()
    for event in parser.feed(data):
        assert isinstance(event, events.Key), event
        event.set_sender(app)
        app._driver.send_message(event)


async def reopen_from_library(pilot) -> None:
    """Enter on Mira in the library (the search narrows the list to her)."""
    app = pilot.app
    await wait_until(pilot, lambda: isinstance(app.screen, LibraryScreen))
    await pilot.press("escape", *"Mira")  # Esc clears what an earlier visit typed there
    await wait_until(pilot, lambda: app.screen.current_key() == "Mira")
    await pilot.press("enter")
    await wait_until(pilot, lambda: isinstance(app.screen, ChatScreen))


def status_text(screen) -> str:
    return str(screen.query_one(StatusBar).render())


async def test_alt_enter_from_the_terminal_adds_a_line_and_keeps_the_keys_after_it(home: Path) -> None:
    tavern = offline(home)
    seeded_chat(tavern, 2)
    app = make_app(tavern)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_chat(pilot, wait_until, views=2)
        composer = screen.query_one("#composer", Composer)
        await wait_until(pilot, lambda: app.focused is composer)
        # The keys: abc, Ctrl+J, line two, Alt+Enter (ESC CR), line three.
        type_raw(app, "abc\nline two\x1b\rline three")
        await wait_until(pilot, lambda: composer.text.endswith("three"), timeout=5)
        assert composer.text == "abc\nline two\nline three"
        assert len(screen.session.chat) == 2  # nothing was sent
        # Ctrl+J still adds a line, and Enter still sends.
        type_raw(app, "\nfour\r")
        await wait_until(pilot, lambda: len(screen.session.chat) == 3)
        assert screen.session.chat[2].mes == "abc\nline two\nline three\nfour"


async def test_a_draft_survives_esc_tab_and_a_restart_without_touching_the_chat(home: Path) -> None:
    tavern = offline(home)
    chat = seeded_chat(tavern, 4)
    before = chat.path.read_bytes()
    app = make_app(tavern)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_chat(pilot, wait_until, views=4)
        composer = screen.query_one("#composer", Composer)
        await wait_until(pilot, lambda: app.focused is composer)
        await pilot.press(*"half a thought")
        # Tab goes to something that shows it has the focus (a message), and Esc comes back.
        await pilot.press("tab")
        assert isinstance(app.focused, ChatMessageView)
        assert all(isinstance(w, (ChatMessageView, Composer)) or w.id == "older" for w in screen.focus_chain)
        await pilot.press("escape")
        assert app.screen is screen and app.focused is composer
        assert composer.text == "half a thought"
        # Esc leaves the chat; the draft is back when the chat opens again.
        await pilot.press("escape")
        await reopen_from_library(pilot)
        again = app.screen
        await wait_until(pilot, lambda: again.query_one("#composer", Composer).text == "half a thought")
        await pilot.press(*", and more")  # then the app quits with the chat open
    assert chat.path.read_bytes() == before  # opening, typing and leaving never wrote the chat
    # The next run of the app has the draft; once sent, it is gone.
    app = make_app(offline(home))
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_chat(pilot, wait_until, views=4)
        composer = screen.query_one("#composer", Composer)
        await wait_until(pilot, lambda: composer.text == "half a thought, and more")
        await pilot.press("enter")
        await wait_until(pilot, lambda: len(screen.session.chat) == 5)
        await pilot.press("escape")
        await reopen_from_library(pilot)
        assert app.screen.query_one("#composer", Composer).text == ""


async def test_ctrl_z_gives_back_what_impersonation_replaced(home: Path) -> None:
    tavern = Tavern.open(home, **{"generation.max_tokens": 8, "model.n_ctx": 1024, "generation.seed": 1})
    seeded_chat(tavern, 2)
    seen: list = []
    app = make_app(tavern)
    async with app.run_test(size=(80, 24), message_hook=seen.append) as pilot:
        await waiter(120.0)(pilot, lambda: "loading" not in app.engine_status)
        screen = await open_chat(pilot, wait_until, views=2)
        composer = screen.query_one("#composer", Composer)
        await wait_until(pilot, lambda: app.focused is composer)
        await pilot.press(*"my own words", "ctrl+u")
        await waiter(120.0)(pilot, lambda: any(isinstance(m, ReplyFinished) for m in seen))
        await wait_until(pilot, lambda: not screen.generating and composer.text != "my own words")
        written = composer.text
        assert written.strip()
        await pilot.press("ctrl+z")
        assert composer.text == "my own words"
        await pilot.press("ctrl+y")  # and redo brings the model's text back
        assert composer.text == written


async def test_a_failed_impersonation_gives_the_text_back(home: Path) -> None:
    tavern = offline(home)  # no model: the impersonation fails at once
    seeded_chat(tavern, 2)
    app = make_app(tavern)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_chat(pilot, wait_until, views=2)
        composer = screen.query_one("#composer", Composer)
        await wait_until(pilot, lambda: app.focused is composer)
        await pilot.press(*"my own words", "ctrl+u")
        await wait_until(pilot, lambda: not screen.generating)
        await wait_until(pilot, lambda: composer.text == "my own words")


async def test_keys_typed_while_a_screen_opens_reach_its_first_input(home: Path) -> None:
    tavern = offline(home)
    seeded_chat(tavern, 2)
    app = make_app(tavern)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until(pilot, lambda: isinstance(app.focused, Input))
        type_raw(app, "\x1b[18~Bob")  # F7, then the name, faster than the editor opens
        await wait_until(
            pilot, lambda: isinstance(app.screen, CardEditorScreen) and app.screen.query("#card-name")
        )
        name = app.screen.query_one("#card-name", Input)
        await wait_until(pilot, lambda: name.value == "Bob", timeout=5)
        # Typing on in the editor: each key lands where the first ones did.
        type_raw(app, " Stone")
        await wait_until(pilot, lambda: name.value == "Bob Stone", timeout=5)


async def test_enter_in_the_library_opens_the_chat_opened_last(home: Path) -> None:
    tavern = offline(home)
    parent = seeded_chat(tavern, 6)
    app = make_app(tavern)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_chat(pilot, wait_until, views=6)
        assert screen.session.chat.name == parent.name
        await pilot.press("up", "up", "up", "b")  # branch at message 3: the parent is written too
        await wait_until(pilot, lambda: isinstance(app.screen, ChatScreen) and app.screen is not screen)
        branch = app.screen.session.chat.name
        assert branch != parent.name
        await pilot.press("escape")
        await reopen_from_library(pilot)
        assert app.screen.session.chat.name == branch
        # Back to the parent from the chat list: that one is now the last opened.
        await pilot.press("ctrl+l")
        await wait_until(pilot, lambda: isinstance(app.screen, ChatListScreen))
        chooser = app.screen
        await wait_until(pilot, lambda: chooser.current() is not None)
        await pilot.press(*"Mira -")  # the search: the parent's name, not the branch's
        await wait_until(pilot, lambda: chooser.current() == parent.name)
        await pilot.press("enter")
        await wait_until(
            pilot, lambda: isinstance(app.screen, ChatScreen) and app.screen.session.chat.name == parent.name
        )
        await pilot.press("escape")
        await reopen_from_library(pilot)
        assert app.screen.session.chat.name == parent.name


async def test_the_chat_screen_names_its_chat_at_80x24_and_60x20(home: Path) -> None:
    tavern = offline(home)
    chat = seeded_chat(tavern, 6)
    label = chat.name.removeprefix("Mira - ")
    for size in ((80, 24), (60, 20)):
        app = make_app(offline(home))
        async with app.run_test(size=size) as pilot:
            screen = await open_chat(pilot, wait_until, views=6)
            text = status_text(screen)
            assert text.startswith("Mira · ") and label[:10] in text, (size, text)
            # With a turn's figures beside it, the name is shortened and the figures stay.
            bar = screen.query_one(StatusBar)
            bar.set_model("SmolLM2-135M-Instruct", 2048)
            bar.set_stats(TurnStats(prompt_tokens=812, cached_tokens=790, gen_tokens=40, gen_tps=128.0))
            text = status_text(screen)
            assert text.startswith("Mira · ") and label[:6] in text and text.endswith("128 tok/s"), (
                size,
                text,
            )
