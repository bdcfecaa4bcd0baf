"""Keys typed while a screen opens, held until the screen can take them.

Textual sends a key to the focused widget, or to the screen when nothing has the focus. A
screen focuses its first input in `on_mount`, after its widgets are composed, and Textual's
auto-focus may first give the focus to whatever comes first (a scroll container): keys typed in
that time went where nothing used them and were lost (F7 then "Bob" within a second left the
new character's name empty). `EarlyKeys` holds every key that arrives while the current screen
has not yet been drawn with its widgets and its focus, and hands them over, in the order typed,
once it has. The app calls `opening` for each screen it shows (Textual's screen-change signal)
and `hold` for each key.

A screen that simply has nothing to focus takes its keys after its first refresh, as before; a
held key never waits more than `HOLD_LIMIT_S`, whatever happens to the screen.
"""

from __future__ import annotations

import weakref
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from textual import events
    from textual.app import App
    from textual.screen import Screen
    from textual.timer import Timer

HOLD_LIMIT_S = 5.0
"""Safety net: a screen that never draws (its compose failed) must not keep the keys."""


class EarlyKeys:
    def __init__(self, app: App[None], dispatch: Callable[[events.Key], Awaitable[None]]) -> None:
        self._app = app
        self._dispatch = dispatch  # the app's own key handling (App.on_event)
        self._held: list[events.Key] = []
        self._settled: weakref.WeakSet[Screen[object]] = weakref.WeakSet()
        self._waiting: weakref.WeakSet[Screen[object]] = weakref.WeakSet()
        self._releasing = False
        self._timer: Timer | None = None

    def opening(self, screen: Screen[object]) -> None:
        """`screen` is now the current one: hold keys until it has been drawn."""
        if screen not in self._settled:
            self._wait_for(screen)

    def hold(self, event: events.Key) -> bool:
        """True when `event` is held (the caller must not dispatch it now)."""
        if not self._app.screen_stack:  # starting or closing: Textual's own handling
            return False
        screen = self._app.screen
        ready = screen in self._settled
        if ready and not self._held:
            return False
        self._held.append(event)  # behind earlier held keys even when the screen is ready now
        if ready:
            self._app.call_later(self._release)
        else:
            self._wait_for(screen)
        if self._timer is None:
            self._timer = self._app.set_timer(HOLD_LIMIT_S, self._give_up)
        return True

    def _wait_for(self, screen: Screen[object]) -> None:
        if screen in self._waiting:
            return
        self._waiting.add(screen)
        # Behind the screen's queue: its compose and mount come first, then its resume (where
        # Textual's auto-focus acts). The release then goes behind the app's queue, where a
        # `focus()` asked for in `on_mount` waits. (Not `call_after_refresh`: a screen whose
        # refresh fell inside another widget's batch waits for its next event to repaint.)
        screen.call_later(self._settle, screen)

    def _settle(self, screen: Screen[object]) -> None:
        self._settled.add(screen)
        self._waiting.discard(screen)
        if self._held:
            self._app.call_later(self._release)

    async def _give_up(self) -> None:
        self._timer = None
        self._settled.add(self._app.screen)
        await self._release()

    async def _release(self) -> None:
        if self._releasing:
            return
        self._releasing = True
        try:
            while self._held:
                screen = self._app.screen
                if screen not in self._settled:  # a held key opened another screen: wait for it too
                    self._wait_for(screen)
                    return
                await self._dispatch(self._held.pop(0))
        finally:
            self._releasing = False
            if not self._held and self._timer is not None:
                self._timer.stop()
                self._timer = None
