"""Reading real and tool-shaped cards: every version, container and PNG quirk in the wild."""

from __future__ import annotations

import base64
import json
import os

import pytest

from tavern.cards import Card, read_avatar, read_card, read_card_bytes
from tavern.cards.model import SPEC_V1, SPEC_V2, SPEC_V3
from tavern.errors import CardError


def test_seraphina_real_sillytavern_v2_png(data_dir):
    card = read_card(data_dir / "real" / "Seraphina.png")
    assert card.spec == SPEC_V2
    assert card.name == "Seraphina"
    assert card.creator == "OtisAlejandro"
    assert card.character_version == "1.0.0"
    assert card.description.startswith("[Seraphina's Personality=")
    assert card.creator_notes.startswith("ST Default Bot contest winner")
    assert card.extensions == {"talkativeness": "0.5", "fav": False, "world": "Eldoria"}
    assert card.world == "Eldoria"
    # The embedded lorebook is kept verbatim, ST's extension fields and all.
    book = card.character_book
    assert book["name"] == "Eldoria"
    assert [e["keys"][0] for e in book["entries"]] == ["eldoria", "shadowfang", "glade", "power"]
    assert book["entries"][0]["extensions"] == {"position": 0, "probability": None, "useProbability": False}
    # SillyTavern's own top-level keys survive for the round trip.
    assert card.root_extra["create_date"] == "2023-5-12 @21h 32m 29s 228ms"
    assert card.depth_prompt is None


def test_coding_sensei_keeps_crlf_byte_for_byte(data_dir):
    card = read_card(data_dir / "real" / "CodingSensei.png")
    assert card.name == "Coding Sensei"
    assert card.tags == ["coding", "utility", "assistant"]
    assert card.first_mes.startswith('"Hello world!" \r\n\r\nIn JavaScript')
    assert "\r\n" in card.first_mes


def test_v3_wins_over_disagreeing_v2(data_dir):
    card = read_card(data_dir / "v2_v3_disagree.png")
    assert card.spec == SPEC_V3
    assert card.name == "Seraphina"  # chara says "Seraphina (old V2)"
    assert card.nickname == "Sera"
    assert card.group_only_greetings == ["*Seraphina greets the group.*"]


def test_keywords_are_case_insensitive(data_dir):
    card = read_card(data_dir / "keyword_case.png")
    assert card.spec == SPEC_V3
    assert card.nickname == "Sera"


def test_sillytavern_export_png_reads_ccv3(data_dir):
    card = read_card(data_dir / "seraphina_st_export.png")
    assert card.spec == SPEC_V3
    assert card == read_card(data_dir / "real" / "Seraphina.png")


@pytest.mark.parametrize(
    "name",
    [
        "itxt_card.png",
        "itxt_compressed_card.png",
        "ztxt_card.png",
        "trailing_bytes.png",
        "bad_crc.png",
        "base64_wrapped_nopad.png",
        "v2_bom_crlf.json",
    ],
)
def test_png_and_json_quirks_read_the_same_card(data_dir, name):
    reference = read_card(data_dir / "real" / "Seraphina.png")
    assert read_card(data_dir / name) == reference


def test_json_v1_is_upgraded_like_sillytavern(data_dir):
    card = read_card(data_dir / "v1_card.json")
    assert card.spec == SPEC_V1
    assert card.name == "Coding Sensei"
    assert card.creator_notes.startswith("Coding assistance")  # from creatorcomment
    assert card.extensions["talkativeness"] == "0.5"
    assert card.extensions["fav"] is False
    assert card.creator == "RossAscends"
    assert card.root_extra["x_old_tool_field"] == "kept"
    assert card.root_extra["chat"].startswith("Coding Sensei - ")
    assert card.alternate_greetings == [] and card.character_book is None


def test_json_v3_keeps_every_v3_field(data_dir):
    card = read_card(data_dir / "v3_card.json")
    assert card.spec == SPEC_V3
    assert card.nickname == "Mira"
    assert card.group_only_greetings == ["*Mira waves everyone in from the rain.*"]
    assert card.assets == [{"type": "icon", "uri": "ccdefault:", "name": "main", "ext": "png"}]
    assert card.creator_notes_multilingual["ru"].startswith("Спокойная")
    assert card.source == ["https://example.invalid/characters/mira-vale"]
    assert (card.creation_date, card.modification_date) == (1718000000, 1726000000)
    assert card.extra == {"x_unknown_data_key": "kept verbatim"}
    assert card.extensions["x_unknown_extension"] == {"nested": [1, {"a": None}], "flag": True}
    assert card.extensions["risuai"]["viewScreen"] == "none"
    # Lorebook decorators and regex keys stay in the raw book for the lore layer.
    entries = card.character_book["entries"]
    assert entries[0]["content"].startswith("@@depth 4\n@@role system\n")
    assert entries[1]["use_regex"] is True and entries[1]["keys"] == ["/storms?/i"]
    assert card.depth_prompt == ("{{char}} never leaves the lamp unattended.", 4, "system")


def test_charx_from_risuai_layout(data_dir):
    path = data_dir / "risu_export.charx"
    card = read_card(path)
    assert card.spec == SPEC_V3
    assert card.name == "Mira Vale"
    assert card.assets[0]["uri"] == "embeded://assets/icon/image/1.png"
    icon = read_avatar(path)
    assert icon is not None and icon.startswith(b"\x89PNG")


def test_chub_style_v2_keeps_site_extensions(data_dir):
    card = read_card(data_dir / "chub_style.png")
    assert card.extensions["chub"]["full_path"] == "tavern-tests/orrin-thatch"
    assert card.extra == {"x_site_field": 42}
    assert card.character_version == "main"
    assert card.depth_prompt is None  # empty prompt


