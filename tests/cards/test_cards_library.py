"""CardLibrary: the SillyTavern-style characters folder (one PNG per character)."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from tavern.cards import Card, CardLibrary, read_avatar, read_card
from tavern.cards.library import INDEX_NAME, key_for_name
from tavern.errors import CardError, NotFoundError


@pytest.fixture
def library(tmp_path):
    return CardLibrary(tmp_path / "home" / "characters")


def files(library):
    return sorted(p.name for p in library.root.iterdir() if p.name != INDEX_NAME)


def test_import_every_format_as_png_cards(library, data_dir):
    keys = [
        library.import_file(data_dir / "real" / "Seraphina.png"),
        library.import_file(data_dir / "v1_card.json"),
        library.import_file(data_dir / "v3_card.json"),
        library.import_file(data_dir / "risu_export.charx"),
    ]
    assert keys == ["Seraphina", "Coding Sensei", "Mira Vale", "Mira Vale_1"]
    assert files(library) == ["Coding Sensei.png", "Mira Vale.png", "Mira Vale_1.png", "Seraphina.png"]
    # Imported cards are the same cards.
    assert library.get("Seraphina") == read_card(data_dir / "real" / "Seraphina.png")
    assert library.get("Mira Vale_1") == read_card(data_dir / "risu_export.charx")
    # The PNG keeps Seraphina's picture; the CHARX icon becomes the avatar.
    assert read_avatar(library.path("Seraphina")) == read_avatar(data_dir / "real" / "Seraphina.png")
    charx_icon = read_avatar(data_dir / "risu_export.charx")
    assert read_avatar(library.path("Mira Vale_1")) == charx_icon


def test_list_and_index_cache(library, data_dir):
    library.import_file(data_dir / "real" / "Seraphina.png")
    library.import_file(data_dir / "chub_style.png")
    entries = library.list()
    assert [(e.key, e.name, e.creator) for e in entries] == [
        ("Orrin Thatch", "Orrin Thatch", "tavern-tests"),
        ("Seraphina", "Seraphina", "OtisAlejandro"),
    ]
    assert entries[0].tags == ["fantasy", "male"]
    assert entries[1].path == library.root / "Seraphina.png"
    index = json.loads((library.root / INDEX_NAME).read_text("utf-8"))
    assert set(index["entries"]) == {"Orrin Thatch.png", "Seraphina.png"}
    # A file changed behind our back is re-read (size/mtime changed).
    card = library.get("Orrin Thatch")
    card.name = "Orrin the Elder"
    library.save("Orrin Thatch", card)
    assert [e.name for e in library.list()] == ["Orrin the Elder", "Seraphina"]
    # A file removed behind our back leaves the listing (and the index).
    os.unlink(library.root / "Seraphina.png")
    assert [e.key for e in library.list()] == ["Orrin Thatch"]
    assert set(json.loads((library.root / INDEX_NAME).read_text("utf-8"))["entries"]) == {"Orrin Thatch.png"}


def test_index_is_only_a_cache(library, data_dir):
    library.import_file(data_dir / "real" / "Seraphina.png")
    library.list()
    (library.root / INDEX_NAME).write_text("{ garbage", "utf-8")
    assert [e.name for e in library.list()] == ["Seraphina"]


def test_broken_png_is_listed_with_its_error(library, data_dir):
    library.import_file(data_dir / "real" / "Seraphina.png")
    shutil.copy(data_dir / "bad" / "invalid_json.png", library.root / "Broken.png")
    entries = {e.key: e for e in library.list()}
    assert entries["Broken"].error and "JSON" in entries["Broken"].error
    assert entries["Seraphina"].error is None
    with pytest.raises(CardError):
        library.get("Broken")
    assert [e.key for e in library.search("a")] == ["Seraphina"]


def test_get_by_key_name_case_and_prefix(library, data_dir):
    library.import_file(data_dir / "real" / "Seraphina.png")
    library.import_file(data_dir / "real" / "CodingSensei.png")
    assert library.get("Coding Sensei").name == "Coding Sensei"
    assert library.resolve("coding sensei") == "Coding Sensei"
    assert library.resolve("SERA") == "Seraphina"
    assert library.resolve("cod") == "Coding Sensei"
    with pytest.raises(NotFoundError, match="did you mean: Seraphina"):
        library.get("Serafina")
    with pytest.raises(NotFoundError):
        library.get("")
    library.import_file(data_dir / "real" / "Seraphina.png")  # same name, key Seraphina_1
    assert library.resolve("Seraphina") == "Seraphina"  # exact key first
    card = library.get("Seraphina_1")
    card.name = "Seraphine"
    library.save("Seraphina_1", card)
    with pytest.raises(NotFoundError, match="several"):
        library.resolve("seraph")  # prefix of two characters


def test_name_match_beats_prefix_and_ambiguous_names_ask_for_the_key(library):
    library.save("a1", Card(name="Twin", description="one"))
    library.save("a2", Card(name="Twin", description="two"))
    with pytest.raises(NotFoundError, match="a1, a2"):
        library.resolve("twin")
    assert library.get("a2").description == "two"


def test_search(library, data_dir):
    for name in ("real/Seraphina.png", "real/CodingSensei.png", "chub_style.png", "v3_card.json"):
        library.import_file(data_dir / name)
    assert [e.key for e in library.search(tag="CODING")] == ["Coding Sensei"]
    assert [e.key for e in library.search(creator="tavern")] == ["Mira Vale", "Orrin Thatch"]
    assert [e.key for e in library.search(text="cozy")] == ["Mira Vale"]  # a tag
    assert [e.key for e in library.search(text="sera")] == ["Seraphina"]
    assert [e.key for e in library.search(text="r", tag="fantasy", creator="tests")] == ["Orrin Thatch"]
    assert len(library.search()) == 4


def test_path_traversal_names_stay_inside_root(library, tmp_path):
    evil = Card(name="../../evil", description="x")
    source = tmp_path / "evil.json"
    source.write_text(json.dumps(evil.to_v2_dict()), "utf-8")
    key = library.import_file(source)
    assert key == "evil"
    assert (library.root / "evil.png").is_file()
    assert not (tmp_path / "evil.png").exists() and not (tmp_path / "home" / "evil.png").exists()
    for name in ("/etc/passwd", "..", "C:\\Windows\\x", "con", "a/b\\c:d*e?f", " .hidden. ", "\0\x01"):
        source.write_text(json.dumps(Card(name=name or "x").to_v2_dict()), "utf-8")
        key = library.import_file(source)
        assert (library.root / f"{key}.png").resolve().parent == library.root.resolve()
        assert "/" not in key and "\\" not in key and not key.startswith(".")
    for bad_key in ("../x", "a/b", "..", ""):
        with pytest.raises(NotFoundError):
            library.path(bad_key)
        with pytest.raises(NotFoundError):
            library.save(bad_key, Card(name="x"))


def test_key_for_name():
    assert key_for_name("Seraphina") == "Seraphina"
    assert key_for_name("../../evil") == "evil"
    assert key_for_name("  ") == "character"
    assert key_for_name("CON") == "_CON"
    assert key_for_name("Мира: «маяк»?") == "Мира «маяк»"
    assert len(key_for_name("ж" * 500).encode()) <= 150


def test_unique_keys_are_case_insensitive(library):
    library.save("Ann", Card(name="Ann"))
    source = library.root.parent / "ann.json"
    source.write_text(json.dumps(Card(name="ANN").to_v2_dict()), "utf-8")
    assert library.import_file(source) == "ANN_1"


def test_rename_keeps_key_and_picture(library, data_dir):
    key = library.import_file(data_dir / "real" / "Seraphina.png")
    picture = read_avatar(library.path(key))
    library.rename(key, "Sera the Guardian")
    assert library.get(key).name == "Sera the Guardian"
    assert read_avatar(library.path(key)) == picture
    assert files(library) == ["Seraphina.png"]
    with pytest.raises(CardError):
        library.rename(key, "   ")


def test_duplicate(library, data_dir):
    key = library.import_file(data_dir / "real" / "Seraphina.png")
    copy = library.duplicate(key)
    assert copy == "Seraphina_1"
    assert library.get(copy) == library.get(key)
    assert read_avatar(library.path(copy)) == read_avatar(library.path(key))


def test_delete_to_trash_and_restore(library, data_dir):
    key = library.import_file(data_dir / "real" / "Seraphina.png")
    before = library.path(key).read_bytes()
    trash_name = library.delete(key)
    assert trash_name.startswith("Seraphina-") and trash_name.endswith(".png")
    trash_file = library.root.parent / "trash" / "characters" / trash_name
    assert trash_file.read_bytes() == before
    assert library.list() == [] and library.trash() == [trash_name]
    with pytest.raises(NotFoundError):
        library.get("Seraphina")
    # Deleting twice in the same second keeps both in the trash.
    library.import_file(data_dir / "real" / "Seraphina.png")
    second = library.delete("Seraphina")
    assert second != trash_name and len(library.trash()) == 2
    # Restore brings the file back under its key (or a free variant of it).
    assert library.restore(trash_name) == "Seraphina"
    assert library.path("Seraphina").read_bytes() == before
    assert library.restore(second) == "Seraphina_1"
    assert library.trash() == []
    with pytest.raises(NotFoundError):
        library.restore("../characters/Seraphina.png")
    with pytest.raises(NotFoundError):
        library.delete("nobody")


def test_save_new_character_gets_placeholder_and_existing_keeps_picture(library, data_dir):
    library.save("new", Card(name="Newcomer"))
    assert read_avatar(library.path("new")).startswith(b"\x89PNG")
    key = library.import_file(data_dir / "real" / "Seraphina.png")
    picture = read_avatar(library.path(key))
    card = library.get(key)
    card.description = "changed"
    library.save(key, card)
    assert read_avatar(library.path(key)) == picture
    assert library.get(key).description == "changed"
    other = read_avatar(data_dir / "chub_style.png")
    library.save(key, card, avatar=other)
    assert read_avatar(library.path(key)) == other


def test_list_of_missing_folder_is_empty(tmp_path):
    assert CardLibrary(tmp_path / "nothing").list() == []
