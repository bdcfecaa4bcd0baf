"""TavernApp: the Textual front. `make_app(tavern)` is the one way to build it (CLI and tests).

The app owns no domain logic: screens call `tavern.session` services. The engine is loaded in
a thread worker after the first frame, so the library shows at once even when the model is
slow or broken (then the status line says why, and chats stay readable); while it loads, the
status bars count the seconds. App-wide keys: F1 help, Ctrl+P command palette, F9 personas,
F10 settings, Ctrl+Q quit. `[ui] theme` picks the theme and `[keys]` rebinds any binding by
its id (the help screen lists the ids). Keys typed while a screen opens wait for it
(tavern/tui/early_keys.py); ESC CR is read as Alt+Enter (tavern/tui/keys.py).
"""

from __future__ import annotations

import threading
import time
from asyncio import AbstractEventLoop
from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar

from rich.console import RenderableType
from textual import events, on, work
from textual.app import App, AutopilotCallbackType
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.worker import Worker, WorkerState

from tavern.errors import TavernError
from tavern.tui.messages import EngineFailed, EngineLoaded, ReplyFinished
from tavern.tui.screens.library import LibraryScreen

if TYPE_CHECKING:
    from textual.command import Provider

    from tavern.session import Tavern
    from tavern.tui.boot import Boot


def _tavern_commands() -> type[Provider]:
    """The palette's Tavern commands (a lazy provider: imported when the palette opens)."""
    from tavern.tui.commands import TavernCommands

    return TavernCommands


