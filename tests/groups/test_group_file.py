"""A SillyTavern group file: read with ST's defaults, written back byte for byte, bad files in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tavern.errors import TavernError
from tavern.groups.jsvalues import js_number, st_json
from tavern.groups.model import ActivationStrategy, GenerationMode, GroupError, parse_group
from tavern.groups.store import GroupStore

# What SillyTavern writes after the group has been edited in its browser UI: the /create keys,
# then what /all adds from the file's times (the browser sends the whole object back on /edit),
# an extension's key, and text JavaScript leaves unescaped (non-ASCII, U+2028) or escapes (\u0001).
ST_GROUP = """{
    "id": "1726409002123",
    "name": "The Saltmere Crew",
    "members": [
        "Mira.png",
        "Captain Vance.png",
        "Old Tom.png"
    ],
    "avatar_url": "img/ai4.png",
    "allow_self_responses": false,
    "activation_strategy": 3,
    "generation_mode": 1,
    "disabled_members": [
        "Old Tom.png"
    ],
    "fav": true,
    "chat_id": "2024-09-15@14h03m22s",
    "chats": [
        "2024-09-15@14h03m22s",
        "Storm at the harbour"
    ],
    "auto_mode_delay": 5,
    "generation_mode_join_prefix": "<{{char}}'s {{FIELDNAME}}>",
    "generation_mode_join_suffix": "</{{char}}>",
    "hideMutedSprites": true,
    "date_added": 1726409002123.4563,
    "create_date": "2024-09-15T14:03:22.123Z",
    "date_last_chat": 1726409310000,
    "chat_size": 20480,
    "member_models": {},
    "note": "Сера — «морская» 🌊\u2028 \\u0001 \\"quoted\\" \\\\ 0.00001",
    "weights": [
        1e-7,
        0.00001,
        1e+21,
        -2.5,
        null
    ]
}"""


def test_an_st_group_file_round_trips_byte_for_byte() -> None:
    group = parse_group(ST_GROUP.encode("utf-8"), "1726409002123.json")
    assert group.to_json() == ST_GROUP
    assert json.loads(group.to_json()) == json.loads(ST_GROUP)


def test_its_fields_read_as_sillytavern_means_them() -> None:
    group = parse_group(ST_GROUP, "g.json")
    assert group.id == "1726409002123" and group.name == "The Saltmere Crew"
    assert group.members == ("Mira.png", "Captain Vance.png", "Old Tom.png")
    assert group.disabled_members == ("Old Tom.png",)
    assert group.enabled_members == ("Mira.png", "Captain Vance.png")
    assert group.activation_strategy == ActivationStrategy.POOLED
    assert group.generation_mode == GenerationMode.APPEND
    assert group.fav and group.hide_muted_sprites and not group.allow_self_responses
    assert group.chat_id == "2024-09-15@14h03m22s"
    assert group.chats == ("2024-09-15@14h03m22s", "Storm at the harbour")
    assert group.join_prefix == "<{{char}}'s {{FIELDNAME}}>" and group.auto_mode_delay == 5
    assert group.date_added == 1726409002123.4563
    assert set(group.extra()) == {"member_models", "note", "weights"}


def test_missing_keys_take_sillytavern_defaults() -> None:
    group = parse_group('{"id": 1726409002123, "chat_id": "c", "chats": ["c"], "members": ["Mira.png"]}')
    assert group.id == "1726409002123"  # a numeric id is read as its string, as ST converts it
    assert group.name == "New Group"
    assert group.activation_strategy == ActivationStrategy.NATURAL
    assert group.generation_mode == GenerationMode.SWAP
    assert group.auto_mode_delay == 5 and group.join_prefix == "" and group.join_suffix == ""
    assert not group.allow_self_responses and not group.fav and not group.hide_muted_sprites
    assert group.disabled_members == () and group.enabled_members == ("Mira.png",)
    assert parse_group('{"id": "1", "activation_strategy": "1"}').activation_strategy == 1  # ST's Number()


def test_unknown_keys_survive_a_change_and_known_ones_keep_their_place() -> None:
    group = parse_group(ST_GROUP).updated({"name": "Renamed", "disabled_members": []})
    written = json.loads(group.to_json())
    assert list(written) == list(json.loads(ST_GROUP))
    assert written["name"] == "Renamed" and written["member_models"] == {} and written["weights"][0] == 1e-7


def test_a_pre_113_group_keeps_its_chat_metadata_for_its_chats() -> None:
    old = {
        "id": 1700000000000, "name": "Old", "members": ["Mira.png"], "chat_id": 1700000000000,
        "chats": [1700000000000, "2023-11-14@22h13m20s"],
        "chat_metadata": {"note_prompt": "now"}, "past_metadata": {"2023-11-14@22h13m20s": {"note_prompt": "then"}},
    }
    group = parse_group(json.dumps(old))
    assert group.chats == ("1700000000000", "2023-11-14@22h13m20s")
    assert group.legacy_chat_metadata("1700000000000") == {"note_prompt": "now"}
    assert group.legacy_chat_metadata("2023-11-14@22h13m20s") == {"note_prompt": "then"}
    assert group.legacy_chat_metadata("other") is None


BAD_FILES = [
    (b"{not json", "not JSON"),
    (b"\xff\xfe{}", "not UTF-8"),
    (b'["a", "b"]', "holds a list"),
    (b'{"name": "No id"}', 'no "id"'),
    (b'{"id": "1", "members": "Mira.png"}', '"members" must be a list of card file names'),
    (b'{"id": "1", "members": ["Mira.png", 7]}', "item 2 is a number"),
    (b'{"id": "1", "disabled_members": [{"avatar": "x"}]}', '"disabled_members"'),
    (b'{"id": "1", "activation_strategy": "often"}', '"activation_strategy" must be a whole number'),
    (b'{"id": "1", "allow_self_responses": "yes"}', '"allow_self_responses" must be true or false'),
    (b'{"id": "1", "name": 42}', '"name" must be a string, not a number'),
    (b'{"id": "1", "chats": [[]]}', '"chats"'),
    (b"[" * 100_000, "not JSON"),
]


@pytest.mark.parametrize(("data", "words"), BAD_FILES)
def test_a_bad_group_file_is_one_line_naming_the_file(data: bytes, words: str) -> None:
    with pytest.raises(GroupError) as caught:
        parse_group(data, "1726409002123.json")
    message = str(caught.value)
    assert isinstance(caught.value, TavernError)  # the CLI and TUI show it without a traceback
    assert "\n" not in message and message.startswith("1726409002123.json: ") and words in message


def test_the_group_list_skips_a_bad_file_with_one_line_and_shows_the_rest(store: GroupStore) -> None:
    store.groups_dir.mkdir(parents=True)
    (store.groups_dir / "1726409002123.json").write_text(ST_GROUP, encoding="utf-8")
    (store.groups_dir / "2.json").write_text('{"id": "2", "members": [1]}', encoding="utf-8")
    (store.groups_dir / "3.json").write_text("", encoding="utf-8")
    listing = store.list_groups()
    assert [g.name for g in listing.groups] == ["The Saltmere Crew"]
    assert len(listing.problems) == 2 and all("\n" not in p for p in listing.problems)
    assert listing.problems[0].startswith("2.json: ")


def test_an_st_group_saved_unchanged_by_the_store_is_the_same_file(store: GroupStore) -> None:
    store.groups_dir.mkdir(parents=True)
    path = store.groups_dir / "1726409002123.json"
    path.write_bytes(ST_GROUP.encode("utf-8"))
    store.save(store.load("1726409002123"))
    assert path.read_bytes() == ST_GROUP.encode("utf-8")


@pytest.mark.parametrize(
    ("value", "text"),
    [(1e-7, "1e-7"), (1.5e-7, "1.5e-7"), (0.00001, "0.00001"), (1e21, "1e+21"), (1e16, "10000000000000000"),
     (5.0, "5"), (-0.5, "-0.5"), (float("nan"), "null")],
)
def test_numbers_are_written_as_javascript_writes_them(value: float, text: str) -> None:
    assert st_json(value) == text


@pytest.mark.parametrize(
    ("value", "number"),
    [("0.8", 0.8), (" 0.7 ", 0.7), ("", 0.0), (None, 0.0), (True, 1.0), ("0x10", 16.0), ([], 0.0), (["3"], 3.0)],
)
def test_js_number_reads_values_as_javascript_number_does(value: object, number: float) -> None:
    assert js_number(value) == number


@pytest.mark.parametrize("value", ["often", "1_000", "0.5abc", {}, [1, 2], "inf"])
def test_js_number_is_nan_where_javascript_says_so(value: object) -> None:
    assert js_number(value) != js_number(value)


def test_the_data_file_round_trips_through_a_real_path(tmp_path: Path) -> None:
    # With a BOM, as a file edited in some Windows editors has: read fine, written without it.
    path = tmp_path / "g.json"
    path.write_bytes(b"\xef\xbb\xbf" + ST_GROUP.encode("utf-8"))
    assert parse_group(path.read_bytes()).to_json() == ST_GROUP
