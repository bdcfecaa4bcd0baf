"""The backends screen (F4) on the real app: add a profile with a key, test it against a real
`python -m llama_cpp.server` and against a refused port, remove one, and choose a backend for
all chats, the character and the chat (no local model needed: its path points nowhere)."""

from __future__ import annotations

import json
import socket
import stat
from pathlib import Path

from remote.llama_server import llama_server  # noqa: F401  (the fixture)
from textual.widgets import Input, Select, Static
from tui.test_screens import library, offline, wait_until

from tavern.backends import EMBEDDED, BackendStore
from tavern.session import Tavern
from tavern.tui import app as tavern_app
from tavern.tui.app import TavernApp, make_app
from tavern.tui.screens.backends import BackendsScreen
from tavern.tui.screens.chat import ChatScreen
from tavern.tui.screens.settings import SettingsScreen

KEY = "sk-tui-secret-98765"


def _refused_url() -> str:
    with socket.socket() as s:  # a port nobody listens on once this socket is closed
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


async def _fill(pilot, screen: BackendsScreen, name: str, api: str, url: str, key: str = "") -> None:
    await pilot.press("ctrl+n")
    screen.query_one("#bk-name", Input).value = name
    screen.query_one("#bk-api", Select).value = api
    screen.query_one("#bk-url", Input).value = url
    screen.query_one("#bk-key", Input).value = key
    await pilot.press("ctrl+s")
    await wait_until(pilot, lambda: name in BackendStore(screen.tavern.home.root).profiles())


def _highlight(screen: BackendsScreen, name: str) -> None:
    options = screen.query_one("#bk-list")
    options.highlighted = [options.get_option_at_index(i).id for i in range(options.option_count)].index(name)


def _screen_text(app) -> str:
    return "\n".join(str(w.render()) for w in app.screen.query(Static)) + "".join(
        w.value for w in app.screen.query(Input)
    )


async def test_add_test_and_remove_backends(home: Path, llama_server: str) -> None:  # noqa: F811
    tavern = offline(home)
    app = make_app(tavern)
    async with app.run_test(size=(100, 32)) as pilot:
        await library(pilot, app)
        await pilot.press("f10")  # reachable from the settings screen's button too
        await wait_until(pilot, lambda: isinstance(app.screen, SettingsScreen))
        app.screen.query_one("#set-backends").press()
        await wait_until(pilot, lambda: isinstance(app.screen, BackendsScreen))
        screen = app.screen

        await _fill(pilot, screen, "srv", "openai-chat", llama_server, key=KEY)
        store = BackendStore(home)
        assert store.get("srv").key == KEY  # kept in the 0600 key file, never in the listing
        assert stat.S_IMODE((home / "keys.toml").stat().st_mode) == 0o600
        assert KEY not in (home / "backends.toml").read_text()
        assert KEY not in _screen_text(app)  # not shown back, not even in the key field

        _highlight(screen, "srv")
        await pilot.press("ctrl+t")
        await wait_until(pilot, lambda: "connected" in screen.last_result or "srv" not in screen.last_result)
        assert "connected, 1 model(s)" in screen.last_result and ".gguf" in screen.last_result

        await _fill(pilot, screen, "gone", "llamacpp", _refused_url())
        _highlight(screen, "gone")
        await pilot.press("ctrl+t")
        await wait_until(pilot, lambda: "cannot connect" in screen.last_result)
        assert "\n" not in screen.last_result  # one line

        # An edit without a key keeps the stored one.
        _highlight(screen, "srv")
        await pilot.pause(0.05)
        screen.query_one("#bk-model", Input).value = "tiny"
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: BackendStore(home).get("srv").model == "tiny")
        assert BackendStore(home).get("srv").key == KEY

        _highlight(screen, "gone")
        await pilot.press("f8")
        await wait_until(pilot, lambda: "gone" not in BackendStore(home).profiles())
        assert set(BackendStore(home).profiles()) == {"srv"}
        ids = [screen.query_one("#bk-list").get_option_at_index(i).id
               for i in range(screen.query_one("#bk-list").option_count)]
        assert ids == [EMBEDDED, "srv"]


