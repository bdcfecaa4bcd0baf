"""The rolling summary on the real SmolLM2 engine: written in the background after a turn, on
the engine's background sequence (the chat's KV cache survives), editable and switchable."""

from __future__ import annotations

import json
from pathlib import Path

from tavern.cli import main
from tavern.engines.base import Finished, Token
from tavern.memory.summary import META_KEY, TEXT_KEY, set_off

from .conftest import fill_chat, open_app

SETTINGS = {"generation.max_tokens": 16, "memory.summary_max_tokens": 48, "memory.recall": False}


def test_summary_covers_what_left_the_window_and_keeps_the_chat_cache(home: Path, shared_engine, capsys) -> None:
    app = open_app(home, shared_engine, **SETTINGS)
    session = app.open_chat("Mira", new=True)
    fill_chat(session, n=80)
    app.memory.wait_idle(300)

    for event in session.send("Tell me about the inn."):
        if isinstance(event, Token):
            assert not app.memory._running  # no background work while the reply streams
        if isinstance(event, Finished):
            break  # as the TUI does: the generator is dropped, not exhausted
    window_start = session.last_prompt.first_message_index
    assert window_start > 20
    assert app.memory.wait_idle(600)

    meta = session.chat.header.chat_metadata
    assert meta[TEXT_KEY].strip()
    assert meta[META_KEY]["start"] == 0 and meta[META_KEY]["end"] == window_start
    # It is saved in the chat file, and the next prompt carries it.
    reopened = app.chats.open(session.key, session.chat.name)
    assert reopened.header.chat_metadata[TEXT_KEY] == meta[TEXT_KEY]
    final = [e for e in session.send("And the cook?") if isinstance(e, Finished)][0]
    assert meta[TEXT_KEY] in session.last_prompt.text
    # The summary decoded on its own sequence: the chat's cache still held most of the prompt.
    assert final.stats.cached_tokens > final.stats.prompt_tokens // 2

    chat = session.chat.name
    home_args = ["--home", str(home)]
    assert main([*home_args, "memory", "summary", "Mira", "--chat", chat, "--set", "They met at the inn."]) == 0
    assert main([*home_args, "memory", "summary", "Mira", "--chat", chat, "--json"]) == 0
    shown = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert shown["summary"] == "They met at the inn." and shown["end"] == window_start

    edited = open_app(home, shared_engine, **SETTINGS).open_chat("Mira", chat_name=chat)
    assert "They met at the inn." in edited.build_prompt().text
    set_off(edited.chat, True)  # what `memory summary --off` does (main() above holds the home lock)
    off = open_app(home, shared_engine, **SETTINGS).open_chat("Mira", chat_name=chat)
    assert "They met at the inn." not in off.build_prompt().text
