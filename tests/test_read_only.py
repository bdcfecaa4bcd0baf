"""One writer per data home: previews and exports read a chat without touching it, even while a
partial reply waits to be recovered (another Tavern is streaming into it)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tavern.session import Tavern
from tavern.store import ChatMessage


def tavern(home: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TAVERN_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "tavern", *args], capture_output=True, text=True, env=env, timeout=300)


def test_prompt_and_export_leave_a_streaming_chat_alone(home: Path, tmp_path: Path) -> None:
    app = Tavern.open(home)
    session = app.open_chat("Mira", new=True)
    session.chat.append(ChatMessage(name="User", is_user=True, mes="Hello there"))
    # A reply is streaming (another Tavern holds the home): its sidecar holds the partial text.
    session.chat.begin_reply(ChatMessage(name="Mira", is_user=False, mes=""))
    session.chat.update_partial("Welcome to the Rusty")
    folder = session.chat.path.parent
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    for args in (
        ("prompt", "Mira", "--ctx", "1024"),
        ("export", "chat", "Mira", "--to", str(tmp_path / "out.md")),
        ("lore", "scan", "Saltmere", "--character", "Mira"),
        ("cfg", "Mira"),
    ):
        r = tavern(home, *args)
        assert r.returncode == 0, (args, r.stderr)
    after = {p.name: p.read_bytes() for p in folder.iterdir()}
    assert after == before  # not a byte changed, the sidecar still there for the writer
    assert "Hello there" in (tmp_path / "out.md").read_text(encoding="utf-8")
    # The writer finishes its reply as if nobody had looked.
    session.chat.finish_reply(ChatMessage(name="Mira", is_user=False, mes="Welcome to the Rusty Lantern!"))
    assert session.chat[-1].mes == "Welcome to the Rusty Lantern!"
