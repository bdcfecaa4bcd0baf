"""TavernApp: the Textual front. `make_app(tavern)` is the one way to build it (CLI and tests).

The app owns no domain logic: screens call `tavern.session` services. The engine is loaded in
a thread worker after the first frame, so the library shows at once even when the model is
slow or broken (then the status line says why, and chats stay readable).
"""

from __future__ import annotations

from typing import Any

from textual import on, work
from textual.app import App
from textual.binding import Binding
from textual.worker import Worker, WorkerState

from tavern.errors import TavernError
from tavern.tui.messages import EngineFailed, EngineLoaded
from tavern.tui.screens.chat import ChatScreen
from tavern.tui.screens.library import LibraryScreen


class TavernApp(App):
    CSS_PATH = "tavern.tcss"
    TITLE = "Tavern"
    BINDINGS = [Binding("ctrl+q", "quit", "Quit", id="app.quit_any", priority=True)]

    def __init__(self, tavern: Any) -> None:
        super().__init__()
        self.tavern = tavern
        self.engine_status = "loading model…"

    def on_mount(self) -> None:
        self.push_screen(LibraryScreen(self.tavern))
        self.load_engine()

    @work(thread=True, exclusive=True, group="engine", exit_on_error=False)
    def load_engine(self) -> None:
        import time

        t0 = time.perf_counter()
        try:
            engine = self.tavern.engine
            self.tavern.prompt_format()
        except TavernError as err:
            self.post_message(EngineFailed(str(err)))
            return
        self.post_message(EngineLoaded(engine.model_name, time.perf_counter() - t0))

    @on(EngineLoaded)
    def _engine_loaded(self, message: EngineLoaded) -> None:
        self.engine_status = f"{message.model}"
        for warning in self.tavern.load_warnings:  # e.g. a context stretched past 3x native
            self.notify(warning, title="Model", severity="warning", timeout=10)
        self._refresh_status()

    @on(EngineFailed)
    def _engine_failed(self, message: EngineFailed) -> None:
        self.engine_status = "no model"
        self.notify(message.error, title="Model", severity="error", timeout=10)
        self._refresh_status()

    def _refresh_status(self) -> None:
        screen = self.screen
        if isinstance(screen, ChatScreen) and not screen.generating:
            screen._set_status()

    @on(Worker.StateChanged)
    def _worker_failed(self, event: Worker.StateChanged) -> None:
        # Any worker that dies with an exception becomes a notification, never a traceback.
        if event.state == WorkerState.ERROR and event.worker.error is not None:
            self.notify(str(event.worker.error), title="Error", severity="error")

    def open_character(self, key: str, new: bool = False, greeting_index: int = 0) -> None:
        try:
            session = self.tavern.open_chat(key, new=new, greeting_index=greeting_index)
        except TavernError as err:
            self.notify(str(err), title=getattr(err, "title", "Error"), severity="error")
            return
        self.push_screen(ChatScreen(session))


def make_app(tavern: Any) -> TavernApp:
    return TavernApp(tavern)
