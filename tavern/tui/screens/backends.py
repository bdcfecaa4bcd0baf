"""Backends (F4, or the button on the settings screen): connection profiles for remote servers
and which engine a chat uses.

The list holds "embedded llama.cpp" and every profile; the form adds or replaces one (a key
typed here, or read from an environment variable, goes to the 0600 key file and is never shown
again). Ctrl+T tests the highlighted profile (the server's models, or one error line), F8
removes it, and the "Use" buttons choose it for every chat, for this chat's character or for
this chat alone. Everything goes through tavern/backends.py, as `tavern backends ...` does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, TypeVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import Button, Footer, Input, Label, OptionList, Select, Static
from textual.widgets.option_list import Option

from tavern.backends import APIS, EMBEDDED, BackendStore, backend_choices, choose_backend, test_backend
from tavern.errors import TavernError

if TYPE_CHECKING:
    from textual.app import App

    from tavern.chat.session import ChatSession
    from tavern.session import Tavern

EMBEDDED_LABEL = "embedded llama.cpp"
_R = TypeVar("_R")  # whatever the app returns


def open_backends(app: App[_R], tavern: Tavern) -> None:
    """Push the screen for the chat on the stack, if one is open (its character and chat can
    then be given a backend of their own)."""
    if isinstance(app.screen, BackendsScreen):
        return
    session = next((s.session for s in reversed(app.screen_stack) if hasattr(s, "session")), None)
    app.push_screen(BackendsScreen(tavern, session))


class BackendsScreen(Screen[None]):
    DEFAULT_CSS = """
    BackendsScreen #bk-status { height: auto; background: $panel; padding: 0 1; }
    BackendsScreen #bk-list { width: 34; height: 1fr; border: round $primary; }
    BackendsScreen #bk-form { width: 1fr; height: 1fr; padding: 0 1; }
    BackendsScreen .row { height: 3; }
    BackendsScreen .row Label { width: 14; padding: 1 1 0 0; color: $text-muted; }
    BackendsScreen .row Input, BackendsScreen .row Select { width: 1fr; }
    BackendsScreen .buttons { height: auto; }
    BackendsScreen .buttons Button { margin: 0 1 0 0; min-width: 10; }
    BackendsScreen #bk-result { height: auto; padding: 1 0; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+s", "save", "Save", id="backends.save", priority=True),
        Binding("ctrl+t", "test", "Test", id="backends.test", priority=True),
        Binding("ctrl+n", "new", "New", id="backends.new", priority=True),
        Binding("f8", "remove", "Remove", id="backends.remove", priority=True),
        Binding("escape", "back", "Back", id="backends.back", priority=True),
    ]

    def __init__(self, tavern: Tavern, session: ChatSession | None = None) -> None:
        super().__init__()
        self.tavern = tavern
        self.session = session
        self.store = BackendStore(tavern.home.root)
        self.last_result = ""
        """The last test's outcome as shown (models, or the error line): tests read it."""

    # -- layout ----------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield Static("", id="bk-status")
        with Horizontal():
            yield OptionList(id="bk-list")
            with VerticalScroll(id="bk-form"):
                for wid, label, kind in (
                    ("name", "Name", "input"),
                    ("api", "API", "select"),
                    ("url", "URL", "input"),
                    ("model", "Model", "input"),
                    ("key-env", "Key env var", "input"),
                    ("key", "Key", "password"),
                ):
                    with Horizontal(classes="row"):
                        yield Label(label)
                        if kind == "select":
                            yield Select([(a, a) for a in APIS], value=APIS[0], allow_blank=False, id=f"bk-{wid}")
                        else:
                            yield Input(id=f"bk-{wid}", password=kind == "password")
                with Horizontal(classes="buttons"):
                    yield Button("Save", id="bk-save", variant="primary")
                    yield Button("Test", id="bk-test")
                    yield Button("Remove", id="bk-remove", variant="error")
                yield Label("Use the highlighted backend for:")
                with Horizontal(classes="buttons"):
                    yield Button("All chats", id="bk-use-global")
                    yield Button("This character", id="bk-use-character", disabled=self.session is None)
                    yield Button("This chat", id="bk-use-chat", disabled=self.session is None)
                with Horizontal(classes="buttons"):
                    yield Button("Character: inherit", id="bk-clear-character", disabled=self.session is None)
                    yield Button("Chat: inherit", id="bk-clear-chat", disabled=self.session is None)
                yield Static("", id="bk-result")
        yield Footer()

    def on_mount(self) -> None:
        self.reload()
        self.query_one("#bk-list", OptionList).focus()

    # -- list and status -------------------------------------------------------------------------

    def reload(self, keep: str | None = None) -> None:
        try:
            profiles = self.store.profiles()
        except TavernError as err:
            self.notify(str(err), title="Backends", severity="error")
            profiles = {}
        options = self.query_one("#bk-list", OptionList)
        options.clear_options()
        in_use = backend_choices(self.tavern, self.session)["in use"]
        mark = lambda name: "● " if name == in_use else "  "  # noqa: E731
        options.add_option(Option(Text(mark(EMBEDDED) + EMBEDDED_LABEL), id=EMBEDDED))
        for p in profiles.values():
            options.add_option(Option(Text(f"{mark(p.name)}{p.name}  ({p.api})"), id=p.name))
        ids = [EMBEDDED, *profiles]
        options.highlighted = ids.index(keep) if keep in ids else 0
        self._show_status()

    def _show_status(self) -> None:
        c = backend_choices(self.tavern, self.session)
        named = lambda v: v or "-"  # noqa: E731
        line = f"Backends — in use: {c['in use']}   all chats: {named(c['global'])}"
        if self.session is not None:
            line += f"   {self.session.card.name}: {named(c['character'])}   this chat: {named(c['chat'])}"
        line += "\nCtrl+S save · Ctrl+T test · F8 remove · Ctrl+N new · Esc back"
        self.query_one("#bk-status", Static).update(line)

    def highlighted(self) -> str | None:
        options = self.query_one("#bk-list", OptionList)
        if options.highlighted is None:
            return None
        return options.get_option_at_index(options.highlighted).id

    @on(OptionList.OptionHighlighted, "#bk-list")
    def _highlighted(self, event: OptionList.OptionHighlighted) -> None:
        name = event.option.id
        profile = self.store.profiles().get(name or "") if name != EMBEDDED else None
        if profile is None:
            return
        self._field("name").value = profile.name
        self.query_one("#bk-api", Select).value = profile.api
        self._field("url").value = profile.url
        self._field("model").value = profile.model
        self._field("key-env").value = ""
        key = self._field("key")
        key.value = ""  # a stored key is never shown; empty keeps it
        key.placeholder = "(stored: leave empty to keep)" if profile.key else ""

    def _field(self, wid: str) -> Input:
        return self.query_one(f"#bk-{wid}", Input)

    # -- actions ---------------------------------------------------------------------------------

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        bid = event.button.id or ""
        if bid.startswith("bk-use-"):
            self.use(bid.removeprefix("bk-use-"))
        elif bid.startswith("bk-clear-"):
            self.use(bid.removeprefix("bk-clear-"), inherit=True)
        elif bid in ("bk-save", "bk-test", "bk-remove"):
            getattr(self, "action_" + bid.removeprefix("bk-"))()

    def action_new(self) -> None:
        for wid in ("name", "url", "model", "key-env", "key"):
            self._field(wid).value = ""
        self._field("key").placeholder = ""
        self._field("name").focus()

    def action_save(self) -> None:
        name = self._field("name").value.strip()
        try:
            self.store.add(
                name,
                str(self.query_one("#bk-api", Select).value),
                self._field("url").value,
                self._field("model").value,
                key=self._field("key").value,
                key_env=self._field("key-env").value,
                keep_key=True,
            )
        except TavernError as err:
            self.notify(str(err), title="Backends", severity="error")
            return
        self._field("key").value = ""  # gone from the screen once stored
        self.reload(keep=name)
        self.notify(f"Saved backend {name}", timeout=3)

    def action_remove(self) -> None:
        name = self.highlighted()
        if not name or name == EMBEDDED:
            return
        try:
            self.store.remove(name)
        except TavernError as err:
            self.notify(str(err), title="Backends", severity="error")
            return
        self.reload()
        self.notify(f"Removed backend {name}", timeout=3)

    def action_test(self) -> None:
        name = self.highlighted()
        if not name or name == EMBEDDED:
            self.notify("Highlight a remote backend to test", severity="warning")
            return
        self._result(Text(f"Testing {name}…", style="dim"), "")
        self.run_test(name)

    @work(thread=True, exclusive=True, group="backend-test", exit_on_error=False)
    def run_test(self, name: str) -> None:
        try:
            models = test_backend(self.store, name)
        except TavernError as err:
            self.app.call_from_thread(self._result, Text(str(err), style="red"), str(err))
            return
        line = f"{name}: connected, {len(models)} model(s)\n" + "\n".join(f"  {m}" for m in models)
        self.app.call_from_thread(self._result, Text(line, style="green"), line)

    def _result(self, text: Text, plain: str) -> None:
        self.query_one("#bk-result", Static).update(text)
        self.last_result = plain

    def use(self, scope: str, inherit: bool = False) -> None:
        name = "" if inherit else self.highlighted()
        if name is None:
            return
        before = self.tavern.backend_name
        try:
            choose_backend(self.tavern, name, scope, self.session)
        except TavernError as err:
            self.notify(str(err), title="Backends", severity="error")
            return
        self.reload(keep=self.highlighted())
        what = "inherited" if inherit else (EMBEDDED_LABEL if name == EMBEDDED else name)
        where = {"global": "all chats", "character": "this character", "chat": "this chat"}[scope]
        self.notify(f"Backend for {where}: {what}", timeout=3)
        if self.tavern.backend_name != before and hasattr(self.app, "settings_changed"):
            self.app.settings_changed(True)  # load the engine now chosen, in the background

    def action_back(self) -> None:
        self.dismiss(None)