def test_read_avatar_of_png_card_is_the_picture_without_card_text(data_dir, pngkit):
    avatar = read_avatar(data_dir / "v2_v3_disagree.png")
    kinds = [t for t, _, _ in pngkit.chunks(avatar)]
    assert kinds[0] == b"IHDR" and kinds[-1] == b"IEND" and b"tEXt" not in kinds
    assert read_avatar(data_dir / "v3_card.json") is None


def test_detection_is_by_content_not_extension(data_dir, tmp_path):
    disguised = tmp_path / "card.json"
    disguised.write_bytes((data_dir / "real" / "Seraphina.png").read_bytes())
    assert read_card(disguised).name == "Seraphina"
    also = tmp_path / "mira.png"
    also.write_bytes((data_dir / "risu_export.charx").read_bytes())
    assert read_card(also).name == "Mira Vale"


def test_v2_top_level_copy_disagreeing_with_data_trusts_data():
    obj = {
        "name": "Top",
        "description": "top",
        "spec": "chara_card_v2",
        "spec_version": "2.0",
        "data": {"name": "Inner", "description": "inner"},
    }
    card = Card.from_dict(obj)
    assert (card.name, card.description) == ("Inner", "inner")


def test_lenient_field_shapes_from_real_exporters():
    card = Card.from_dict(
        {
            "spec": "chara_card_v2",
            "data": {
                "name": "Loose",
                "tags": "a, b ,,c",  # SillyTavern accepts comma-separated tags
                "alternate_greetings": "only one",
                "character_version": 3,  # RisuAI once wrote a number
                "creation_date": "1700000000",
                "extensions": None,
            },
        }
    )
    assert card.tags == ["a", "b", "c"]
    assert card.alternate_greetings == ["only one"]
    assert card.character_version == "3"
    assert card.creation_date == 1700000000
    assert card.extensions == {}


def test_gradio_pygmalion_json_is_read_as_v1():
    card = read_card_bytes(
        json.dumps(
            {
                "char_name": "Pyg",
                "char_persona": "persona",
                "char_greeting": "hi",
                "world_scenario": "somewhere",
                "example_dialogue": "<START>",
            }
        ).encode(),
        "pyg.json",
    )
    assert (card.name, card.description, card.first_mes, card.scenario, card.mes_example) == (
        "Pyg",
        "persona",
        "hi",
        "somewhere",
        "<START>",
    )


def test_raw_json_in_chara_chunk_and_urlsafe_base64(pngkit, small_picture):
    obj = {"spec": "chara_card_v2", "data": {"name": "Ünï ✓", "description": "?>?>"}}
    raw = json.dumps(obj, ensure_ascii=False).encode()
    plain = pngkit.make_png(pngkit.image_only(small_picture) + [(b"tEXt", b"chara\0" + raw), (b"IEND", b"")])
    assert read_card_bytes(plain, "raw.png").name == "Ünï ✓"
    urlsafe = base64.urlsafe_b64encode(raw).rstrip(b"=")
    png = pngkit.make_png(
        pngkit.image_only(small_picture) + [(b"tEXt", b"chara\0" + urlsafe), (b"IEND", b"")]
    )
    assert read_card_bytes(png, "urlsafe.png").description == "?>?>"


def test_broken_ccv3_falls_back_to_chara(pngkit, small_picture):
    good = base64.b64encode(json.dumps({"spec": "chara_card_v2", "data": {"name": "Fallback"}}).encode())
    png = pngkit.make_png(
        pngkit.image_only(small_picture)
        + [(b"tEXt", b"chara\0" + good), (b"tEXt", b"ccv3\0" + b"%%%broken%%%"), (b"IEND", b"")]
    )
    assert read_card_bytes(png, "x.png").name == "Fallback"


def test_utf16_json_with_bom_is_accepted():
    text = json.dumps({"spec": "chara_card_v2", "data": {"name": "Wide"}})
    assert read_card_bytes(text.encode("utf-16"), "wide.json").name == "Wide"


def test_card_equality_ignores_origin_spec():
    a = Card(name="X", spec=SPEC_V1)
    b = Card(name="X", spec=SPEC_V3)
    assert a == b


def test_depth_prompt_reads_odd_values_with_sillytavern_defaults():
    card = Card(name="D", extensions={"depth_prompt": {"prompt": "note", "depth": "7", "role": 2}})
    assert card.depth_prompt == ("note", 7, "assistant")
    card.extensions["depth_prompt"] = {"prompt": "note", "depth": None, "role": "weird"}
    assert card.depth_prompt == ("note", 4, "system")
    card.extensions["depth_prompt"] = "not an object"
    assert card.depth_prompt is None


def test_from_dict_refuses_non_cards_with_cardError():
    for obj in (
        [1, 2],
        "text",
        {"hello": 1},
        {"spec": "lorebook_v3", "data": {}},
        {"spec": 5},
        {"spec": "chara_card_v2"},
        {"spec": "chara_card_v2", "data": {"name": ""}},
    ):
        with pytest.raises(CardError):
            Card.from_dict(obj, "x.json")


def test_v2_field_missing_from_data_falls_back_to_top_level_copy():
    obj = {
        "name": "Top",
        "creatorcomment": "notes",
        "tags": ["t"],
        "spec": "chara_card_v2",
        "data": {"description": "inner"},
    }
    card = Card.from_dict(obj)
    assert (card.name, card.description, card.creator_notes, card.tags) == ("Top", "inner", "notes", ["t"])
    assert Card.from_dict(card.to_v3_dict()) == card


def test_fifo_is_refused_without_blocking(tmp_path):
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs here")
    os.mkfifo(tmp_path / "pipe.png")
    with pytest.raises(CardError, match="not a regular file"):
        read_card(tmp_path / "pipe.png")
