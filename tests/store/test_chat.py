"""Reading and writing one chat: appends, rewrites, backups, metadata, streaming, read-only."""

from __future__ import annotations

import json

import pytest

from tavern.store import (
    Chat,
    ChatChangedError,
    ChatMessage,
    ChatReadOnlyError,
    ChatStore,
)

from .conftest import bot, lines_of, user


@pytest.fixture
def chat(store: ChatStore) -> Chat:
    chat = store.create("Seraphina", "Seraphina", "Anon", greeting=bot("Hello."))
    for i in range(5):
        chat.append(user(f"u{i}"))
        chat.append(bot(f"b{i}"))
    return chat


def texts(chat: Chat) -> list[str]:
    return [m.mes for m in chat]


def test_appends_are_on_disk_when_append_returns(chat: Chat) -> None:
    assert len(chat) == 11
    again = Chat.open(chat.path)
    assert texts(again) == texts(chat)
    assert again[0].mes == "Hello." and again[-1].mes == "b4"
    assert [m.mes for m in again.tail(3)] == ["b3", "u4", "b4"]
    assert [m.mes for m in again[1:3]] == ["u0", "b0"]
    assert again[-1].send_date  # filled in on append


def test_each_access_returns_a_fresh_message(chat: Chat) -> None:
    chat[1].mes = "changed without replace"
    assert chat[1].mes == "u0"


def test_replace_insert_delete_truncate(chat: Chat) -> None:
    msg = chat[3]
    msg.mes = "edited"
    chat.replace(3, msg)
    chat.insert(1, ChatMessage(name="Narrator", is_user=False, mes="Night falls.", is_system=True))
    chat.delete(-1)
    assert texts(Chat.open(chat.path)) == [
        "Hello.",
        "Night falls.",
        "u0",
        "b0",
        "edited",
        "b1",
        "u2",
        "b2",
        "u3",
        "b3",
        "u4",
    ]
    chat.truncate(3)
    assert texts(Chat.open(chat.path)) == ["Hello.", "Night falls.", "u0"]
    assert Chat.open(chat.path)[1].is_system
    with pytest.raises(IndexError):
        chat.replace(7, msg)


def test_rewrites_keep_the_last_three_versions_as_backups(chat: Chat, store: ChatStore) -> None:
    folder = store.backup_root / "Seraphina" / chat.name
    versions = []
    for i in range(5):
        versions.append(chat.path.read_bytes())
        chat.set_metadata(step=i)
    backups = sorted(folder.glob("*.jsonl"))
    assert len(backups) == 3
    assert [b.read_bytes() for b in backups] == versions[-3:]
    # An append after the last rewrite leaves that backup as it was.
    chat.append(user("later"))
    assert max(folder.glob("*.jsonl")).read_bytes() == versions[-1]


def test_metadata_is_kept_with_unknown_keys(chat: Chat) -> None:
    chat.update_metadata({"note_prompt": "Rain.", "note_depth": 2, "variables": {"x": "1"}})
    chat.set_metadata(world_info="Eldoria", extension_thing={"a": [1]})
    chat.remove_metadata("note_depth")
    again = Chat.open(chat.path)
    assert again.header.chat_metadata == {
        "note_prompt": "Rain.",
        "variables": {"x": "1"},
        "world_info": "Eldoria",
        "extension_thing": {"a": [1]},
    }
    assert len(again) == len(chat)


def test_a_file_changed_by_another_program_is_reloaded_and_the_append_retried(chat: Chat) -> None:
    before = len(chat)
    with open(chat.path, "ab") as handle:
        handle.write(b'{"name":"Other","is_user":true,"mes":"from elsewhere"}\n')
    chat.append(user("mine"))  # no ChatChangedError: the other program's line is kept, ours follows
    assert [json.loads(line)["mes"] for line in lines_of(chat.path)[-2:]] == ["from elsewhere", "mine"]
    assert [m.mes for m in chat][-2:] == ["from elsewhere", "mine"] and len(chat) == before + 2
    assert not chat.pending and any("changed by another program" in w for w in chat.warnings)
    chat.set_metadata(note_prompt="x")  # metadata merges are retried on the new file too
    with open(chat.path, "ab") as handle:
        handle.write(b'{"name":"Other","is_user":true,"mes":"again"}\n')
    chat.set_metadata(note_depth=2)
    reread = Chat.open(chat.path)
    assert reread[-1].mes == "again" and reread.header.chat_metadata["note_depth"] == 2


def test_an_edit_on_a_file_changed_by_another_program_is_retried_not_overwritten(chat: Chat) -> None:
    with open(chat.path, "ab") as handle:
        handle.write(b'{"name":"Other","is_user":true,"mes":"from elsewhere"}\n')
    chat.replace(1, user("edited"))  # reloaded, then applied to the same message
    assert json.loads(lines_of(chat.path)[-1])["mes"] == "from elsewhere"
    assert json.loads(lines_of(chat.path)[2])["mes"] == "edited"
    # The same message changed by the other program: a conflict, their version stands.
    other = Chat.open(chat.path)
    other.replace(1, user("theirs"))
    with pytest.raises(ChatChangedError, match="message 2 was changed by another program"):
        chat.replace(1, user("mine"))
    assert json.loads(lines_of(chat.path)[2])["mes"] == "theirs"


def test_read_only_chats_refuse_every_write(chat: Chat) -> None:
    before = chat.path.read_bytes()
    ro = Chat.open(chat.path, read_only=True)
    for write in (
        lambda: ro.append(user("x")),
        lambda: ro.replace(0, user("x")),
        lambda: ro.delete(0),
        lambda: ro.set_metadata(a=1),
        lambda: ro.begin_reply(bot("")),
    ):
        with pytest.raises(ChatReadOnlyError, match="read-only"):
            write()
    assert len(ro) == 11 and chat.path.read_bytes() == before


def test_a_streaming_reply_touches_only_its_sidecar(chat: Chat) -> None:
    before = chat.path.read_bytes()
    chat.partial_interval = 0
    chat.begin_reply(bot(""))
    for text in ("Once", "Once upon", "Once upon a time"):
        chat.update_partial(text)
        assert chat.path.read_bytes() == before
        assert json.loads(chat.partial_path.read_bytes())["message"]["mes"] == text
    done = chat.finish_reply()
    assert done.mes == "Once upon a time" and chat[-1].mes == "Once upon a time"
    assert not chat.partial_path.exists()
    assert Chat.open(chat.path)[-1].mes == "Once upon a time"


def test_an_unfinished_reply_is_recovered_after_a_crash(chat: Chat) -> None:
    chat.begin_reply(bot("", model="m"))
    chat.update_partial("half a sent")
    chat.partial_interval = 0
    chat.update_partial("half a sentence")
    path = chat.path
    del chat  # the process dies here

    again = Chat.open(path)
    assert again.recovered_reply is not None
    assert again.recovered_reply.mes == "half a sentence" and again.recovered_reply.extra == {"model": "m"}
    assert any("recovered" in w for w in again.warnings)
    assert len(again) == 11  # never mixed into the chat file
    again.append(again.recovered_reply)
    again.discard_reply()
    assert not again.partial_path.exists() and Chat.open(path).recovered_reply is None
