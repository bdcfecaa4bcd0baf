"""World JSON and card `character_book` in and out, without loss."""

from __future__ import annotations

import json
import os

import pytest
from lore_helpers import BUNDLED, DATA, make_book, st_entry

from tavern.errors import LoreError
from tavern.lore import (
    load_lorebook,
    load_lorebook_cached,
    lorebook_from_character_book,
    lorebook_from_dict,
    lorebook_to_character_book,
    lorebook_to_world_dict,
    save_lorebook,
    split_keys,
)


def _json(path):
    return json.loads(path.read_text(encoding="utf-8"))


# --- world JSON ----------------------------------------------------------------------------


def test_sillytavern_eldoria_round_trips_key_for_key():
    # Eldoria.json ships in SillyTavern's default/content: an older file with only ten
    # fields per entry. Nothing may be added or lost, and the key order stays.
    original = _json(DATA / "Eldoria.json")
    book = load_lorebook(DATA / "Eldoria.json")
    assert book.name == "Eldoria"
    assert [e.uid for e in book.entries] == [0, 1, 2, 3]
    assert book.entries[1].key == ["shadowfang", "beast", "monster", "monsters", "beasts"]
    out = lorebook_to_world_dict(book)
    assert out == original
    assert json.dumps(out) == json.dumps(original)


def test_missing_fields_mean_what_sillytavern_scan_reads():
    # SillyTavern's scan reads the file as is: no `selective` = falsy, no `useProbability`
    # = no roll.
    book = load_lorebook(DATA / "Eldoria.json")
    assert book.entries[0].selective is False
    book = lorebook_from_dict({"entries": {"0": {"uid": 0, "key": ["x"], "probability": 10}}}, "b")
    assert book.entries[0].selective is False
    assert book.entries[0].use_probability is False
    assert book.entries[0].order == 100 and book.entries[0].depth == 4


def test_full_sillytavern_entry_round_trips(tmp_path):
    original = {
        "entries": {
            "0": st_entry(
                0,
                key=["Kestrel", "/sky ?ship/i"],
                keysecondary=["captain"],
                comment="The Kestrel",
                content="A skyship.",
                selectiveLogic=3,
                order=150,
                position=4,
                depth=2,
                role=2,
                sticky=3,
                cooldown=2,
                delay=1,
                group="ships, vessels",
                groupOverride=True,
                groupWeight=40,
                scanDepth=5,
                caseSensitive=True,
                matchWholeWords=False,
                useGroupScoring=True,
                delayUntilRecursion=2,
                probability=55,
                excludeRecursion=True,
                preventRecursion=True,
                vectorized=True,
                automationId="qr1",
                addMemo=True,
                characterFilter={"isExclude": True, "names": ["Mira"], "tags": []},
            ),
            "7": {**st_entry(7, key=["x"]), "futureField": {"a": [1, 2]}, "matchPersonaDescription": False},
        },
        "name": "Sky",
        "extensions": {"someTool": 1},
    }
    path = tmp_path / "sky.json"
    path.write_text(json.dumps(original, indent=4), encoding="utf-8")
    book = load_lorebook(path)
    kestrel = book.entries[0]
    assert kestrel.selective_logic == 3 and kestrel.position == 4 and kestrel.role == 2
    assert kestrel.delay_until_recursion == 2 and kestrel.group_weight == 40
    assert kestrel.character_filter == {"isExclude": True, "names": ["Mira"], "tags": []}
    assert book.entries[1].extra == {"futureField": {"a": [1, 2]}, "matchPersonaDescription": False}
    assert lorebook_to_world_dict(book) == original
    save_lorebook(book, tmp_path / "copy.json")
    assert _json(tmp_path / "copy.json") == original


def test_bundled_saltmere_lorebook_round_trips_and_uses_the_features():
    path = BUNDLED / "saltmere.json"
    book = load_lorebook(path)
    assert lorebook_to_world_dict(book) == _json(path)
    assert len(book.entries) >= 12
    assert any(e.constant for e in book.entries)
    assert any(e.keysecondary for e in book.entries)
    assert any(e.group for e in book.entries)
    assert any(e.sticky for e in book.entries)
    assert any(e.position == 4 for e in book.entries)
    assert len({e.order for e in book.entries}) > 5


