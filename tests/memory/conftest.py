"""Fixtures for long-term memory: the real SmolLM2 engine (shared), a real Chroma in tmp dirs,
the packaged MiniLM, and a long chat whose early facts have scrolled out of the window."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tavern.store import ChatMessage

FACT = "My sister Katarina keeps her bees in the valley of Oster, by the old mill."
QUESTION = "Where does my sister keep her bees?"
FILLER = [
    "The weather is fine today, and the road is dry.",
    "Would you like more tea? The pot is still warm.",
    "The inn is busy tonight; the tables are all full.",
    "I heard music from the square earlier this evening.",
    "Let us sit by the fire for a while and rest.",
    "The cook is making stew again, with onions and barley.",
]


@pytest.fixture(scope="session")
def shared_engine(model_path: Path) -> Any:
    """One SmolLM2 engine for the memory tests (loading it per test costs seconds)."""
    from tavern.engines.local import LocalEngine

    engine = LocalEngine(model_path, n_ctx=1024, n_threads=0)
    engine.load()
    yield engine
    engine.unload()


def open_app(home: Path, engine: Any, **overrides: Any) -> Any:
    from tavern.session import Tavern

    app = Tavern.open(home, **{"model.n_ctx": 1024, **overrides})
    app.use_engine(engine)  # the shared engine: the same model file and context size
    return app


def fill_chat(session: Any, n: int = 150, fact_at: int = 2) -> int:
    """Append `n` filler messages with FACT at `fact_at`; returns FACT's index."""
    fact_index = -1
    for i in range(n):
        is_user = i % 2 == 1
        name = session.user_name if is_user else session.card.name
        text = FACT if i == fact_at else f"{FILLER[i % len(FILLER)]} ({i})"
        index = session.chat.append(ChatMessage(name=name, is_user=is_user, mes=text))
        if i == fact_at:
            fact_index = index
    return fact_index
