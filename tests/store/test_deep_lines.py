"""A chat line nested deeper than the JSON parser can go (issue #26, item 8).

Such a line (50,000 nested arrays: 100 KB) made `json.loads` raise RecursionError, which no
reader caught: importing the chat crashed, and once the file sat in the chats folder the
character's `chats`, `prompt` and `chat` crashed with it. It must be one more unreadable line:
skipped (set aside) with a warning while the rest of the chat loads.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tavern.errors import ChatStoreError
from tavern.store import ChatStore
from tavern.store.chatfile import Chat
from tavern.store.chatstore import header_character_name
from tavern.store.jsonl import TAIL_VERIFY

DEPTH = 50_000
HEADER = {"user_name": "User", "character_name": "Mira", "create_date": "2024-5-1 @12h 00m 00s 000ms"}


def deep_line(depth: int = DEPTH) -> str:
    return '{"name":"User","is_user":true,"mes":"deep","extra":{"x":' + "[" * depth + "]" * depth + "}}"


def message(i: int) -> str:
    return json.dumps({"name": "Mira", "is_user": False, "send_date": "x", "mes": f"hello {i}", "extra": {}})


def write_chat(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([json.dumps({**HEADER, "chat_metadata": {}}), *lines]) + "\n", encoding="utf-8")
    return path


def test_a_deep_line_near_the_end_is_set_aside_and_the_rest_loads(tmp_path: Path) -> None:
    path = write_chat(tmp_path / "Mira" / "deep.jsonl", [message(0), deep_line(), message(1)])
    chat = Chat.open(path)
    assert [m.mes for m in chat] == ["hello 0", "hello 1"]
    assert any("line 3" in w and "set aside" in w for w in chat.warnings)
    assert deep_line().encode() in chat.rescued_path.read_bytes()  # nothing is lost


def test_a_deep_line_far_from_the_end_is_a_placeholder_kept_in_the_file(tmp_path: Path) -> None:
    later = [message(i) for i in range(1, TAIL_VERIFY + 5)]
    path = write_chat(tmp_path / "Mira" / "deep.jsonl", [message(0), deep_line(), *later])
    chat = Chat.open(path)
    texts = [m.mes for m in chat]  # parses every line: must not raise
    assert texts[0] == "hello 0" and texts[-1] == f"hello {TAIL_VERIFY + 4}"
    assert chat.is_unreadable(1) and chat[1].is_system
    assert any("message 2" in w for w in chat.warnings)
    chat.append(chat[0])  # writing still works, and keeps the line verbatim
    assert deep_line().encode() in path.read_bytes()


def test_listing_a_character_whose_last_line_is_deep_still_works(tmp_path: Path) -> None:
    store = ChatStore(tmp_path / "chats")
    write_chat(store.folder("Mira") / "Mira - deep.jsonl", [message(0), deep_line()])
    write_chat(store.folder("Mira") / "Mira - fine.jsonl", [message(0), message(1)])
    infos = {info.name: info for info in store.list_chats("Mira")}
    assert set(infos) == {"Mira - deep", "Mira - fine"}
    assert infos["Mira - deep"].message_count == 2
    assert infos["Mira - fine"].preview == "hello 1"
    latest = store.latest("Mira")
    assert latest is not None


def test_importing_a_chat_with_a_deep_line_skips_it_with_a_warning(tmp_path: Path) -> None:
    source = write_chat(tmp_path / "in" / "deep.jsonl", [message(0), deep_line(), message(1)])
    original = source.read_bytes()
    store = ChatStore(tmp_path / "home" / "chats")
    chat = store.import_jsonl(source, "Mira")
    assert [m.mes for m in chat] == ["hello 0", "hello 1"]
    assert any(w.startswith("import:") and "line 3" in w for w in chat.warnings)
    assert source.read_bytes() == original  # the source is untouched


def test_a_deep_header_line_names_no_character(tmp_path: Path) -> None:
    path = tmp_path / "deep.jsonl"
    path.write_text(deep_line() + "\n" + message(0) + "\n", encoding="utf-8")
    assert header_character_name(path) is None


def test_a_message_too_deep_to_copy_is_refused_on_save_not_crashed(tmp_path: Path) -> None:
    # 600 levels parse (the C parser's limit is ~1000) but the deep copy in to_json does not.
    path = write_chat(tmp_path / "Mira" / "c.jsonl", [message(0), deep_line(600)])
    chat = Chat.open(path)
    before = path.read_bytes()
    msg = chat[1]
    msg.mes = "edited"
    with pytest.raises(ChatStoreError, match="nested too deeply"):
        chat.replace(1, msg)
    assert path.read_bytes() == before