def test_lenient_reading_of_files_in_the_wild():
    obj = {
        "entries": [
            {
                "key": "dragon, wyrm , /fire(,| )breath/i",
                "content": "Dragons.",
                "order": "120",
                "position": "1",
                "probability": "50",
                "useProbability": "true",
                "depth": 2.0,
            },
            {"uid": "5", "key": ["cave"], "keysecondary": "dark,deep", "scanDepth": ""},
        ]
    }
    book = lorebook_from_dict(obj, "wild")
    first, second = book.entries
    assert first.uid == 0 and second.uid == 5
    assert first.key == ["dragon", "wyrm", "/fire(,| )breath/i"]
    assert first.order == 120 and first.position == 1 and first.probability == 50
    assert first.use_probability is True and first.depth == 2
    assert second.keysecondary == ["dark", "deep"] and second.scan_depth is None
    # Written back strictly: entries keyed by uid, numbers as numbers.
    out = lorebook_to_world_dict(book)
    assert set(out["entries"]) == {"0", "5"}
    assert out["entries"]["0"]["order"] == 120


def test_split_keys_keeps_commas_inside_a_regex():
    assert split_keys("a, b,c") == ["a", "b", "c"]
    assert split_keys("/x{1,3}/i, y") == ["/x{1,3}/i", "y"]
    assert split_keys(" , ,") == []


def test_duplicate_uids_are_renumbered_not_lost():
    book = lorebook_from_dict({"entries": [{"uid": 1, "key": ["a"]}, {"uid": 1, "key": ["b"]}]}, "d")
    assert sorted(e.uid for e in book.entries) == [1, 2]
    assert len(lorebook_to_world_dict(book)["entries"]) == 2


# --- character_book ------------------------------------------------------------------------


def test_seraphina_card_book_converts_as_sillytavern_and_round_trips():
    # The embedded book of SillyTavern's default Seraphina card (default_Seraphina.png).
    original = _json(DATA / "seraphina_character_book.json")
    book = lorebook_from_character_book(original, "Seraphina's Lorebook")
    assert book.name == "Seraphina's Lorebook"
    first = book.entries[0]
    assert first.uid == 0 and first.key[:2] == ["eldoria", "wood"]
    assert first.order == 100 and first.position == 0 and first.disable is False
    # convertCharacterBook: `probability ?? 100` turns the card's null into 100.
    assert first.probability == 100 and first.use_probability is False
    assert first.depth == 4 and first.group_weight == 100 and first.role == 0
    assert lorebook_to_character_book(book) == original


def test_v3_book_with_use_regex_and_decorators_round_trips():
    original = _json(DATA / "v3_character_book.json")
    book = lorebook_from_character_book(original, "v3")
    assert lorebook_to_character_book(book) == original
    decorated = next(e for e in book.entries if e.content.startswith("@@"))
    assert decorated.content.startswith("@@activate\n")  # kept verbatim


def test_card_book_survives_a_world_file_and_an_edit(tmp_path):
    original = _json(DATA / "v3_character_book.json")
    book = lorebook_from_character_book(original, "v3")
    save_lorebook(book, tmp_path / "v3.json")
    again = load_lorebook(tmp_path / "v3.json")
    assert again.entries == book.entries
    assert lorebook_to_character_book(again) == original
    # An edit changes exactly the edited field, in card form.
    again.entries[0].order = 999
    again.entries[0].sticky = 4
    out = lorebook_to_character_book(again)
    assert out["entries"][0]["insertion_order"] == 999
    assert out["entries"][0]["extensions"]["sticky"] == 4
    out["entries"][0]["insertion_order"] = original["entries"][0]["insertion_order"]
    out["entries"][0]["extensions"]["sticky"] = original["entries"][0]["extensions"]["sticky"]
    assert out == original


