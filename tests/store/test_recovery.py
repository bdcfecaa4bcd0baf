"""Damaged chat files: torn last lines, garbage, NUL blocks, stray temp files, missing headers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tavern.store import Chat, ChatStore

from .conftest import bot, lines_of, user


@pytest.fixture
def chat_path(store: ChatStore) -> Path:
    chat = store.create("Seraphina", "Seraphina", "Anon", greeting=bot("Hello."))
    for i in range(4):
        chat.append(user(f"u{i}"))
        chat.append(bot(f"b{i}"))
    return chat.path


def assert_every_line_parses(path: Path) -> None:
    data = path.read_bytes()
    assert data.endswith(b"\n")
    for line in data.split(b"\n")[:-1]:
        assert isinstance(json.loads(line), dict)


def test_a_torn_last_line_is_set_aside_and_the_file_repaired(chat_path: Path, store: ChatStore) -> None:
    complete = chat_path.read_bytes()
    torn = b'{"name":"Seraphina","is_user":false,"mes":"She opens the do'
    chat_path.write_bytes(complete + torn)

    chat = Chat.open(chat_path, backup_dir=store.backup_root / "Seraphina")
    assert len(chat) == 9 and chat[-1].mes == "b3"
    [warning] = chat.warnings
    assert "cut short" in warning and chat.rescued_path.name in warning
    assert chat.rescued_path.read_bytes() == torn + b"\n"
    assert chat_path.read_bytes() == complete
    # The damaged original is kept among the backups.
    [backup] = (store.backup_root / "Seraphina" / chat.name).glob("*.jsonl")
    assert backup.read_bytes() == complete + torn
    chat.append(user("still here"))
    assert_every_line_parses(chat_path)
    assert Chat.open(chat_path).warnings == []


def test_a_corrupted_middle_line_is_skipped_with_a_warning_and_kept(chat_path: Path) -> None:
    lines = lines_of(chat_path)
    lines[3] = b"#%&! not json at all"
    chat_path.write_bytes(b"\n".join(lines) + b"\n")

    chat = Chat.open(chat_path)
    assert [m.mes for m in chat] == ["Hello.", "u0", "u1", "b1", "u2", "b2", "u3", "b3"]
    assert chat.warnings == [
        f"line 4 of {chat_path.name} is unreadable; it was set aside in {chat.rescued_path.name}"
    ]
    assert chat.rescued_path.read_bytes() == b"#%&! not json at all\n"
    assert_every_line_parses(chat_path)


def test_a_block_of_nul_bytes_from_a_power_cut_is_set_aside(chat_path: Path) -> None:
    lines = lines_of(chat_path)
    lines[5] = b"\x00" * 300
    chat_path.write_bytes(b"\n".join(lines) + b"\n")
    chat = Chat.open(chat_path)
    assert len(chat) == 8 and len(chat.warnings) == 1
    assert chat.rescued_path.read_bytes() == b"\x00" * 300 + b"\n"


def test_a_bad_line_found_late_is_shown_as_a_placeholder_and_never_dropped(chat_path: Path) -> None:
    lines = lines_of(chat_path)
    lines[2] = b'{"name":"Anon","is_user":true,"mes":"unterminated}'  # right shape, bad JSON
    chat_path.write_bytes(b"\n".join(lines) + b"\n")
    padding = [json.dumps({"name": "Anon", "is_user": True, "mes": f"pad{i}"}) for i in range(80)]
    with open(chat_path, "a") as handle:
        handle.write("\n".join(padding) + "\n")  # pushes line 3 out of the lines checked on open

    chat = Chat.open(chat_path)
    assert chat.warnings == [] and len(chat) == 89
    placeholder = chat[1]
    assert placeholder.is_system and placeholder.extra == {"tavern_unreadable": True}
    assert "unterminated" in placeholder.mes and chat.is_unreadable(1)
    assert len(chat.warnings) == 1
    # Other writes keep the line verbatim; removing it puts it in the rescued file first.
    chat.replace(0, bot("Hello again."))
    assert lines[2] in lines_of(chat_path)
    chat.delete(1)
    assert lines[2] not in lines_of(chat_path)
    assert chat.rescued_path.read_bytes() == lines[2] + b"\n"


def test_stray_temp_files_of_a_killed_rewrite_are_removed(chat_path: Path) -> None:
    stray = chat_path.with_name(f".{chat_path.name}.deadbeef.tmp")
    stray.write_bytes(b'{"half":')
    Chat.open(chat_path, read_only=True)
    assert stray.exists()
    Chat.open(chat_path)
    assert not stray.exists()


def test_a_read_only_open_reports_damage_without_touching_the_file(chat_path: Path) -> None:
    damaged = chat_path.read_bytes() + b'{"name":"x","mes":"tor'
    chat_path.write_bytes(damaged)
    chat = Chat.open(chat_path, read_only=True)
    assert len(chat) == 9 and "not repaired" in chat.warnings[0]
    assert chat_path.read_bytes() == damaged and not chat.rescued_path.exists()


def test_a_file_without_header_gets_one(tmp_path: Path) -> None:
    path = tmp_path / "Mira - 2024-01-01@10h00m00s.jsonl"
    path.write_text('{"name":"Mira","is_user":false,"mes":"Hi."}\n{"name":"You","is_user":true,"mes":"Yo."}')
    chat = Chat.open(path)
    assert [m.mes for m in chat] == ["Hi.", "Yo."]
    assert "no header" in chat.warnings[0]
    first = json.loads(lines_of(path)[0])
    assert first["character_name"] == "Mira" and "chat_metadata" in first
    assert len(lines_of(path)) == 3


def test_an_empty_file_becomes_an_empty_chat(tmp_path: Path) -> None:
    path = tmp_path / "Mira - 2024-01-01@10h00m00s.jsonl"
    path.write_bytes(b"")
    chat = Chat.open(path)
    assert len(chat) == 0
    chat.append(user("first"))
    assert [m.mes for m in Chat.open(path)] == ["first"]
