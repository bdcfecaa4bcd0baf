"""The chat screen's summary editor, negative prompt (CFG), loop notes and the memory-failure
notice, driven with Pilot at 80x24 on the real app (no model: the store and the screens)."""

from __future__ import annotations

import socket
from pathlib import Path

from textual.widgets import Input, TextArea
from tui.pilot_wait import open_chat

from tavern.engines.base import TurnStats
from tavern.memory import summary
from tavern.session import Tavern
from tavern.store import ChatMessage
from tavern.tui.app import make_app
from tavern.tui.screens.dialogs import CfgModal, SummaryModal
from tavern.tui.screens.inspector import PromptInspectorScreen
from tavern.tui.widgets.statusbar import StatusBar

from .test_chat_actions import offline, seeded_chat, wait_until


def notices(app) -> list[str]:
    return [str(n.message) for n in app._notifications]


async def test_summary_editor_edits_switches_off_and_refuses_an_early_regenerate(home: Path) -> None:
    tavern = Tavern.open(home)  # the bundled model: the prompt is counted with its tokenizer
    chat = seeded_chat(tavern)
    app = make_app(tavern)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_chat(pilot, wait_until)
        await pilot.press("f5")
        await wait_until(pilot, lambda: isinstance(app.screen, SummaryModal))
        assert "covers nothing yet" in str(app.screen.query_one("#summary-state").content)
        app.screen.query_one("#summary-text", TextArea).text = "Mira met the traveller at the inn."
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: app.screen is screen)
        chat = screen.session.chat
        meta = chat.header.chat_metadata
        assert meta[summary.TEXT_KEY] == "Mira met the traveller at the inn."
        reread = offline(home).open_chat("Mira", chat_name=chat.name).chat.header.chat_metadata
        assert reread[summary.TEXT_KEY] == "Mira met the traveller at the inn."  # on disk
        assert "Mira met the traveller" in screen.session.build_prompt().text

        # From the command palette this time: switch it off; the prompt loses it.
        await pilot.press("ctrl+p")
        await pilot.press(*"summary")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await wait_until(pilot, lambda: isinstance(app.screen, SummaryModal))
        assert app.screen.query_one("#summary-text", TextArea).text == "Mira met the traveller at the inn."
        await pilot.press("ctrl+o")
        await wait_until(pilot, lambda: app.screen is screen)
        assert summary.summary_meta(chat).get("off") is True
        assert "Mira met the traveller" not in screen.session.build_prompt().text

        # Six messages all fit the window: regenerating says why not, and keeps the text.
        await pilot.press("f5")
        await wait_until(pilot, lambda: isinstance(app.screen, SummaryModal))
        await pilot.press("ctrl+r")
        await wait_until(pilot, lambda: any("nothing has left the prompt window" in n for n in notices(app)))
        assert chat.header.chat_metadata[summary.TEXT_KEY] == "Mira met the traveller at the inn."
        assert not screen.generating


async def test_negative_prompt_is_set_from_the_chat_and_shown_in_the_inspector(home: Path) -> None:
    tavern = Tavern.open(home)
    seeded_chat(tavern)
    app = make_app(tavern)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_chat(pilot, wait_until)
        await pilot.press("f6")
        await wait_until(pilot, lambda: isinstance(app.screen, CfgModal))
        app.screen.query_one("#cfg-negative", TextArea).text = "Moralising, refusals."
        app.screen.query_one("#cfg-scale", Input).value = "-2"
        await pilot.press("ctrl+s")  # out of range: says so, stays open
        await wait_until(pilot, lambda: any("must be above 0" in n for n in notices(app)))
        assert isinstance(app.screen, CfgModal)
        app.screen.query_one("#cfg-scale", Input).value = "1.5"
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: app.screen is screen)
        meta = screen.session.chat.header.chat_metadata  # SillyTavern's own keys
        assert meta["cfg_negative_prompt"] == "Moralising, refusals." and meta["cfg_guidance_scale"] == 1.5
        assert screen.session.cfg()[:2] == (1.5, "Moralising, refusals.")

        await pilot.press("f2")
        await wait_until(pilot, lambda: isinstance(app.screen, PromptInspectorScreen), timeout=60)
        shown = str(app.screen.query_one("#insp-cfg").content)
        assert "guidance 1.5" in shown and "Moralising, refusals." in shown


async def test_loop_guard_shows_in_the_status_line_and_under_the_message(home: Path) -> None:
    tavern = offline(home)
    chat = seeded_chat(tavern, 4)
    record = {"action": "regenerated", "message": "loop: reply repeated the last ones (opening): regenerated with DRY"}
    chat.append(ChatMessage(name="Mira", is_user=False, mes="Again the lantern.", extra={"tavern": {"loop": record}}))
    app = make_app(tavern)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_chat(pilot, wait_until, views=5)
        last = screen.views()[-1]
        assert "regenerated with DRY" in str(last._note.content) and last._note.display
        assert not screen.views()[-2]._note.display  # no note where nothing happened
        bar = screen.query_one(StatusBar)
        bar.set_stats(TurnStats(prompt_tokens=100, cached_tokens=90, gen_tokens=20, gen_tps=50.0, loop=record))
        assert "loop regenerated" in str(bar.content)
        bar.set_stats(TurnStats(prompt_tokens=100, cached_tokens=90, gen_tokens=20, gen_tps=50.0))
        assert "loop" not in str(bar.content)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_memory_that_cannot_load_is_said_once_in_the_chat(home: Path) -> None:
    """A Chroma server that is not there (a real refused connection): the chat goes on and a
    notice says so once, not only in the inspector."""
    tavern = Tavern.open(
        home,
        **{"model.n_ctx": 512, "memory.chroma_url": f"http://127.0.0.1:{_closed_port()}"},
    )
    seeded_chat(tavern, 120)  # past the 512-token window: recall would look in the vector store
    app = make_app(tavern)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_chat(pilot, wait_until)
        screen.session.build_prompt()  # a turn's prompt asks for recall
        await wait_until(pilot, lambda: any("long-term memory is off" in n for n in notices(app)), timeout=60)
        screen.session.build_prompt()
        await pilot.pause(0.5)
        assert sum("long-term memory is off" in n for n in notices(app)) == 1
