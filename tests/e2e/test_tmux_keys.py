"""Keys as a real terminal sends them (tmux, no kitty keyboard protocol): Alt+Enter arrives as
ESC CR and must add a line without eating the keys typed after it; F7 and a name typed at once
must land in the new card's name field; the chat's name is on its status line at 80x24 and
60x20. No model is needed (its path points nowhere): nothing here generates."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest
from e2e.tmux_driver import Tmux

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux not installed")


def _start(tmux: Tmux, home: Path) -> None:
    env = {"TAVERN_HOME": str(home), "TAVERN_GRAPHICS": "0", "PYTHONPATH": os.getcwd()}
    tmux.start([sys.executable, "-m", "tavern", "--model", str(home / "none.gguf")], env)
    tmux.wait_for(lambda s: "2 characters" in s)


def _open_mira(tmux: Tmux) -> str:
    tmux.keys("Mira", literal=True)
    tmux.wait_for(lambda s: "1 of 2 characters" in s)
    tmux.keys("Enter")
    return tmux.wait_for(lambda s: "Message Mira" in s)  # the composer's placeholder


def test_alt_enter_adds_a_line_and_keeps_what_follows(home: Path) -> None:
    with Tmux(80, 24) as tmux:
        _start(tmux, home)
        _open_mira(tmux)
        tmux.keys("abc", literal=True)
        tmux.keys("C-j")
        tmux.keys("line two", literal=True)
        tmux.keys("M-Enter")  # ESC CR, as xterm and tmux send it
        tmux.keys("line three", literal=True)
        tmux.wait_for(lambda s: "line three" in s)
        chat = next((home / "chats" / "Mira").glob("*.jsonl"))
        assert "line two" not in chat.read_text(encoding="utf-8")  # nothing was sent
        tmux.keys("Enter")
        tmux.wait_for(lambda s: "line two" in chat.read_text(encoding="utf-8"))
        lines = [json.loads(x) for x in chat.read_text(encoding="utf-8").splitlines()]
        assert [m["mes"] for m in lines if m.get("is_user")] == ["abc\nline two\nline three"]
        tmux.keys("C-q")


def test_f7_then_a_name_typed_at_once(home: Path) -> None:
    with Tmux(80, 24) as tmux:
        _start(tmux, home)
        tmux.keys("F7")
        tmux.keys("Bob", literal=True)  # right behind F7, while the editor is being built
        tmux.wait_for(lambda s: "New character" in s and "Bob" in s)
        tmux.keys("C-s")
        tmux.wait_for(lambda s: "Saved" in s or "3 characters" in s)
        assert (home / "characters" / "Bob.png").is_file()
        tmux.keys("C-q")


@pytest.mark.parametrize("size", [(80, 24), (60, 20)])
def test_the_chat_screen_names_its_chat(home: Path, size: tuple[int, int]) -> None:
    with Tmux(*size) as tmux:
        _start(tmux, home)
        screen = _open_mira(tmux)
        chat = next((home / "chats" / "Mira").glob("*.jsonl")).stem
        label = chat.removeprefix("Mira - ")
        status = screen.splitlines()[0]
        assert status.lstrip().startswith("Mira · ") and label[:10] in status, screen
        tmux.keys("C-q")
