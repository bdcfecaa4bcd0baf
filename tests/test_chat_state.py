"""Which chat a character opens on (the last opened, then the card's SillyTavern `chat` field,
then the latest), and the state file being a convenience: a broken one is an empty state."""

from __future__ import annotations

import os
from pathlib import Path

from tavern.services.chat_state import FILE_NAME
from tavern.session import Tavern
from tavern.store import ChatMessage


def offline(home: Path) -> Tavern:
    return Tavern.open(home, **{"model.path": str(home / "no-model.gguf")})


def two_chats(tavern: Tavern):
    key, card = tavern.cards.find("Mira")
    old = tavern.chats.store.create(key, card.name, "User")
    new = tavern.chats.store.create(key, card.name, "User")
    tavern.chats.store.rename(new, "second")
    new.append(ChatMessage(name="User", is_user=True, mes="newer"))
    os.utime(old.path, (1, 1))  # the first one is clearly the older
    return key, card, old, new


def test_the_last_opened_chat_wins_over_the_latest_and_survives_a_restart(home: Path) -> None:
    tavern = offline(home)
    key, card, old, new = two_chats(tavern)
    assert tavern.open_chat("Mira").chat.name == new.name  # nothing opened yet: the latest
    tavern.open_chat("Mira", chat_name=old.name)
    before = old.path.read_bytes()
    assert offline(home).open_chat("Mira").chat.name == old.name
    assert offline(home).open_chat("Mira", read_only=True).chat.name == old.name  # what `prompt` shows
    assert old.path.read_bytes() == before  # opening wrote nothing to the chat
    tavern = offline(home)
    tavern.chats.rename("Mira", old.name, "renamed")
    assert offline(home).open_chat("Mira").chat.name == "renamed"
    tavern.chats.delete("Mira", "renamed")
    assert offline(home).open_chat("Mira").chat.name == new.name


def test_a_sillytavern_card_names_its_last_chat(home: Path) -> None:
    tavern = offline(home)
    key, card, old, new = two_chats(tavern)
    card.root_extra["chat"] = old.name  # SillyTavern's top-level field
    assert tavern.chats.choose(key, card).name == old.name
    card.root_extra["chat"] = "../../settings"  # never a path out of the character's folder
    tavern.chats.state._last.clear()
    assert tavern.chats.choose(key, card).name == new.name


def test_a_broken_state_file_is_an_empty_state(home: Path) -> None:
    tavern = offline(home)
    two_chats(tavern)
    for junk in (b"\xff\xfe not json", b"[1, 2]", b'{"last_opened": {"Mira": 5}, "drafts": {"Mira": []}}'):
        (home / FILE_NAME).write_bytes(junk)
        again = offline(home)
        assert again.open_chat("Mira").chat.name == "second"
        assert again.chats.state.draft("Mira", "second") == ""
