"""The chat's status bar while a reply waits for its first token: the prompt being read, with
how far it got and how fast, instead of a still "…"."""

from __future__ import annotations

import re
from pathlib import Path

from tui.pilot_wait import open_chat, waiter

from tavern.session import Tavern
from tavern.tui.app import make_app
from tavern.tui.messages import ReplyDelta, ReplyFinished
from tavern.tui.screens.chat_replies import ReplyProgress

wait_until = waiter(300.0, interval=0.02)
READING = re.compile(r"reading prompt (\d+)/(\d+)")


async def test_the_status_bar_shows_the_prompt_being_read_then_the_reply(home: Path) -> None:
    tavern = Tavern.open(home, **{"generation.max_tokens": 8, "model.n_ctx": 2048, "generation.seed": 3})
    seen: list = []
    app = make_app(tavern)
    async with app.run_test(size=(80, 24), message_hook=seen.append) as pilot:
        await wait_until(pilot, lambda: "loading" not in app.engine_status)
        screen = await open_chat(pilot, wait_until, views=1)
        status = screen.status

        def shown() -> str:
            return str(status.content)

        # A long first message: the whole prompt (card, greeting, this) must be read.
        screen.composer.value = "Tell me about the harbor. " * 60
        await pilot.press("enter")
        await wait_until(pilot, lambda: READING.search(shown()) is not None)
        done, total = map(int, READING.search(shown()).groups())
        assert 0 <= done <= total and total > 300
        assert "Esc to stop" in shown()
        await wait_until(pilot, lambda: any(isinstance(m, ReplyFinished) for m in seen))
        await wait_until(pilot, lambda: not screen.generating)
        assert READING.search(shown()) is None  # the last turn's figures replace it
    progress = [m.progress for m in seen if isinstance(m, ReplyProgress)]
    first_delta = next(i for i, m in enumerate(seen) if isinstance(m, ReplyDelta))
    assert progress[0].done == 0 and progress[-1].done == progress[-1].total == total
    assert all(seen.index(m) < first_delta for m in seen if isinstance(m, ReplyProgress))
