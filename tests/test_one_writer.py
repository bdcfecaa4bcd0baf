"""One writer per data home: read-only commands beside a running Tavern (a streaming TUI)
change nothing; commands that write take the home lock."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from test_cli_chat import tavern  # noqa: E402  (importlib mode: sibling)

DATA = Path(__file__).parent / "data"


def snapshot(home: Path) -> dict[str, bytes]:
    chats = home / "chats"
    return {str(p.relative_to(chats)): p.read_bytes() for p in sorted(chats.rglob("*")) if p.is_file()}


@pytest.fixture
def streaming_home(home: Path):
    """A chat whose reply is being streamed (its sidecar holds half a reply), and another
    process holding the home lock, as a TUI in the middle of a reply does."""
    from tavern.session import Tavern
    from tavern.store import ChatMessage

    app = Tavern.open(home)
    session = app.open_chat("Mira")
    session.chat.append(ChatMessage(name="User", is_user=True, mes="Tell me about the green sails."))
    session.chat.begin_reply(ChatMessage(name="Mira", is_user=False, mes=""))
    session.chat.update_partial("The green sails belong to")
    session.chat._write_partial(force=True)
    assert session.chat.partial_path.exists()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from tavern.store.lock import acquire_home_lock; import time; "
            f"l = acquire_home_lock({str(home)!r}); print('held', flush=True); time.sleep(120)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        yield home, session.chat
    finally:
        holder.kill()
        holder.wait()


def test_read_only_commands_change_nothing_beside_a_streaming_tavern(streaming_home, tmp_path: Path) -> None:
    home, chat = streaming_home
    before = snapshot(home)
    commands = [
        ("prompt", "Mira"),
        ("export", "chat", "Mira", "--to", str(tmp_path / "out.md")),
        ("lore", "scan", "saltmere", "--character", "Mira"),
    ]
    for args in commands:
        r = tavern(home, *args)
        assert r.returncode == 0, (args, r.stderr)
        assert snapshot(home) == before, args  # not the recovered reply, not a repair: nothing
    # ...and the streaming Tavern saves its reply as if they had never run (no ChatChangedError).
    from tavern.store import ChatMessage

    chat.finish_reply(ChatMessage(name="Mira", is_user=False, mes="The green sails belong to smugglers."))
    assert chat[-1].mes == "The green sails belong to smugglers."


def test_prompt_for_a_character_without_a_chat_writes_none(home: Path) -> None:
    r = tavern(home, "prompt", "Mira")
    assert r.returncode == 0, r.stderr
    assert "Mira" in r.stdout
    assert not list((home / "chats").rglob("*.jsonl"))


def test_import_takes_the_home_lock(streaming_home) -> None:
    home, _chat = streaming_home
    before = snapshot(home)
    r = tavern(home, "import", str(DATA / "cards" / "real" / "Seraphina.png"))
    assert r.returncode == 1 and "another Tavern" in r.stderr
    assert not (home / "characters" / "Seraphina.png").exists() and snapshot(home) == before
