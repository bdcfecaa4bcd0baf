"""Data homes and chats the TUI tests start from: a Tavern with no model to load (the screens
under test never generate), and a chat with a few messages to act on."""

from __future__ import annotations

from pathlib import Path

from tavern.session import Tavern
from tavern.store import Chat, ChatMessage


def offline(home: Path, **overrides: object) -> Tavern:
    return Tavern.open(home, **{"model.path": str(home / "no-model.gguf"), **overrides})


def seeded_chat(tavern: Tavern, n: int = 6) -> Chat:
    """A new chat with Mira: her greeting, then n - 1 lines alternating user and Mira."""
    key, card = tavern.cards.find("Mira")
    chat = tavern.chats.new(key, card)
    for i in range(1, n):
        user = bool(i % 2)
        chat.append(ChatMessage(name="User" if user else "Mira", is_user=user, mes=f"line {i}"))
    return chat