async def test_choose_backend_globally_per_character_and_per_chat(home: Path, llama_server: str) -> None:  # noqa: F811
    tavern = offline(home)
    BackendStore(home).add("srv", "openai-chat", llama_server)
    app = make_app(tavern)
    async with app.run_test(size=(100, 32)) as pilot:
        await library(pilot, app)
        app.open_character("Mira")
        await wait_until(pilot, lambda: isinstance(app.screen, ChatScreen))
        session = app.screen.session
        await wait_until(pilot, lambda: app.screen.is_mounted and app.focused is not None)
        await pilot.press("f4")
        await wait_until(pilot, lambda: isinstance(app.screen, BackendsScreen))
        screen = app.screen

        _highlight(screen, "srv")
        screen.query_one("#bk-use-chat").press()
        await wait_until(pilot, lambda: tavern.backend_name == "srv")
        chat_file = session.chat.path
        assert json.loads(chat_file.read_text().splitlines()[0])["chat_metadata"]["tavern_backend"] == "srv"
        # The next reply's engine is the server's (the app loads it in the background).
        await wait_until(pilot, lambda: tavern.engine_loaded and getattr(tavern.engines.current, "profile", None))
        assert "in use: srv" in str(screen.query_one("#bk-status").render())

        _highlight(screen, EMBEDDED)
        screen.query_one("#bk-use-character").press()
        await pilot.pause(0.05)
        assert tavern.cards.find("Mira")[1].extensions["tavern"]["backend"] == EMBEDDED
        assert tavern.backend_name == "srv"  # the chat's choice still beats the character's

        screen.query_one("#bk-clear-chat").press()
        await wait_until(pilot, lambda: tavern.backend_name == "")  # now the character's: embedded

        _highlight(screen, "srv")
        screen.query_one("#bk-use-global").press()
        await pilot.pause(0.05)
        assert Tavern.open(home).settings.model.backend == "srv"
        assert tavern.backend_name == ""  # the character still picks the embedded engine
        screen.query_one("#bk-clear-character").press()
        await wait_until(pilot, lambda: tavern.backend_name == "srv")
        await pilot.press("escape")
        await wait_until(pilot, lambda: isinstance(app.screen, ChatScreen))


class NotedApp(TavernApp):
    """The real app, with its notifications kept for the test to read."""

    CSS_PATH = str(Path(tavern_app.__file__).with_name("tavern.tcss"))

    def __init__(self, tavern: Tavern) -> None:
        super().__init__(tavern)
        self.notes: list[str] = []

    def notify(self, message, **kwargs) -> None:
        self.notes.append(str(message))
        super().notify(message, **kwargs)


async def test_the_chat_says_once_that_cfg_is_unavailable_on_the_backend(home: Path, llama_server: str) -> None:  # noqa: F811
    BackendStore(home).add("srv", "openai-chat", llama_server)
    tavern = Tavern.open(home, **{"model.backend": "srv", "generation.max_tokens": 6, "memory.enabled": False})
    key, card = tavern.cards.find("Mira")
    chat = tavern.chats.new(key, card)
    chat.update_metadata({"cfg_guidance_scale": 1.5, "cfg_negative_prompt": "Be rude."})
    app = NotedApp(tavern)
    async with app.run_test(size=(100, 32)) as pilot:
        await library(pilot, app)
        app.open_character("Mira")
        await wait_until(pilot, lambda: isinstance(app.screen, ChatScreen))
        screen = app.screen
        await wait_until(pilot, lambda: screen.is_mounted and app.focused is not None)
        for text in ("hello", "again"):
            before = len(screen.session.chat)
            screen.composer.value = text
            await pilot.press("enter")
            await wait_until(pilot, lambda b=before: len(screen.session.chat) >= b + 2 and not screen.generating, 60)
        said = [n for n in app.notes if "CFG is unavailable on this backend (openai-chat)" in n]
        assert len(said) == 1
