"""The rolling summary through a remote backend: a real `python -m llama_cpp.server` writes it
in the background, as the embedded engine does, and the next prompt carries it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tavern.backends import BackendStore, Profile
from tavern.engines.base import Finished
from tavern.engines.remote.engine import RemoteEngine
from tavern.memory.summary import META_KEY, TEXT_KEY
from tavern.store import ChatMessage

pytest.importorskip("llama_cpp.server.app", reason="llama-cpp-python[server] not installed")

FILLER = ["The road is dry today.", "More tea? The pot is warm.", "The inn is full tonight.", "The cook makes stew."]


def test_summary_is_written_by_a_remote_backend(llama_server, home: Path) -> None:
    from tavern.session import Tavern

    BackendStore(home).save(Profile(name="srv", api="openai-text", url=llama_server + "/v1"))
    app = Tavern.open(
        home,
        **{
            "model.backend": "srv",
            "model.n_ctx": 1024,
            "generation.max_tokens": 16,
            "generation.temperature": 0.0,
            "memory.summary_max_tokens": 48,
            "memory.recall": False,
        },
    )
    session = app.open_chat("Mira", new=True)
    for i in range(80):
        is_user = i % 2 == 1
        name = session.user_name if is_user else session.card.name
        session.chat.append(ChatMessage(name=name, is_user=is_user, mes=f"{FILLER[i % len(FILLER)]} ({i})"))
    final = [e for e in session.send("Tell me about the inn.") if isinstance(e, Finished)][0]
    assert final.error is None
    assert isinstance(app.load_engine(), RemoteEngine)  # the summary job goes to the server too
    window_start = session.last_prompt.first_message_index
    assert window_start > 20
    assert app.memory.wait_idle(600)
    meta = session.chat.header.chat_metadata
    assert meta[TEXT_KEY].strip()
    assert meta[META_KEY]["start"] == 0 and meta[META_KEY]["end"] == window_start
    [e for e in session.send("And the cook?") if isinstance(e, Finished)]
    assert meta[TEXT_KEY] in session.last_prompt.text
