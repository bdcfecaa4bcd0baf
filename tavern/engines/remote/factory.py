"""Which remote profile a chat uses, and opening a `RemoteEngine` for it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

# Where a chat or a character names its backend: chat metadata (SillyTavern keeps per-chat
# state there too) and the card's extensions.
CHAT_KEY = "tavern_backend"


def chosen_backend(card: Any, chat: Any) -> str:
    meta = getattr(getattr(chat, "header", None), "chat_metadata", None) or {}
    if meta.get(CHAT_KEY):
        return str(meta[CHAT_KEY])
    ext = (getattr(card, "extensions", None) or {}).get("tavern") or {}
    return str(ext.get("backend", "")) if isinstance(ext, dict) else ""


def open_remote(root: Path, name: str, n_ctx: int) -> Any:
    from tavern.backends import BackendStore
    from tavern.engines.remote.engine import RemoteEngine

    store = BackendStore(root)
    engine = RemoteEngine(store.get(name), n_ctx=n_ctx, store=store)
    engine.load()
    return engine