def test_world_to_card_to_world_keeps_every_field():
    book = make_book(
        st_entry(
            0,
            key=["a"],
            comment="",
            addMemo=True,
            sticky=2,
            scanDepth=3,
            characterFilter={"isExclude": False, "names": ["Mira"], "tags": []},
        ),
        st_entry(
            3,
            key=["b"],
            keysecondary=["c"],
            selectiveLogic=2,
            position=6,
            role=1,
            delayUntilRecursion=True,
            useGroupScoring=False,
        ),
    )
    book.entries[1].extra["futureField"] = [1]
    card = lorebook_to_character_book(book)
    assert card["entries"][1]["extensions"]["selectiveLogic"] == 2
    assert card["entries"][1]["position"] == "after_char"
    back = lorebook_from_character_book(card, "world")
    assert back.entries == book.entries


def test_card_entry_without_enabled_is_disabled_as_in_sillytavern():
    book = lorebook_from_character_book({"entries": [{"keys": ["a"], "content": "x"}]}, "c")
    assert book.entries[0].disable is True
    assert book.entries[0].position == 1  # not "before_char" -> after


# --- bad input -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ('{"entries": {"0": {"uid": 0, "key": ["a"]}', "not valid JSON"),
        ("[1, 2]", "not a lorebook"),
        ('{"name": "x"}', "no 'entries'"),
        ('{"entries": 5}', "'entries' must be an object or a list"),
        ('{"entries": {"0": "text"}}', "entry 0: is not an object"),
        ('{"entries": {"3": {"uid": 3, "order": "soon"}}}', "entry 3: 'order' must be a number"),
        ('{"entries": {"0": {"uid": 0, "key": [{"a": 1}]}}}', "entry 0: 'key' must be a list of strings"),
        ('{"entries": {"0": {"uid": 0, "constant": "maybe"}}}', "'constant' must be true or false"),
    ],
)
def test_malformed_lorebook_is_refused_with_one_clear_error(tmp_path, text, needle):
    path = tmp_path / "broken.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(LoreError) as err:
        load_lorebook(path)
    message = str(err.value)
    assert "broken.json" in message and needle in message
    assert "\n" not in message


def test_missing_and_binary_files(tmp_path):
    with pytest.raises(LoreError, match="not found"):
        load_lorebook(tmp_path / "nope.json")
    path = tmp_path / "bin.json"
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(LoreError, match="bin.json"):
        load_lorebook(path)


def test_save_is_atomic_and_leaves_no_temp_files(tmp_path):
    book = load_lorebook(DATA / "Eldoria.json")
    target = tmp_path / "out" / "Eldoria.json"
    save_lorebook(book, target)
    save_lorebook(book, target)
    assert os.listdir(target.parent) == ["Eldoria.json"]
    assert load_lorebook(target) == book


def test_failed_save_keeps_the_old_file(tmp_path):
    book = load_lorebook(DATA / "Eldoria.json")
    target = tmp_path / "Eldoria.json"
    save_lorebook(book, target)
    before = target.read_bytes()
    book.entries[0].extra["bad"] = object()  # cannot be written as JSON
    with pytest.raises(TypeError):
        save_lorebook(book, target)
    assert target.read_bytes() == before
    assert os.listdir(tmp_path) == ["Eldoria.json"]


def test_cached_load_returns_the_same_book_until_the_file_changes(tmp_path):
    path = tmp_path / "Eldoria.json"
    path.write_bytes((DATA / "Eldoria.json").read_bytes())
    first = load_lorebook_cached(path)
    assert load_lorebook_cached(path) is first
    book = load_lorebook(path)
    book.entries[0].comment = "Edited"
    save_lorebook(book, path)
    os.utime(path, ns=(1, 1))  # a different mtime even on a coarse clock
    again = load_lorebook_cached(path)
    assert again is not first and again.entries[0].comment == "Edited"
    with pytest.raises(LoreError, match="not found"):
        load_lorebook_cached(tmp_path / "missing.json")
