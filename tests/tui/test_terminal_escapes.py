"""A card's terminal escapes reach the screen as visible marks, never as commands (issue #26).

The real app runs through Pilot with Textual's headless driver, except that the app is told the
driver is a terminal: every frame is then written to it as it would be to a real one, and the
test reads those bytes. No model is needed: the library and the chat are the store and screens.
"""

from __future__ import annotations

import json
from pathlib import Path

from textual.drivers.headless_driver import HeadlessDriver
from tui.pilot_wait import waiter

from tavern.session import Tavern
from tavern.store import ChatMessage
from tavern.tui.app import make_app
from tavern.tui.screens.card_editor import CardEditorScreen
from tavern.tui.screens.chat import ChatScreen
from tavern.tui.screens.library import LibraryScreen

wait_until = waiter(20.0)

OSC52 = "\x1b]52;c;SGVsbG8=\x07"  # writes "Hello" to the user's clipboard
CLEAR = "\x1b[2J"  # clears the screen
CSI8 = "\x9b2J"  # the same, with the 8-bit CSI that terminals read as a C1 control
RLO = "\u202e"  # right-to-left override: what is shown is not what is in the file
# None of these is Textual's own (it ends its OSC 22 pointer-shape sequence with a BEL itself).
RAW = ("\x1b]52", "SGVsbG8=\x07", "\x1b[2J", "\x9b", "\u202e")


def hostile_card(folder: Path) -> Path:
    data = {
        "name": f"Eve{OSC52}{CLEAR}",
        "description": f"A spy. {OSC52} {CLEAR}",
        "personality": "",
        "scenario": "",
        "first_mes": f"Hello there {OSC52} and {CLEAR} and {CSI8} and {RLO}evil.",
        "mes_example": "",
        "creator_notes": f"Notes {OSC52}{CLEAR}",
        "creator": f"mallory{CLEAR}",
        "tags": [f"spy{OSC52}"],
        "system_prompt": "",
        "post_history_instructions": "",
        "alternate_greetings": [],
        "extensions": {},
    }
    path = folder / "eve.json"
    path.write_text(json.dumps({"spec": "chara_card_v2", "spec_version": "2.0", "data": data}))
    return path


def recording_driver(sink: list[str]) -> type[HeadlessDriver]:
    class TerminalLike(HeadlessDriver):
        """Headless input and size, but the app writes its frames here as to a terminal."""

        @property
        def is_headless(self) -> bool:
            return False

        def write(self, data: str) -> None:
            sink.append(data)

    return TerminalLike


async def test_card_and_chat_escapes_are_shown_not_sent_to_the_terminal(tmp_path: Path) -> None:
    home = tmp_path / "home"
    tavern = Tavern.open(home, **{"model.path": str(home / "no-model.gguf")})
    key = tavern.cards.library.import_file(hostile_card(tmp_path))
    card = tavern.cards.find(key)[1]
    chat = tavern.chats.new(key, card)  # the greeting is its first message
    chat.append(ChatMessage(name="User", is_user=True, mes=f"What is {OSC52} this {CLEAR}?"))
    written: list[str] = []
    app = make_app(tavern)
    app.driver_class = recording_driver(written)
    async with app.run_test(size=(100, 30), headless=False) as pilot:
        await wait_until(pilot, lambda: isinstance(app.screen, LibraryScreen))
        library = app.screen
        await pilot.press(*"Eve")  # the search box has the focus: Eve is the one match
        await wait_until(pilot, lambda: library.card is not None and library.card.name == card.name)
        await pilot.pause(0.2)
        shown_library = "".join(written)
        await pilot.press("ctrl+e")  # the card editor: Textual's own Input and TextArea
        await wait_until(pilot, lambda: isinstance(app.screen, CardEditorScreen))
        await pilot.pause(0.2)
        shown_editor = "".join(written)[len(shown_library) :]
        await pilot.press("escape")
        await wait_until(pilot, lambda: app.screen is library)
        before_chat = len("".join(written))
        app.open_character(key)
        await wait_until(pilot, lambda: isinstance(app.screen, ChatScreen))
        screen = app.screen
        await wait_until(pilot, lambda: len(screen.views()) == 2)
        await pilot.pause(0.2)
    shown_chat = "".join(written)[before_chat:]
    for frames in (shown_library, shown_editor, shown_chat):
        assert frames, "the app wrote its frames to the driver"
        for raw in RAW:
            assert raw not in frames, f"{raw!r} from the card reached the terminal"
    # Nothing is lost from view: the escapes are on screen as marks, in the library (name,
    # tags, creator, notes, greeting) and in the chat (the speaker, the greeting, a message).
    assert "Eve␛]52;c;SGVsbG8=␇␛[2J" in shown_library
    assert "mallory␛[2J" in shown_library
    assert "A spy. ␛]52;c;SGVsbG8=␇ ␛[2J" in shown_editor  # the description, as it will be edited
    assert "What is ␛]52;c;SGVsbG8=␇ this ␛[2J?" in shown_chat
    assert "<U+009B>2J" in shown_chat and "<U+202E>evil" in shown_chat
