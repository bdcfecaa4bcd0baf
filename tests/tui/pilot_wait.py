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
