"""The real app through Textual's Pilot at 80x24: pick a character, send, watch the reply stream."""

from __future__ import annotations

import json
from pathlib import Path

from tui.pilot_wait import waiter

from tavern.session import Tavern
from tavern.tui.app import make_app
from tavern.tui.messages import ReplyDelta, ReplyFinished
from tavern.tui.screens.chat import ChatScreen
from tavern.tui.widgets.message import ChatMessageView

wait_until = waiter(120.0, interval=0.05)


async def test_send_a_message_and_see_the_reply_stream(home: Path) -> None:
    tavern = Tavern.open(home, **{"generation.max_tokens": 40, "model.n_ctx": 2048, "generation.seed": 3})
    seen: list = []
    app = make_app(tavern)
    async with app.run_test(size=(80, 24), message_hook=seen.append) as pilot:
        await wait_until(pilot, lambda: "loading" not in app.engine_status)
        # The library lists the bundled characters; pick Mira.
        keys = [e.key for e in tavern.cards.library.list()]
        assert "Mira" in keys
        app.open_character("Mira")
        await wait_until(pilot, lambda: isinstance(app.screen, ChatScreen))
        screen = app.screen
        await wait_until(pilot, lambda: bool(screen.query(ChatMessageView)))
        views = list(screen.query(ChatMessageView))
        assert views[0].speaker == "Mira" and "dripping" in views[0].body  # the greeting is shown
        await pilot.click("#composer")
        await pilot.press(*"Hello!")
        await pilot.press("enter")
        await wait_until(pilot, lambda: any(isinstance(m, ReplyFinished) for m in seen))
        deltas = [m for m in seen if isinstance(m, ReplyDelta)]
        assert deltas, "the reply arrived as a stream of deltas"
        await wait_until(pilot, lambda: not screen.generating)
        views = list(screen.query(ChatMessageView))
        assert views[-2].body == "Hello!" and views[-1].speaker == "Mira"
        assert views[-1].body.strip()
    chat = next((home / "chats" / "Mira").glob("*.jsonl"))
    lines = [json.loads(x) for x in chat.read_text().splitlines()]
    assert lines[-1]["mes"] == views[-1].body


async def test_escape_stops_a_reply_and_keeps_the_partial_text(home: Path) -> None:
    tavern = Tavern.open(home, **{"generation.max_tokens": 400, "model.n_ctx": 2048, "generation.seed": 5})
    seen: list = []
    app = make_app(tavern)
    async with app.run_test(size=(80, 24), message_hook=seen.append) as pilot:
        app.open_character("Mira")
        await wait_until(pilot, lambda: isinstance(app.screen, ChatScreen))
        screen = app.screen
        await wait_until(pilot, lambda: bool(screen.query(ChatMessageView)))
        await pilot.click("#composer")
        await pilot.press(*"Tell me a very long story about the harbor.")
        await pilot.press("enter")
        await wait_until(pilot, lambda: any(isinstance(m, ReplyDelta) for m in seen))
        await pilot.press("escape")
        await wait_until(pilot, lambda: any(isinstance(m, ReplyFinished) for m in seen))
        finished = next(m for m in seen if isinstance(m, ReplyFinished))
        assert finished.stats.stop_reason == "cancelled"
        assert finished.stats.gen_tokens < 400
        assert isinstance(app.screen, ChatScreen)  # Esc stopped the reply, it did not leave the chat


async def test_swipes_a_new_reply_and_browses_back(home: Path) -> None:
    tavern = Tavern.open(home, **{"generation.max_tokens": 16, "model.n_ctx": 2048})
    seen: list = []
    app = make_app(tavern)
    async with app.run_test(size=(80, 24), message_hook=seen.append) as pilot:
        app.open_character("Captain Ilse Varga")
        await wait_until(pilot, lambda: isinstance(app.screen, ChatScreen))
        screen = app.screen
        await wait_until(pilot, lambda: bool(screen.query(ChatMessageView)))
        greeting = screen.session.chat[-1]
        assert len(greeting.swipes) == 2  # the alternate greeting is a swipe of the first message
        await pilot.press("alt+right")  # to the alternate greeting
        await wait_until(pilot, lambda: screen.session.chat[-1].swipe_id == 1)
        assert list(screen.query(ChatMessageView))[-1].swipe == "‹2/2›"
        await pilot.press("alt+right")  # past the last one: a new swipe is generated
        await wait_until(pilot, lambda: any(isinstance(m, ReplyFinished) for m in seen))
        await wait_until(pilot, lambda: not screen.generating)
        last = screen.session.chat[-1]
        assert len(last.swipes) == 3 and last.swipe_id == 2 and last.mes == last.swipes[2]
        await pilot.press("alt+left")
        await wait_until(pilot, lambda: screen.session.chat[-1].swipe_id == 1)
    on_disk = [
        json.loads(x)
        for x in next((home / "chats" / "Captain Ilse Varga").glob("*.jsonl")).read_text().splitlines()
    ]
    assert on_disk[-1]["swipe_id"] == 1 and len(on_disk[-1]["swipes"]) == 3


async def test_a_long_chat_mounts_only_its_tail_and_shows_older_on_request(home: Path) -> None:
    from textual.widgets import Button

    from tavern.store import ChatMessage

    tavern = Tavern.open(home, **{"model.path": str(home / "no-model.gguf")})  # no engine needed
    key, card = tavern.cards.find("Mira")
    chat = tavern.chats.new(key, card)
    for i in range(1, 120):
        chat.append(ChatMessage(name="User" if i % 2 else "Mira", is_user=bool(i % 2), mes=f"line {i}"))
    app = make_app(tavern)
    async with app.run_test(size=(80, 24)) as pilot:
        app.open_character("Mira")
        await wait_until(pilot, lambda: isinstance(app.screen, ChatScreen))
        screen = app.screen
        await wait_until(pilot, lambda: len(screen.query(ChatMessageView)) == 40)
        views = list(screen.query(ChatMessageView))
        assert views[0].body == "line 80" and views[-1].body == "line 119"
        older = screen.query_one("#older", Button)
        assert "80 earlier" in str(older.label)
        older.press()
        await wait_until(pilot, lambda: len(screen.query(ChatMessageView)) == 80)
        assert list(screen.query(ChatMessageView))[0].body == "line 40"


async def test_a_message_that_cannot_be_saved_goes_back_to_the_composer(home: Path) -> None:
    from tavern.tui.widgets.composer import Composer

    tavern = Tavern.open(home, **{"generation.max_tokens": 8, "model.n_ctx": 1024})
    app = make_app(tavern)
    async with app.run_test(size=(80, 24)) as pilot:
        app.open_character("Mira")
        await wait_until(pilot, lambda: isinstance(app.screen, ChatScreen))
        screen = app.screen
        await wait_until(pilot, lambda: bool(screen.query(ChatMessageView)))
        # The store's read-only mode (another Tavern holds the home): every write is refused.
        screen.session.chat.read_only = True
        await pilot.click("#composer")
        await pilot.press(*"Please remember this")
        await pilot.press("enter")
        composer = screen.query_one("#composer", Composer)
        await wait_until(pilot, lambda: composer.value == "Please remember this")
        await wait_until(
            pilot, lambda: [v.body for v in screen.query(ChatMessageView)][-1] != "Please remember this"
        )
