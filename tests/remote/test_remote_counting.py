"""Token counting on a remote backend costs few round trips: the prompt of a 200-message chat is
counted in a batch, and the next turn asks the server only about what is new. Requests are
counted by the engine's httpx hook against a real `python -m llama_cpp.server`."""

from __future__ import annotations

from pathlib import Path

from tavern.backends import BackendStore
from tavern.prompt.token_counter import TokenCounter
from tavern.session import Tavern
from tavern.store import ChatMessage

LINES = [
    "The lanterns along the quay swing in the wind, and the harbourmaster counts the ships twice.",
    "She laughs, tucks a strand of hair behind her ear, and points at the map of the old city.",
    "Rain drums on the tin roof of the tavern; somewhere a dog barks at the tide.",
    "I tell her about the lighthouse keeper who vanished, and the letters he left behind.",
]


def _chat_home(home: Path, url: str) -> None:
    app = Tavern.open(home)
    session = app.open_chat("Mira", new=True)
    for i in range(200):
        user = i % 2 == 0
        session.chat.append(ChatMessage(name="User" if user else "Mira", is_user=user, mes=f"{LINES[i % 4]} ({i})"))
    BackendStore(home).add("srv", "openai-chat", url)


def _open(home: Path, batched: bool):
    app = Tavern.open(home, **{"memory.enabled": False})
    app.backend_override = "srv"
    session = app.open_chat("Mira")
    engine = app.load_engine()
    if not batched:
        app._counter = TokenCounter(engine.count_tokens)  # one request per piece, as before batching
    return app, session, engine


def test_a_turn_asks_the_server_only_about_new_pieces(home: Path, llama_server: str) -> None:  # noqa: F811
    _chat_home(home, llama_server)
    app, session, engine = _open(home, batched=True)
    first = session.build_prompt()
    kept = first.first_message_index
    assert 0 < kept < 200  # the chat overflows the window: counting decided where it starts

    session.chat.append(ChatMessage(name="User", is_user=True, mes="And the second letter?"))
    session.chat.append(ChatMessage(name="Mira", is_user=False, mes="It was never sent, she says."))
    before = engine.http_requests
    second = session.build_prompt()
    # The two new messages (counted together) and the whole prompt once: nothing the server
    # counted last turn is asked again.
    assert engine.http_requests - before <= 3
    assert "It was never sent" in second.text


def test_batched_counting_chooses_the_same_prompt_as_one_by_one(home: Path, llama_server: str) -> None:  # noqa: F811
    _chat_home(home, llama_server)
    app, session, engine = _open(home, batched=False)
    one_by_one = session.build_prompt()
    app.engines.drop()
    app, session, engine = _open(home, batched=True)
    batched = session.build_prompt()
    assert engine.count_method == "server"
    assert batched.text == one_by_one.text
    assert batched.first_message_index == one_by_one.first_message_index
    assert batched.prompt_tokens == one_by_one.prompt_tokens
