"""The composer on the real model at 80x24: multi-line messages, and Ctrl+U / Ctrl+D reaching
the chat while the composer has the focus (the text box once swallowed them)."""

from __future__ import annotations

from pathlib import Path

from tui.pilot_wait import waiter

from tavern.session import Tavern
from tavern.tui.app import make_app
from tavern.tui.messages import ReplyFinished
from tavern.tui.screens.chat import ChatScreen
from tavern.tui.screens.modals import ConfirmModal
from tavern.tui.widgets.composer import Composer
from tavern.tui.widgets.statusbar import StatusBar

wait_until = waiter(120.0, interval=0.05)


async def test_multiline_send_impersonate_and_delete_from_the_composer(home: Path) -> None:
    tavern = Tavern.open(home, **{"generation.max_tokens": 12, "model.n_ctx": 1024, "generation.seed": 1})
    seen: list = []
    app = make_app(tavern)
    async with app.run_test(size=(80, 24), message_hook=seen.append) as pilot:
        await wait_until(pilot, lambda: "loading" not in app.engine_status)
        app.open_character("Mira")
        await wait_until(pilot, lambda: isinstance(app.screen, ChatScreen))
        screen = app.screen
        await wait_until(pilot, lambda: bool(screen.query(Composer)))
        composer = screen.query_one("#composer", Composer)
        await wait_until(pilot, lambda: app.focused is composer)
        await pilot.press(*"Two", "ctrl+j", *"lines")
        assert composer.text == "Two\nlines"
        await pilot.press("enter")
        await wait_until(pilot, lambda: any(isinstance(m, ReplyFinished) for m in seen))
        await wait_until(pilot, lambda: not screen.generating)
        chat = screen.session.chat
        assert chat[-2].mes == "Two\nlines" and chat[-2].is_user and not chat[-1].is_user
        # The status bar shows the context used of the total and the cache of that turn.
        status = " · ".join(screen.query_one(StatusBar).fields())
        assert "ctx " in status and "/1024" in status and "tok/s" in status

        # Ctrl+U with the composer focused: the model writes the user's next message into it.
        seen.clear()
        assert app.focused is composer
        await pilot.press("ctrl+u")
        await wait_until(pilot, lambda: any(isinstance(m, ReplyFinished) for m in seen))
        await wait_until(pilot, lambda: not screen.generating)
        assert composer.text.strip()
        assert len(chat) == 3  # impersonation is not saved until sent

        # Ctrl+D with the composer focused deletes the last message (after asking).
        composer.focus()
        last = chat[-1].mes
        await pilot.press("ctrl+d")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmModal))
        await pilot.press("y")
        await wait_until(pilot, lambda: len(chat) == 2)
        assert chat[-1].mes == "Two\nlines" and last not in [v.body for v in screen.views()]