class TavernApp(App[None]):
    CSS_PATH = "tavern.tcss"
    COMMANDS = App.COMMANDS | {_tavern_commands}
    TITLE = "Tavern"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+q", "quit", "Quit", id="app.quit_any", priority=True, show=False),
        # Keys that open a screen are priority bindings (no widget uses them): the screen is
        # pushed as the key arrives, so the keys typed right behind it wait for that screen
        # (early_keys.py) instead of landing in the field that had the focus.
        Binding("f1", "help", "Help", id="app.help", priority=True),
        Binding("f9", "personas", "Personas", id="app.personas", priority=True, show=False),
        Binding("f10", "settings", "Settings", id="app.settings", priority=True, show=False),
        Binding("f4", "backends", "Backends", id="app.backends", priority=True, show=False),
    ]

    def __init__(self, tavern: Tavern | None = None, boot: Boot | None = None) -> None:
        """`tavern`: an open Tavern (tests, `tavern serve`'s children use the CLI path too).
        `boot`: a `tavern.tui.boot.Boot`, for a first frame before the Tavern is open."""
        super().__init__()
        from tavern.tui.early_keys import EarlyKeys
        from tavern.tui.escapes import guard_rich_text
        from tavern.tui.keys import name_alt_enter

        guard_rich_text()  # card and chat text is shown on screen, never run by the terminal
        name_alt_enter()  # ESC CR is Alt+Enter (a new line), not Enter and the keys after it
        self.early_keys = EarlyKeys(self, self._dispatch_key)

        self.boot = boot
        self.boot_error: str | None = None
        self._tavern = tavern
        self._opened = threading.Event()
        self._frame_callbacks: list[Callable[[], object]] = []
        if tavern is not None:
            self._opened.set()
            theme, keys = tavern.settings.ui.theme, dict(tavern.settings.ui.keys)
        else:
            assert boot is not None, "the app needs a Tavern or a Boot"
            theme, keys = boot.theme, dict(boot.keys)
        self.engine_status = "loading model…"
        self._load_started = 0.0
        if theme and theme in self.available_themes:
            self.theme = theme
        self.user_keys: dict[str, str] = keys

    def after_frame(self, callback: Callable[[], object]) -> None:
        """Call `callback` once the next frame has been handed to the terminal.

        `call_after_refresh` is too early for the first frame: the first screen's first
        refresh happens inside the app's start-up batch and is never written, and work started
        then (a thread importing pydantic) delayed the frame the user sees by ~30 ms."""
        self._frame_callbacks.append(callback)

    def _display(self, screen: Screen[object], renderable: RenderableType | None) -> None:
        # Private in Textual (pinned exactly in pyproject); the one place a written frame shows.
        super()._display(screen, renderable)
        if self._frame_callbacks and renderable is not None and not self._batch_count:
            callbacks, self._frame_callbacks = self._frame_callbacks, []
            for callback in callbacks:
                self.call_later(callback)

    async def on_event(self, event: events.Event) -> None:
        # Keys typed while a screen opens wait for it (tavern/tui/early_keys.py).
        if isinstance(event, events.Key) and not event.is_forwarded and self.early_keys.hold(event):
            return
        await super().on_event(event)

    async def _dispatch_key(self, event: events.Key) -> None:
        await super().on_event(event)

    @property
    def tavern(self) -> Tavern:
        """The open Tavern. Before it is open (the first half second of a cold start) this
        waits for the opener thread: only an action taken that early ever waits."""
        if self._tavern is None:
            self._opened.wait()
            if self._tavern is None:
                raise TavernError(self.boot_error or "Tavern did not open")
        return self._tavern

    @property
    def tavern_ready(self) -> bool:
        return self._tavern is not None

    def run(
        self,
        *,
        headless: bool = False,
        inline: bool = False,
        inline_no_clear: bool = False,
        mouse: bool = True,
        size: tuple[int, int] | None = None,
        auto_pilot: AutopilotCallbackType | None = None,
        loop: AbstractEventLoop | None = None,
    ) -> None:
        from tavern.tui.terminal import private_streams

        with private_streams():  # frames must reach the terminal while llama.cpp loads
            return super().run(
                headless=headless, inline=inline, inline_no_clear=inline_no_clear, mouse=mouse, size=size,
                auto_pilot=auto_pilot, loop=loop,
            )

    def get_default_screen(self) -> LibraryScreen:
        # The library is the first screen itself, not pushed over a blank one from on_mount: a
        # screen pushed there is laid out inside Textual's start-up batch, that frame is never
        # written, and the whole screen only reached the terminal at the next full layout.
        return LibraryScreen(self._tavern, boot=self.boot)

    def on_mount(self) -> None:
        self.screen_change_signal.subscribe(self, self.early_keys.opening, immediate=True)
        if self.user_keys:
            self.set_keymap(self.user_keys)
        # Opening the Tavern (pydantic, the store...) and then the model (llama_cpp, numpy, the
        # GGUF read) compete with the first frame for the interpreter: start once it is drawn.
        self.engine_status = "loading model…"
        self._first_frame_done = False

    def first_frame_shown(self) -> None:
        """Called by the library once its first frame is drawn (not the app's blank first
        refresh: a thread started then would take the interpreter from the library's frame)."""
        if self._first_frame_done:
            return
        self._first_frame_done = True
        if self._tavern is not None:
            self.start_engine()
            return
        threading.Thread(target=self._open_tavern, name="tavern-open", daemon=True).start()

    def _open_tavern(self) -> None:
        assert self.boot is not None  # only a Boot-built app opens its Tavern here
        try:
            tavern = self.boot.opener()
        except TavernError as err:
            self.boot_error = str(err)
            self._opened.set()
            self.call_from_thread(self.exit, None, 1)
            return
        self._tavern = tavern
        self._opened.set()
        self.call_from_thread(self._tavern_opened)

    def _tavern_opened(self) -> None:
        ui = self.tavern.settings.ui  # validated now: the boot read may have skipped a bad value
        if ui.theme and ui.theme in self.available_themes and ui.theme != self.theme:
            self.theme = ui.theme
        for screen in self.screen_stack:
            if isinstance(screen, LibraryScreen):
                screen.tavern_opened()
        self.start_engine()

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
            engine = self.tavern.load_engine()
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
        from tavern.tui.screens.chat import ChatScreen

        for screen in self.screen_stack:
            if isinstance(screen, ChatScreen) and not screen.generating and screen.is_mounted:
                if screen.query("#status"):  # a screen still composing draws it on mount
                    screen._set_status()

    @on(Worker.StateChanged)
    def _worker_failed(self, event: Worker.StateChanged) -> None:
        # Any worker that dies with an exception becomes a notification, never a traceback.
        if event.state == WorkerState.ERROR and event.worker.error is not None:
            self.notify(str(event.worker.error), title="Error", severity="error")

    # -- screens ---------------------------------------------------------------------------------

    def open_character(self, key: str, new: bool = False, greeting_index: int = 0) -> None:
        from tavern.tui.screens.chat import ChatScreen

        try:
            session = self.tavern.open_chat(key, new=new, greeting_index=greeting_index)
        except TavernError as err:
            self.notify(str(err), title=getattr(err, "title", "Error"), severity="error")
            return
        self.push_screen(ChatScreen(self.tavern, session))

    def action_help(self) -> None:
        from tavern.tui.screens.help import HelpScreen

        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen(help_sections(), self.screen))

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

        open_backends(self, self.tavern)

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
        # `App.is_mounted(widget)` is a method (always truthy); the app's own flag is `_is_mounted`.
        if not self._is_mounted or not getattr(self, "_tavern", None):
            return
        if self.tavern.settings.ui.theme != theme:
            try:
                self.tavern.update_settings({"ui.theme": theme})
            except TavernError as err:
                self.notify(str(err), severity="warning")


def make_app(tavern: Tavern | None = None, boot: Boot | None = None) -> TavernApp:
    return TavernApp(tavern, boot=boot)


def help_sections() -> list[tuple[str, type, list[tuple[str, str]]]]:
    """What F1 lists: each screen's own bindings, and the keys they do not show."""
    from tavern.tui.screens.chat import ChatScreen
    from tavern.tui.screens.chats import ChatListScreen
    from tavern.tui.screens.library import LibraryScreen
    from tavern.tui.screens.lore_editor import LoreEditorScreen

    return [
        ("Everywhere", TavernApp, [("Ctrl+P", "command palette (every action by name, themes)")]),
        ("Character library", LibraryScreen, [("type", "search: words, tag:x, creator:y")]),
        (
            "Chat",
            ChatScreen,
            [
                ("Enter", "send"),
                ("Ctrl+J, Alt+Enter, Shift+Enter", "new line"),
                ("Ctrl+Z (after Ctrl+U)", "give back what impersonation replaced"),
                ("Up (first line)", "focus the last message"),
            ],
        ),
        ("Chat: on a focused message", type(None), ChatScreen.MESSAGE_KEYS),
        ("Chat list", ChatListScreen, [("type", "search chats"), ("Enter", "open")]),
        ("Lorebook editor", LoreEditorScreen, []),
    ]
