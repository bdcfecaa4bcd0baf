"""`tavern backends use`: the backend for every chat, one character or one chat, through the same
service as the TUI's backends screen; what `Tavern.backend_name` then resolves to."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tavern.backends import BackendStore
from tavern.session import Tavern


def tav(home: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TAVERN_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "tavern", *args], env=env, capture_output=True, text=True)


def test_use_globally_per_character_and_per_chat(home: Path) -> None:
    BackendStore(home).add("srv", "textgen", "http://127.0.0.1:9/v1")
    assert tav(home, "backends", "use", "srv").returncode == 0
    assert Tavern.open(home).settings.model.backend == "srv"

    out = tav(home, "backends", "use", "embedded", "--character", "Mira")
    assert out.returncode == 0, out.stderr
    app = Tavern.open(home)
    assert app.cards.find("Mira")[1].extensions["tavern"]["backend"] == "embedded"
    session = app.open_chat("Mira")
    assert app.backend_name == ""  # the character picks the embedded engine over the global srv

    out = tav(home, "backends", "use", "srv", "--character", "Mira", "--chat", session.chat.name)
    assert out.returncode == 0, out.stderr
    app = Tavern.open(home)
    app.open_chat("Mira", chat_name=session.chat.name)
    assert app.backend_name == "srv"  # the chat's choice beats the character's

    assert tav(home, "backends", "use", "--clear", "--character", "Mira", "--chat", session.chat.name).returncode == 0
    assert tav(home, "backends", "use", "--clear", "--character", "Mira").returncode == 0
    app = Tavern.open(home)
    app.open_chat("Mira", chat_name=session.chat.name)
    assert app.backend_name == "srv" and "backend" not in app.cards.find("Mira")[1].extensions["tavern"]


def test_use_refuses_unknown_names_in_one_line(home: Path) -> None:
    out = tav(home, "backends", "use", "nope")
    assert out.returncode != 0 and out.stderr.strip().count("\n") == 0 and "no backend named 'nope'" in out.stderr
    out = tav(home, "backends", "add", "embedded", "--api", "textgen", "--url", "http://x")
    assert out.returncode != 0 and "other than 'embedded'" in out.stderr
    assert Tavern.open(home).settings.model.backend == ""
