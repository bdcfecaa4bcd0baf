"""Groups and their chats on disk, in SillyTavern's layout; deleting keeps everything in the trash."""

from __future__ import annotations

import json
import random
import stat
from pathlib import Path

import pytest

from tavern.groups.chatfiles import member_message, read_chat_file
from tavern.groups.model import ActivationStrategy, GroupError
from tavern.groups.speakers import Member, choose_speakers
from tavern.groups.store import GroupStore

CHAT = "2024-09-15@14h03m22s"  # humanizedDateTime() at the fixture's clock


def greeting(name: str) -> dict[str, object]:
    return member_message(name, f"{name}.png", f"{name} waves.", "September 15, 2024 2:03pm", gen_id=1.5)


def lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line]


def test_a_new_group_is_written_as_sillytavern_creates_one(store: GroupStore) -> None:
    group = store.create("Crew", ["Mira.png", "Tom.png"])
    path = store.groups_dir / f"{group.id}.json"
    assert group.id.isdigit() and len(group.id) == 13  # String(Date.now())
    text = path.read_text(encoding="utf-8")
    assert text.startswith('{\n    "id": "') and not text.endswith("\n")  # JSON.stringify(g, null, 4)
    data = json.loads(text)
    assert list(data) == [
        "id", "name", "members", "avatar_url", "allow_self_responses", "activation_strategy",
        "generation_mode", "disabled_members", "fav", "chat_id", "chats", "auto_mode_delay",
        "generation_mode_join_prefix", "generation_mode_join_suffix",
    ]
    assert data["chat_id"] == CHAT and data["chats"] == [CHAT] and data["auto_mode_delay"] == 5
    assert data["avatar_url"] == "img/ai4.png" and data["members"] == ["Mira.png", "Tom.png"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert store.load(group.id) == group
    # Its chat is written when it is first opened (with the greetings), as in SillyTavern.
    assert not store.chat_path(CHAT).exists()
    assert store.list_chats(group)[0].exists is False


def test_two_groups_made_in_the_same_millisecond_get_two_files(store: GroupStore) -> None:
    a, b = store.create("A", ["Mira.png"]), store.create("B", ["Tom.png"])
    assert int(b.id) == int(a.id) + 1
    assert [g.name for g in store.list_groups().groups] == ["A", "B"]


def test_a_group_chat_file_has_the_header_and_who_said_each_line(store: GroupStore) -> None:
    group = store.create("Crew", ["Mira.png", "Tom.png"], first_messages=[greeting("Mira"), greeting("Tom")])
    path = store.group_chats_dir / f"{CHAT}.jsonl"
    header, *messages = lines(path)
    assert set(header) == {"chat_metadata", "user_name", "character_name"}
    assert header["user_name"] == header["character_name"] == "unused"
    assert isinstance(header["chat_metadata"], dict) and header["chat_metadata"]["integrity"]
    assert [(m["name"], m["original_avatar"]) for m in messages] == [("Mira", "Mira.png"), ("Tom", "Tom.png")]
    assert messages[0]["force_avatar"] == "/thumbnail?type=avatar&file=Mira.png"
    assert not path.read_bytes().endswith(b"\n")  # lines joined by "\n", as ST writes them

    store.append_message(group.chat_id, {"name": "You", "is_user": True, "mes": "Ahoy!", "send_date": "x"})
    chat = store.read_chat(group)
    assert [m["mes"] for m in chat.messages] == ["Mira waves.", "Tom waves.", "Ahoy!"]
    info = store.list_chats(group)[0]
    assert info.exists and info.message_count == 3 and info.last_message == "Ahoy!" and info.size > 0


def test_a_thumbnail_url_encodes_the_avatar_as_encodeuricomponent_does() -> None:
    message = member_message("Vance", "Captain Vance & co?.png", "", "")
    assert message["force_avatar"] == "/thumbnail?type=avatar&file=Captain%20Vance%20%26%20co%3F.png"


def test_new_chats_are_named_by_date_and_never_collide(store: GroupStore) -> None:
    group = store.create("Crew", ["Mira.png"], first_messages=[])
    group = store.new_chat(group, [greeting("Mira")])
    group = store.new_chat(group)
    assert group.chats == (CHAT, f"{CHAT} (2)", f"{CHAT} (3)") and group.chat_id == f"{CHAT} (3)"
    assert store.load(group.id).chat_id == f"{CHAT} (3)"
    assert [c.message_count for c in store.list_chats(group)] == [0, 1, 0]
    assert store.open_chat(group, CHAT).chat_id == CHAT
    with pytest.raises(GroupError, match="has no chat"):
        store.open_chat(group, "nope")


def test_rename_favourite_and_settings_are_saved(store: GroupStore) -> None:
    group = store.create("Crew", ["Mira.png"])
    group = store.rename(group, "  The Saltmere Crew ")
    group = store.set_favourite(group, True)
    group = store.update(group, {"activation_strategy": ActivationStrategy.LIST.value, "auto_mode_delay": 12})
    again = store.load(group.id)
    assert (again.name, again.fav, again.activation_strategy, again.auto_mode_delay) == (
        "The Saltmere Crew", True, ActivationStrategy.LIST, 12)
    with pytest.raises(GroupError, match="needs a name"):
        store.rename(group, "   ")
    with pytest.raises(GroupError, match="members"):
        store.update(group, {"members": "Mira.png"})


def test_members_are_added_first_removed_muted_and_moved(store: GroupStore) -> None:
    group = store.create("Crew", ["Mira.png"])
    group = store.add_member(group, "Tom.png")
    assert group.members == ("Tom.png", "Mira.png")  # SillyTavern puts a new member first
    group = store.add_member(group, "Nell.png", position=2)
    group = store.move_member(group, "Nell.png", -1)
    assert group.members == ("Tom.png", "Nell.png", "Mira.png")
    group = store.set_muted(group, "Tom.png")
    assert store.load(group.id).disabled_members == ("Tom.png",)
    group = store.remove_member(group, "Tom.png")
    assert group.members == ("Nell.png", "Mira.png") and group.disabled_members == ()
    with pytest.raises(GroupError, match="not a member"):
        store.set_muted(group, "Tom.png")


def test_a_member_muted_in_the_store_is_never_chosen_to_speak(store: GroupStore) -> None:
    group = store.create("Crew", ["Mira.png", "Tom.png"])
    group = store.set_muted(group, "Tom.png")
    cards = [Member("Mira.png", "Mira"), Member("Tom.png", "Tom", 1.0)]
    for seed in range(50):
        chosen = choose_speakers(store.load(group.id), cards, [], "Tom?", random.Random(seed), is_user_input=True)
        assert chosen == ["Mira.png"]


def test_deleting_a_group_moves_it_and_its_chats_to_the_trash_and_restore_undoes_it(store: GroupStore) -> None:
    group = store.create("Crew", ["Mira.png"], first_messages=[greeting("Mira")])
    group = store.new_chat(group, [greeting("Mira")])
    before = {p.name: p.read_bytes() for p in [store.group_path(group.id), *store.group_chats_dir.iterdir()]}
    folder = store.delete(group)
    assert not store.group_path(group.id).exists() and not list(store.group_chats_dir.iterdir())
    assert folder.parent == store.trash_dir / "groups"
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before  # nothing lost
    assert store.list_groups().groups == []
    assert store.restore(folder) == group
    assert {p.name: p.read_bytes() for p in [store.group_path(group.id), *store.group_chats_dir.iterdir()]} == before


def test_deleting_the_open_chat_opens_the_last_one_left_or_a_new_one(store: GroupStore) -> None:
    group = store.create("Crew", ["Mira.png"], first_messages=[greeting("Mira")])
    group = store.new_chat(group)
    group, trashed = store.delete_chat(group, group.chat_id)
    assert trashed is not None and trashed.parent == store.trash_dir / "group chats" and trashed.exists()
    assert group.chats == (CHAT,) and group.chat_id == CHAT
    group, trashed = store.delete_chat(group, CHAT)
    assert trashed is not None and trashed.name == f"{CHAT}.jsonl"
    assert len(group.chats) == 1 and group.chat_id == group.chats[0]  # a fresh chat, not written yet
    assert store.load(group.id) == group


def test_renaming_a_chat_moves_its_file_and_keeps_it_open(store: GroupStore) -> None:
    group = store.create("Crew", ["Mira.png"], first_messages=[greeting("Mira")])
    group = store.new_chat(group)
    group = store.rename_chat(group, CHAT, "Storm: at the harbour?")
    assert group.chats == (f"{CHAT} (2)", "Storm at the harbour")  # ST moves it to the end
    assert store.chat_path("Storm at the harbour").exists() and not store.chat_path(CHAT).exists()
    with pytest.raises(GroupError, match="exists already"):
        store.rename_chat(group, "Storm at the harbour", f"{CHAT} (2)")


def test_a_pre_113_chat_without_a_header_gets_the_metadata_the_group_kept(store: GroupStore) -> None:
    store.groups_dir.mkdir(parents=True)
    store.group_chats_dir.mkdir(parents=True)
    old = {"id": "17", "name": "Old", "members": ["Mira.png"], "chat_id": "17", "chats": ["17"],
           "chat_metadata": {"note_prompt": "Storm coming."}}
    (store.groups_dir / "17.json").write_text(json.dumps(old), encoding="utf-8")
    (store.group_chats_dir / "17.jsonl").write_text(json.dumps(greeting("Mira")) + "\nnot json\n", encoding="utf-8")
    chat = store.read_chat(store.load("17"))
    assert chat.metadata == {"note_prompt": "Storm coming."} and len(chat.messages) == 1 and chat.unreadable == 1
    store.write_chat(chat)  # written back in the current layout, header first
    assert read_chat_file(store.chat_path("17"), "17").header == chat.header


def test_names_that_cannot_be_files_are_refused_in_one_line(store: GroupStore) -> None:
    group = store.create("Crew", ["Mira.png"])
    with pytest.raises(GroupError) as caught:
        store.rename_chat(group, CHAT, "///")
    assert "\n" not in str(caught.value)
    with pytest.raises(GroupError, match="card file name"):
        store.add_member(group, "")
