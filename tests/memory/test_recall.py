"""Vector recall against a real persistent Chroma (tmp dir) with the packaged MiniLM."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tavern.cli import main
from tavern.store import ChatMessage

from .conftest import FACT, QUESTION, fill_chat, open_app


def _ask(session, text: str = QUESTION) -> None:
    session.chat.append(ChatMessage(name=session.user_name, is_user=True, mes=text))


def test_a_fact_far_outside_the_window_is_recalled_into_the_prompt(home: Path, shared_engine) -> None:
    app = open_app(home, shared_engine)
    session = app.open_chat("Mira", new=True)
    fact_index = fill_chat(session)
    _ask(session)
    assert app.memory.wait_idle(300)
    prompt = session.build_prompt()
    assert prompt.first_message_index > fact_index + 10  # the fact scrolled out long ago
    assert FACT in prompt.text
    memory_slot = next(s for s in prompt.slots if s.slot == "memory")
    assert memory_slot.tokens > 0
    # Nothing already in the window is recalled a second time.
    assert prompt.text.count("The cook is making stew again, with onions and barley. (149)") <= 1


def test_without_recall_the_fact_is_not_in_the_prompt(home: Path, shared_engine) -> None:
    app = open_app(home, shared_engine, **{"memory.recall": False})
    session = app.open_chat("Mira", new=True)
    fill_chat(session)
    _ask(session)
    assert FACT not in session.build_prompt().text


def test_edits_and_deletes_update_the_index(home: Path, shared_engine) -> None:
    app = open_app(home, shared_engine)
    session = app.open_chat("Mira", new=True)
    fact_index = fill_chat(session, n=70)
    assert app.memory.wait_idle(300)
    msg = session.chat[fact_index]
    msg.mes = "My sister Katarina moved her bees to the island of Vell."
    session.chat.replace(fact_index, msg)
    assert app.memory.wait_idle(300)
    texts = [h.text for h in app.memory.search(session, QUESTION, k=3)]
    assert any("island of Vell" in t for t in texts)
    assert not any("valley of Oster" in t for t in texts)

    session.chat.delete(fact_index)
    assert app.memory.wait_idle(300)
    hits = app.memory.search(session, QUESTION, k=3)
    assert not any("Katarina" in h.text for h in hits)
    # The messages after the deleted one moved up by one: the index says where they are now.
    later = app.memory.search(session, "The cook is making stew again, with onions and barley. (65)", k=1)[0]
    assert later.index == 64 + 1  # the greeting is message 0


def test_memory_search_cli_shows_scores_and_reindex_rebuilds(home: Path, shared_engine, capsys) -> None:
    app = open_app(home, shared_engine)
    session = app.open_chat("Mira", new=True)
    fill_chat(session, n=20)
    assert app.memory.wait_idle(300)
    chat = session.chat.name
    assert main(["--home", str(home), "memory", "reindex", "Mira", "--chat", chat]) == 0
    assert "21 messages, 21 chunks indexed" in capsys.readouterr().out
    assert main(["--home", str(home), "memory", "search", "Mira", "--chat", chat, "--all", "--json", QUESTION]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["hits"][0]["text"].endswith(FACT)
    assert out["hits"][0]["recalled"] is True
    assert out["hits"][0]["score"] > out["hits"][-1]["score"]


def test_chroma_unreachable_chat_goes_on_with_one_warning(home: Path, shared_engine) -> None:
    app = open_app(home, shared_engine, **{"memory.chroma_url": "http://127.0.0.1:9", "generation.max_tokens": 8})
    heard: list[str] = []
    app.memory.on_warning = heard.append
    session = app.open_chat("Mira", new=True)
    fill_chat(session)  # long enough that recall is needed (a short chat never touches Chroma)
    _ask(session)
    assert app.memory.wait_idle(60)
    first = session.build_prompt()
    second = session.build_prompt()
    assert len(heard) == 1 and "memory is off" in heard[0]
    assert any("memory is off" in w for w in first.warnings) != any("memory is off" in w for w in second.warnings)
    events = list(session.send("Hello again"))
    assert events[-1].text  # the reply came, without recall


def test_a_turns_recall_embeds_only_the_new_message(home: Path, shared_engine) -> None:
    """The queries are the latest messages, which the index has just embedded as chunks: their
    vectors are reused, so a turn costs one MiniLM pass (the new message), not three."""
    app = open_app(home, shared_engine)
    session = app.open_chat("Mira", new=True)
    fill_chat(session, n=120)
    assert app.memory.wait_idle(300)
    embedder = app.memory.embedder
    passes: list[list[str]] = []
    real = embedder.embed

    def counting(texts: list[str]) -> list[list[float]]:
        passes.append(list(texts))
        return real(texts)

    embedder.embed = counting  # a spy on the real model: every call still runs MiniLM
    _ask(session)
    assert app.memory.wait_idle(300)  # the index takes the new message in the background
    prompt = session.build_prompt()
    assert FACT in prompt.text  # recall still works
    assert len(passes) == 1 and len(passes[0]) == 1, passes  # the new message, embedded once


def test_a_huge_old_message_is_indexed_by_its_start_and_the_turn_goes_on(home: Path) -> None:
    """A 10 MB message (a paste, a hostile chat file) with long-term memory on: the prompt is
    built and the message indexed by its first MAX_CHUNKS chunks. Recall used to embed all
    ~11,000 of its chunks before the first turn (22 minutes and 1.3 GB on a CPU). The timeout
    only catches a hang."""
    import subprocess
    import sys

    from tavern.memory.chunking import MAX_CHUNKS, MessageRef, chunk_message
    from tavern.session import Tavern

    huge = "The harbour bell rang at dawn. " * 330_000  # 10 MB
    assert len(chunk_message("k", MessageRef(0, "User", huge))) == MAX_CHUNKS
    app = Tavern.open(home)
    chat = app.chats.new("Mira", app.cards.find("Mira")[1])
    chat.append(ChatMessage(name="User", is_user=True, mes=huge))
    for i in range(40):
        chat.append(ChatMessage(name="User" if i % 2 else "Mira", is_user=bool(i % 2), mes=f"Small talk {i}."))
    env = {**os.environ, "TAVERN_HOME": str(home)}
    r = subprocess.run(
        [sys.executable, "-m", "tavern", "prompt", "Mira", "--ctx", "1024", "--explain"],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert "Small talk 39." in r.stdout and huge[:2000] not in r.stdout
