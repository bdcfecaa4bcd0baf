"""SillyTavern chat files go through Tavern unchanged, and what Tavern writes SillyTavern reads."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tavern.store import Chat, ChatMessage, ChatStore, parse_send_date
from tavern.store.message import encode_line

from .conftest import DATA, ST_CHATS, bot, lines_of, user


def read_like_sillytavern(path: Path) -> list[dict]:
    """SillyTavern's /api/chats/get: split on \\n, JSON.parse each line, drop what fails."""
    out = []
    for line in path.read_text(encoding="utf-8").split("\n"):
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


@pytest.mark.parametrize("path", ST_CHATS, ids=lambda p: p.parent.name)
def test_every_line_re_encodes_byte_for_byte(path: Path) -> None:
    for raw in lines_of(path)[1:]:
        msg = ChatMessage.from_json(json.loads(raw))
        assert encode_line(msg.to_json()) == raw


@pytest.mark.parametrize("path", ST_CHATS, ids=lambda p: p.parent.name)
def test_open_reads_every_message_and_leaves_the_file_alone(path: Path, tmp_path: Path) -> None:
    copy = tmp_path / path.name
    shutil.copyfile(path, copy)
    chat = Chat.open(copy)
    expected = [json.loads(raw) for raw in lines_of(path)]
    assert len(chat) == len(expected) - 1
    assert [m.to_json() for m in chat] == expected[1:]
    assert chat.header.to_json() == expected[0]
    assert chat.warnings == [] and not chat.unsaved
    assert copy.read_bytes() == path.read_bytes()
    for msg in chat:
        assert parse_send_date(msg.send_date) is not None


@pytest.mark.parametrize("path", ST_CHATS, ids=lambda p: p.parent.name)
def test_import_then_export_is_byte_identical(path: Path, store: ChatStore, tmp_path: Path) -> None:
    chat = store.import_jsonl(path, "imported")
    assert chat.name == path.name.removesuffix(".jsonl")
    assert chat.path.read_bytes() == path.read_bytes()
    out = tmp_path / "export.jsonl"
    store.export_jsonl(chat, out)
    assert out.read_bytes() == path.read_bytes()


def test_an_edit_changes_one_line_and_nothing_else(data_home: Path, tmp_path: Path) -> None:
    store = ChatStore(data_home / "chats")
    chat = store.open("Seraphina", "Seraphina - 2024-09-15@14h03m22s")
    before = lines_of(chat.path)
    msg = chat[2]
    msg.mes = "*She smiles.* Edited."
    chat.replace(2, msg)
    after = lines_of(chat.path)
    assert len(after) == len(before)
    changed = [i for i, (a, b) in enumerate(zip(before, after, strict=True)) if a != b]
    assert changed == [3]
    new, old = json.loads(after[3]), json.loads(before[3])
    assert new["mes"] == new["swipes"][new["swipe_id"]] == "*She smiles.* Edited."
    assert {k: v for k, v in new.items() if k not in ("mes", "swipes")} == {
        k: v for k, v in old.items() if k not in ("mes", "swipes")
    }
    assert list(new) == list(old)
    # The export of the edited chat is JSON-identical except for that message.
    out = tmp_path / "edited.jsonl"
    store.export_jsonl(chat, out)
    assert read_like_sillytavern(out) == [json.loads(line) for line in after]


def test_appending_to_a_sillytavern_file_without_final_newline(data_home: Path) -> None:
    store = ChatStore(data_home / "chats")
    chat = store.open("Aurelia", "1673181146000")
    assert not chat.path.read_bytes().endswith(b"\n")
    chat.append(user("Then who keeps the light when you sleep?", name="You"))
    parsed = read_like_sillytavern(chat.path)
    assert len(parsed) == 6 and parsed[-1]["mes"].startswith("Then who keeps")
    assert parsed[1]["send_date"] == 1674563371558  # old values untouched


def test_a_tavern_chat_loads_the_way_sillytavern_reads_it(store: ChatStore) -> None:
    chat = store.create("Seraphina", "Seraphina", "Anon", greeting=bot("Hello, traveler."))
    chat.append(user("Hi!"))
    reply = bot("Welcome.", api="tavern", model="SmolLM2-135M", token_count=3)
    reply.gen_started, reply.gen_finished = "2024-09-15T12:00:00.000Z", "2024-09-15T12:00:02.500Z"
    chat.append(reply)
    last = chat[-1]
    last.add_swipe("Welcome back.", {"extra": {"model": "SmolLM2-135M", "token_count": 3}})
    chat.replace(-1, last)
    chat.set_metadata(note_prompt="Be kind.", variables={"mood": "calm"})

    lines = read_like_sillytavern(chat.path)
    header, messages = lines[0], lines[1:]
    assert header["user_name"] == "Anon" and header["character_name"] == "Seraphina"
    assert parse_send_date(header["create_date"]) is not None
    assert header["chat_metadata"] == {"note_prompt": "Be kind.", "variables": {"mood": "calm"}}
    assert [m["mes"] for m in messages] == ["Hello, traveler.", "Hi!", "Welcome back."]
    for m in messages:
        assert {"name", "is_user", "is_system", "send_date", "mes", "extra"} <= set(m)
        assert parse_send_date(m["send_date"]) is not None and m["send_date"][0].isalpha()
        if "swipes" in m:
            assert m["mes"] == m["swipes"][m["swipe_id"]]
            assert len(m["swipe_info"]) == len(m["swipes"])
    assert messages[2]["extra"] == {"model": "SmolLM2-135M", "token_count": 3}
    assert messages[2]["swipe_info"][0]["extra"]["api"] == "tavern"


def test_crlf_and_bom_files_open_and_import(tmp_path: Path, store: ChatStore) -> None:
    source = (DATA / "Aurelia" / "1673181146000.jsonl").read_bytes()
    crlf = tmp_path / "crlf.jsonl"
    crlf.write_bytes(source.replace(b"\n", b"\r\n") + b"\r\n")
    chat = Chat.open(crlf, read_only=True)
    assert len(chat) == 4 and chat[0].mes.startswith("*The lighthouse") and chat.warnings == []

    bom = tmp_path / "bom.jsonl"
    bom.write_bytes(b"\xef\xbb\xbf" + source)
    imported = store.import_jsonl(bom, "Aurelia")
    assert imported.path.read_bytes() == source  # the BOM SillyTavern would choke on is gone
    assert len(imported) == 4
