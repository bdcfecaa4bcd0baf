"""The chats folder: listing, creating, branches, checkpoints, rename, trash, import, export."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from tavern.errors import ChatStoreError, NotFoundError
from tavern.store import ChatNotFoundError, ChatReadOnlyError, ChatStore

from .conftest import DATA, bot, lines_of, user


def test_list_chats_counts_messages_and_previews_the_last(data_home: Path) -> None:
    store = ChatStore(data_home / "chats")
    [info] = store.list_chats("Seraphina")
    assert info.name == "Seraphina - 2024-09-15@14h03m22s"
    assert info.message_count == 9
    assert info.preview.startswith("*She hands you a cup of tea")
    assert store.list_chats("Nobody") == []


def test_create_names_chats_as_sillytavern_and_never_reuses_a_name(store: ChatStore) -> None:
    first = store.create("Seraphina", "Seraphina", "Anon", greeting=bot("Hello."))
    second = store.create("Seraphina", "Seraphina", "Anon")
    assert first.name.startswith("Seraphina - ") and "@" in first.name
    assert first.path != second.path
    assert len(first) == 1 and len(second) == 0
    header = json.loads(lines_of(first.path)[0])
    assert list(header) == ["user_name", "character_name", "create_date", "chat_metadata"]
    os.utime(first.path, (time.time() + 10, time.time() + 10))
    assert store.list_chats("Seraphina")[0].name == first.name
    assert store.latest("Seraphina").name == first.name
    assert store.latest("Nobody") is None


def test_open_a_missing_chat_or_a_bad_key(store: ChatStore) -> None:
    with pytest.raises(ChatNotFoundError, match="no chat 'nope' for character 'Seraphina'") as err:
        store.open("Seraphina", "nope")
    assert isinstance(err.value, NotFoundError) and isinstance(err.value, ChatStoreError)
    with pytest.raises(ChatStoreError, match="invalid character key"):
        store.list_chats("../etc")


def test_branch_copies_up_to_a_message_and_links_both_ways(data_home: Path) -> None:
    store = ChatStore(data_home / "chats")
    parent = store.open("Seraphina", "Seraphina - 2024-09-15@14h03m22s")
    source_lines = lines_of(parent.path)
    child = store.branch(parent, 3)
    assert child.name.startswith("Branch #3 - ")
    assert len(child) == 4
    # The copied messages are the parent's lines, byte for byte.
    assert lines_of(child.path)[1:] == source_lines[1:5]
    meta = child.header.chat_metadata
    assert meta["main_chat"] == parent.name
    assert meta["tavern_parent"] == {"chat": parent.name, "index": 3}
    assert meta["note_prompt"] == parent.header.chat_metadata["note_prompt"]
    assert store.open("Seraphina", parent.name)[3].extra["branches"] == [child.name]
    named = store.branch(parent, 0, name="What if")
    assert named.name == "What if" and len(named) == 1


def test_checkpoint_is_a_named_branch_recorded_in_the_parent(store: ChatStore) -> None:
    chat = store.create("Seraphina", "Seraphina", "Anon", greeting=bot("Hello."))
    chat.append(user("Let's go to the shrine."))
    chat.append(bot("Very well."))
    point = store.checkpoint(chat, 1, "Before the shrine")
    assert point.name.startswith("Before the shrine - ") and len(point) == 2
    unnamed = store.checkpoint(chat, 2)
    assert unnamed.name.startswith("Checkpoint #")
    again = store.open("Seraphina", chat.name)
    assert again[1].extra["bookmark_link"] == point.name
    assert again.header.chat_metadata["tavern_checkpoints"] == [
        {"name": point.name, "index": 1, "label": "Before the shrine"},
        {"name": unnamed.name, "index": 2, "label": ""},
    ]
    assert "tavern_checkpoints" not in point.header.chat_metadata


def test_rename_moves_the_file_and_refuses_to_overwrite(store: ChatStore) -> None:
    chat = store.create("Seraphina", "Seraphina", "Anon", greeting=bot("Hello."))
    other = store.create("Seraphina", "Seraphina", "Anon")
    store.rename(chat, "The shrine arc")
    assert chat.name == "The shrine arc" and chat.path.exists()
    chat.append(user("still writable"))
    assert len(store.open("Seraphina", "The shrine arc")) == 2
    with pytest.raises(ChatStoreError, match="already exists"):
        store.rename(other, "The shrine arc.jsonl")
    assert other.path.exists()


def test_delete_goes_to_the_trash_and_can_be_restored(store: ChatStore) -> None:
    chat = store.create("Seraphina", "Seraphina", "Anon", greeting=bot("Hello."))
    name = chat.name
    trashed = store.delete(chat)
    assert trashed.exists() and trashed.is_relative_to(store.home / "trash")
    assert store.list_chats("Seraphina") == []
    restored = store.restore(trashed, "Seraphina")
    assert restored.name == name and restored[0].mes == "Hello."


def test_import_validates_and_skips_broken_lines(store: ChatStore, tmp_path: Path) -> None:
    not_utf8 = tmp_path / "latin1.jsonl"
    not_utf8.write_bytes('{"user_name":"Jos\xe9"}\n'.encode("latin-1"))
    with pytest.raises(ChatStoreError, match="latin1.jsonl is not a SillyTavern chat: not UTF-8"):
        store.import_jsonl(not_utf8, "X")
    card = tmp_path / "card.jsonl"
    card.write_text(json.dumps({"name": "Seraphina", "description": "x"}, indent=2))
    with pytest.raises(ChatStoreError, match="card.jsonl is not a SillyTavern chat"):
        store.import_jsonl(card, "X")
    with pytest.raises(NotFoundError):
        store.import_jsonl(tmp_path / "missing.jsonl", "X")

    source = lines_of(DATA / "Aurelia" / "1673181146000.jsonl")
    damaged = tmp_path / "damaged.jsonl"
    damaged.write_bytes(b"\n".join([*source[:2], b"garbage", *source[2:]]))
    chat = store.import_jsonl(damaged, "Aurelia")
    assert len(chat) == 4 and "line 3 of damaged.jsonl is unreadable" in chat.warnings[0]
    assert lines_of(chat.path) == source
    assert damaged.read_bytes().count(b"garbage") == 1  # the source is never touched
    assert store.import_jsonl(damaged, "Aurelia").name == "damaged (2)"


def test_markdown_and_text_exports(data_home: Path, tmp_path: Path) -> None:
    store = ChatStore(data_home / "chats")
    chat = store.open("Seraphina", "Seraphina - 2024-09-15@14h03m22s")
    store.export_text(chat, tmp_path / "chat.txt")
    text = (tmp_path / "chat.txt").read_text()
    assert text.startswith("Seraphina: *The forest glade is quiet.")
    assert "Anon: Ugh... my head. Where am I?\n\n" in text
    assert "OOC" not in text  # hidden messages are left out, as SillyTavern does
    assert "森の精霊" in text and text.endswith("honey.* Drink. You will sleep well, I promise.\n\n")

    store.export_markdown(chat, tmp_path / "chat.md")
    md = (tmp_path / "chat.md").read_text()
    assert md.startswith("# Seraphina\n")
    assert "**Anon** · 2024-09-15 14:04" in md and "OOC" not in md
    store.export_markdown(chat, tmp_path / "all.md", include_hidden=True)
    assert "(OOC: let's keep the pace slow)" in (tmp_path / "all.md").read_text()


def test_a_read_only_store_writes_nothing(data_home: Path) -> None:
    store = ChatStore(data_home / "chats", read_only=True)
    chat = store.open("Seraphina", "Seraphina - 2024-09-15@14h03m22s")
    assert len(chat) == 9
    with pytest.raises(ChatReadOnlyError):
        store.create("Seraphina", "Seraphina", "Anon")
    with pytest.raises(ChatReadOnlyError):
        store.branch(chat, 1)
    with pytest.raises(ChatReadOnlyError):
        chat.append(user("x"))


def test_sidecars_and_temp_files_are_not_listed_as_chats(store: ChatStore) -> None:
    chat = store.create("Seraphina", "Seraphina", "Anon", greeting=bot("Hello."))
    for name in (f"{chat.path.name}.rescued", f"{chat.path.name}.partial", f".{chat.path.name}.ab12.tmp"):
        (chat.path.parent / name).write_text("{}\n")
    assert [info.name for info in store.list_chats("Seraphina")] == [chat.name]
