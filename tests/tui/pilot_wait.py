"""Waiting on the real app in Pilot tests: poll a condition until it holds or time runs out.
Each test module makes its own with the patience its screens need (a model load takes longer
than a dialog)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any


def waiter(default_timeout: float, interval: float = 0.02) -> Callable[..., Awaitable[None]]:
    async def wait_until(pilot: Any, predicate: Callable[[], Any], timeout: float = default_timeout) -> None:
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while not predicate():
            if loop.time() > end:
                raise AssertionError("timed out waiting for the app")
            await pilot.pause(interval)

    return wait_until


async def open_chat(pilot: Any, wait_until: Callable[..., Awaitable[None]], views: int | None = None) -> Any:
    """Open Mira's latest chat from the app and return its screen once it is shown (and, with
    `views`, once that many messages are on it)."""
    from tavern.tui.screens.chat import ChatScreen

    app = pilot.app
    app.open_character("Mira")
    await wait_until(pilot, lambda: isinstance(app.screen, ChatScreen))
    screen = app.screen
    if views is not None:
        await wait_until(pilot, lambda: len(screen.views()) == views)
    return screen
