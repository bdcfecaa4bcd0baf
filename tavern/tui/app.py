"""TavernApp: the Textual front. `make_app(tavern)` is the one way to build it (CLI and tests).

The app owns no domain logic: screens call `tavern.session` services. The engine is loaded in
a thread worker after the first frame, so the library shows at once even when the model is
slow or broken (then the status line says why, and chats stay readable); while it loads, the
status bars count the seconds. App-wide keys: F1 help, Ctrl+P command palette, F9 personas,
F10 settings, Ctrl+Q quit. `[ui] theme` picks the theme and `[keys]` rebinds any binding by
its id (the help screen lists the ids).
"""

from __future__ import annotations

import time
from typing import Any

from textual import on, work
from textual.app import App
from textual.binding import Binding
from textual.worker import Worker, WorkerState

from tavern.errors import TavernError
from tavern.tui.messages import EngineFailed, EngineLoaded, ReplyFinished
from tavern.tui.screens.chat import ChatScreen
from tavern.tui.screens.library import LibraryScreen


class TavernApp(App):
    CSS_PATH = "tavern.tcss"
    TITLE = "Tavern"
    BINDINGS = [
        Binding("ctrl+q", "quit", "Quit", id="app.quit_any", priority=True, show=False),
        Binding("f1", "help", "Help", id="app.help"),
        Binding("f9", "personas", "Personas", id="app.personas", show=False),
        Binding("f10", "settings", "Settings", id="app.settings", show=False),
        Binding("f4", "backends", "Backends", id="app.backends", show=False),
    ]

    def __init__(self, tavern: Any) -> None:
        super().__init__()
        from tavern.tui.commands import TavernCommands

        self.COMMANDS = App.COMMANDS | {TavernCommands}
        self.tavern = tavern
        self.engine_status = "loading model…"
        self._load_started = 0.0
        ui = tavern.settings.ui
        if ui.theme and ui.theme in self.available_themes:
            self.theme = ui.theme
        self.user_keys: dict[str, str] = dict(ui.keys)

    def run(self, *args: Any, **kwargs: Any) -> Any:
        from tavern.tui.terminal import private_streams

        with private_streams():  # frames must reach the terminal while llama.cpp loads
            return super().run(*args, **kwargs)

    def on_mount(self) -> None:
        if self.user_keys:
            self.set_keymap(self.user_keys)
        self.push_screen(LibraryScreen(self.tavern))
        # The load (llama_cpp and numpy imports, the GGUF read) competes with the first frame
        # for the interpreter: start it once the library is on screen.
        self.engine_status = "loading model…"
        self.call_after_refresh(self.start_engine)

    # -- the engine ------------------------------------------------------------------------------

    def start_engine(self) -> None:
        """Load (or reload, after a settings change) the model in a worker, with a timer."""
        self.engine_status = "loading model…"
        self._load_started = time.perf_counter()
        self._load_timer = self.set_interval(0.5, self._tick_loading)
        self._refresh_status()
        self.load_engine()

    def _tick_loading(self) -> None:
        seconds = time.perf_counter() - self._load_started
        self.engine_status = f"loading model… {seconds:.0f}s"
        self._refresh_status()

    @work(thread=True, exclusive=True, group="engine", exit_on_error=False)
    def load_engine(self) -> None:
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
        self._load_timer.stop()
        self.engine_status = f"{message.model}"
        for warning in self.tavern.load_warnings:  # e.g. a context stretched past 3x native
            self.notify(warning, title="Model", severity="warning", timeout=10)
        for note in self.tavern.load_notes:  # what fitted on a GPU whose free memory is unknown
            self.notify(note, title="Model", timeout=10)
        self._refresh_status()

    @on(EngineFailed)
    def _engine_failed(self, message: EngineFailed) -> None:
        self._load_timer.stop()
        self.engine_status = "no model"
        self.notify(message.error, title="Model", severity="error", timeout=10)
        self._refresh_status()

    def _refresh_status(self) -> None:
        for screen in self.screen_stack:
            if isinstance(screen, ChatScreen) and not screen.generating and screen.is_mounted:
                screen._set_status()

    @on(Worker.StateChanged)
    def _worker_failed(self, event: Worker.StateChanged) -> None:
        # Any worker that dies with an exception becomes a notification, never a traceback.
        if event.state == WorkerState.ERROR and event.worker.error is not None:
            self.notify(str(event.worker.error), title="Error", severity="error")

    # -- screens ---------------------------------------------------------------------------------

    def open_character(self, key: str, new: bool = False, greeting_index: int = 0) -> None:
        try:
            session = self.tavern.open_chat(key, new=new, greeting_index=greeting_index)
        except TavernError as err:
            self.notify(str(err), title=getattr(err, "title", "Error"), severity="error")
            return
        self.push_screen(ChatScreen(session))

    def action_help(self) -> None:
        from tavern.tui.screens.help import HelpScreen

        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen(self.screen))

    def action_settings(self) -> None:
        from tavern.tui.screens.settings import SettingsScreen

        if not isinstance(self.screen, SettingsScreen):
            self.push_screen(SettingsScreen(self.tavern))

    def action_personas(self) -> None:
        from tavern.tui.screens.personas import PersonaScreen

        if not isinstance(self.screen, PersonaScreen):
            self.push_screen(PersonaScreen(self.tavern))

    def action_backends(self) -> None:
        from tavern.tui.screens.backends import open_backends

        open_backends(self)

    @on(ReplyFinished)
    def _engine_notices(self, _message: ReplyFinished) -> None:
        # Said once per engine: a sampler or CFG the backend cannot take, a parameter it ignored.
        for line in self.tavern.take_notices():
            self.notify(line, title="Backend", severity="warning", timeout=10)

    def settings_changed(self, reload_model: bool) -> None:
        """After the settings screen saved: load the model again when it must."""
        if reload_model:
            self.start_engine()

    def watch_theme(self, theme: str) -> None:
        # Remember the theme the user picked (palette or settings) for the next start.
        if not self.is_mounted or not hasattr(self, "tavern"):
            return
        if self.tavern.settings.ui.theme != theme:
            try:
                self.tavern.update_settings({"ui.theme": theme})
            except TavernError as err:
                self.notify(str(err), severity="warning")


def make_app(tavern: Any) -> TavernApp:
    return TavernApp(tavern)
