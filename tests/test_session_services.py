"""The services the app's screens call (and the CLI can): chats, messages, settings, personas,
characters and lorebooks, on a real data home. No model is needed."""

from __future__ import annotations

from pathlib import Path

import pytest

from tavern.errors import ConfigError, NotFoundError, TavernError
from tavern.personas import Persona
from tavern.session import Tavern
from tavern.store import ChatMessage

DATA = Path(__file__).resolve().parent / "data" / "cards"


def session_with(tavern: Tavern, n: int = 5):
    s = tavern.open_chat("Mira", new=True)
    for i in range(1, n):
        s.chat.append(ChatMessage(name="User" if i % 2 else "Mira", is_user=bool(i % 2), mes=f"m{i}"))
    return s


def test_message_edit_hide_delete_branch_and_note(tmp_path: Path) -> None:
    tavern = Tavern.open(tmp_path / "home")
    s = session_with(tavern)
    s.edit_message(2, "changed")
    s.set_hidden(1, True)
    again = tavern.open_chat("Mira", chat_name=s.chat.name)
    assert again.chat[2].mes == "changed" and again.chat[1].is_system
    s.delete_message(3)
    assert [m.mes for m in tavern.open_chat("Mira", chat_name=s.chat.name).chat][1:] == [
        "m1",
        "changed",
        "m4",
    ]
    child = s.branch_at(2)
    assert len(child.chat) == 3 and child.chat.header.chat_metadata["main_chat"] == s.chat.name
    s.set_author_note("Rain all day.", depth=2, interval=3, role=1)
    assert tavern.open_chat("Mira", chat_name=s.chat.name).author_note() == {
        "note_prompt": "Rain all day.",
        "note_depth": 2,
        "note_interval": 3,
        "note_role": 1,
    }
    with pytest.raises(TavernError):
        s.set_author_note("x", depth=-1)
    assert [i for i, _ in s.search("M4")] == [3]


def test_chat_list_rename_delete_and_export(tmp_path: Path) -> None:
    tavern = Tavern.open(tmp_path / "home")
    s = session_with(tavern)
    other = session_with(tavern, 2)
    assert {c.name for c in tavern.chats.list("Mira")} == {s.chat.name, other.chat.name}
    assert s.rename("Night one") == "Night one"
    s.chat.append(ChatMessage(name="User", is_user=True, mes="still writes"))  # the open chat follows
    assert tavern.open_chat("Mira", chat_name="Night one").chat[-1].mes == "still writes"
    assert tavern.chats.rename("Mira", other.chat.name, "Second") == "Second"
    with pytest.raises(TavernError):
        tavern.chats.rename("Mira", "Second", "Night one")  # taken
    out = tavern.chats.export("Mira", "Night one", tmp_path / "night.md")
    assert "still writes" in out.read_text()
    with pytest.raises(TavernError):
        tavern.chats.export("Mira", "Night one", tmp_path / "night.docx")
    tavern.chats.delete("Mira", "Second")
    assert [c.name for c in tavern.chats.list("Mira")] == ["Night one"]


def test_settings_written_with_comments_and_checked(tmp_path: Path) -> None:
    tavern = Tavern.open(tmp_path / "home", **{"model.path": str(tmp_path / "none.gguf")})
    path = tavern.home.settings_file
    before = path.read_text()
    with pytest.raises(ConfigError, match="n_ctx"):
        tavern.update_settings({"model.n_ctx": 12})
    with pytest.raises(ConfigError, match="no such setting"):
        tavern.update_settings({"model.nctx": 2048})
    assert path.read_text() == before  # nothing written
    assert tavern.update_settings({"model.n_ctx": 2048}) is True  # the model must reload
    assert tavern.update_settings({"generation.temperature": 0.5, "ui.theme": "nord"}) is False
    text = path.read_text()
    assert "n_ctx = 2048" in text and "temperature = 0.5" in text and 'theme = "nord"' in text
    assert text.startswith("# Tavern settings")
    assert tavern.update_settings({"generation.temperature": None}) is False
    assert "temperature" not in path.read_text()


def test_personas(tmp_path: Path) -> None:
    tavern = Tavern.open(tmp_path / "home")
    tavern.personas.save(Persona("Ada", "A cartographer."))
    tavern.personas.save(Persona("Ada Lovelace", "A mathematician."), old_name="Ada")
    assert [p.name for p in tavern.personas.list()] == ["Ada Lovelace"]
    tavern.use_persona("Ada Lovelace")
    assert tavern.settings.chat.user_name == "Ada Lovelace"
    assert Tavern.open(tmp_path / "home").settings.chat.persona == "A mathematician."
    with pytest.raises(NotFoundError):
        tavern.use_persona("Nobody")
    with pytest.raises(TavernError):
        tavern.personas.save(Persona("  "))


def test_characters_saved_and_imported(tmp_path: Path) -> None:
    from tavern.cards import Card

    tavern = Tavern.open(tmp_path / "home")
    assert tavern.cards.save(None, Card(name="Mira")) == "Mira_1"  # a free key
    with pytest.raises(TavernError):
        tavern.cards.save(None, Card(name=" "))
    seen = []
    report = tavern.import_files(
        [DATA / "real", DATA / "bad" / "no_card.png"], progress=lambda d, t: seen.append((d, t))
    )
    assert sorted(report.card_keys) == ["Coding Sensei", "Seraphina"]
    # The folder's lorebook comes in as a lorebook (one import service for every kind); a file
    # that is no card is one line that names it.
    assert any(i.kind == "lorebook" and i.name == "Eldoria" for i in report.imported)
    assert [i.source.name for i in report.failed] == ["no_card.png"]
    assert "no_card.png" in (report.failed[0].error or "")
    assert seen[-1][0] == seen[-1][1]


def test_lorebooks(tmp_path: Path) -> None:
    tavern = Tavern.open(tmp_path / "home")
    path = tavern.lorebooks.create("Harbor")
    with pytest.raises(TavernError):
        tavern.lorebooks.create("Harbor")
    with pytest.raises(TavernError):
        tavern.lorebooks.create("../x")
    book = tavern.lorebooks.read(path)
    assert book.name == "Harbor" and path in tavern.lorebooks.paths()
    tavern.lorebooks.save(book, path)
