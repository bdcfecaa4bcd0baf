"""Lorebook entries marked `vectorized` activate by similarity as well as by keys."""

from __future__ import annotations

import json
from pathlib import Path

from tavern.store import ChatMessage

from .conftest import open_app

BEES = "Katarina's apiary: forty hives of black bees in the valley of Oster, honey sold at the autumn fair."


def _entry(uid: int, keys: list[str], content: str, vectorized: bool) -> dict:
    return {"uid": uid, "key": keys, "keysecondary": [], "comment": f"e{uid}", "content": content,
            "vectorized": vectorized, "position": 0, "order": 100, "disable": False}


def test_a_vectorized_entry_fires_by_meaning_and_a_plain_one_only_by_keys(home: Path, shared_engine) -> None:
    # The bundled character's own book nearly fills the default 25%: leave room for this one.
    app = open_app(home, shared_engine, **{"lore.budget_percent": 80})
    book = {
        "entries": {
            "0": _entry(0, ["zzapiary"], BEES, vectorized=True),
            "1": _entry(1, ["zzhoney"], "The honey guild of Oster keeps bees and sells honey.", vectorized=False),
            "2": _entry(2, ["zzship"], "The harbour master counts ships at dawn.", vectorized=True),
        }
    }
    (home / "lorebooks" / "Oster.json").write_text(json.dumps(book), encoding="utf-8")
    session = app.open_chat("Mira", new=True)
    session.chat.update_metadata({"world_info": "Oster"})
    session.chat.append(ChatMessage(name="User", is_user=True, mes="How many beehives does Katarina have?"))
    prompt = session.build_prompt(explain=True)
    fired = {a.uid: a.reason for a in session.last_lore.activated if a.book == "Oster"}
    assert BEES in prompt.text
    assert fired[0].startswith("similarity")
    assert 1 not in fired and 2 not in fired  # not vectorized / not similar enough

    app.settings.memory.lore_threshold = 1.0  # similarity off: keys alone decide
    app.memory._vec_cache.clear()
    assert BEES not in session.build_prompt().text
    session.chat.append(ChatMessage(name="User", is_user=True, mes="Tell me about the zzapiary."))
    assert BEES in session.build_prompt().text
