"""Writing cards: SillyTavern's PNG layout, JSON V2/V3, CHARX, atomic writes, and
export -> import giving back the same card for every fixture."""

from __future__ import annotations

import io
import json
import os
import zipfile

import pytest
from PIL import Image

from tavern.cards import (
    Card,
    read_avatar,
    read_card,
    write_card_json,
    write_card_png,
    write_charx,
)
from tavern.cards.model import SPEC_V2, SPEC_V3
from tavern.errors import CardError

GOOD = [
    "real/Seraphina.png",
    "real/CodingSensei.png",
    "seraphina_st_export.png",
    "v2_v3_disagree.png",
    "itxt_compressed_card.png",
    "chub_style.png",
    "v1_card.json",
    "v2_bom_crlf.json",
    "v3_card.json",
    "risu_export.charx",
]


@pytest.mark.parametrize("name", GOOD)
def test_every_export_reimports_the_same_card(data_dir, tmp_path, name):
    card = read_card(data_dir / name)
    avatar = read_avatar(data_dir / name)
    write_card_png(card, tmp_path / "out.png", avatar)
    write_card_json(card, tmp_path / "out2.json", version=2)
    write_card_json(card, tmp_path / "out3.json", version=3)
    write_charx(card, tmp_path / "out.charx")
    for out in ("out.png", "out2.json", "out3.json", "out.charx"):
        again = read_card(tmp_path / out)
        assert again == card, out
    # A second generation is byte for byte the first.
    write_card_png(read_card(tmp_path / "out.png"), tmp_path / "gen2.png", read_avatar(tmp_path / "out.png"))
    assert (tmp_path / "gen2.png").read_bytes() == (tmp_path / "out.png").read_bytes()


def test_png_written_as_sillytavern_writes_it(data_dir, tmp_path, pngkit):
    # The picture carries old chara + ccv3 chunks and an unrelated chunk; ST's writer drops
    # the card chunks, keeps the others in order, and appends chara then ccv3 before IEND.
    source = data_dir / "v2_v3_disagree.png"
    picture = source.read_bytes()
    extra = pngkit.make_png(
        pngkit.image_only(picture)[:1]
        + [(b"tIME", b"\x07\xe8\x01\x02\x03\x04\x05")]
        + pngkit.image_only(picture)[1:]
        + [(t, b) for t, b, _ in pngkit.chunks(picture) if t == b"tEXt"]
        + [(b"tEXt", b"Software\0Tavern test"), (b"IEND", b"")]
    )
    card = read_card(data_dir / "v3_card.json")
    out = tmp_path / "Mira.png"
    write_card_png(card, out, extra)
    chunks = pngkit.chunks(out.read_bytes())
    assert all(ok for _, _, ok in chunks), "every CRC is correct on write"
    names = [t for t, _, _ in chunks]
    kept = [
        t
        for t, b, _ in pngkit.chunks(extra)
        if t != b"IEND" and not (t == b"tEXt" and b.split(b"\0")[0].lower() in (b"chara", b"ccv3"))
    ]
    assert kept.count(b"tEXt") == 1  # the Software chunk
    assert names == kept + [b"tEXt", b"tEXt", b"IEND"]
    chara, ccv3 = chunks[-3][1], chunks[-2][1]
    assert chara.startswith(b"chara\0") and ccv3.startswith(b"ccv3\0")
    v2, v3 = pngkit.text_json(chara), pngkit.text_json(ccv3)
    assert (v2["spec"], v2["spec_version"]) == (SPEC_V2, "2.0")
    assert (v3["spec"], v3["spec_version"]) == (SPEC_V3, "3.0")
    # SillyTavern's V1 copies on top of the V2 object, for old readers.
    assert v2["name"] == "Mira Vale" and v2["creatorcomment"] == card.creator_notes
    assert v2["talkativeness"] == "0.5" and v2["fav"] is False and v2["tags"] == card.tags
    assert v2["data"]["name"] == "Mira Vale"
    assert v3["data"] == v2["data"]
    # Only one of each remains.
    assert sum(1 for t, b, _ in chunks if b.lower().startswith((b"chara\0", b"ccv3\0"))) == 2


def test_json_v2_and_v3_shapes(data_dir, tmp_path):
    card = read_card(data_dir / "v3_card.json")
    write_card_json(card, tmp_path / "v2.json", version=2)
    write_card_json(card, tmp_path / "v3.json", version=3)
    v2 = json.loads((tmp_path / "v2.json").read_text("utf-8"))
    v3 = json.loads((tmp_path / "v3.json").read_text("utf-8"))
    assert v2["spec"] == SPEC_V2 and v2["name"] == "Mira Vale" and v2["first_mes"] == card.first_mes
    assert v3["spec"] == SPEC_V3 and "name" not in v3 and "first_mes" not in v3
    assert v3["data"]["nickname"] == "Mira" and v3["data"]["x_unknown_data_key"] == "kept verbatim"
    assert "Спокойная" in (tmp_path / "v3.json").read_text("utf-8")  # UTF-8, not \u escapes
    with pytest.raises(CardError):
        write_card_json(card, tmp_path / "v4.json", version=4)


def test_v1_card_becomes_v2_without_losing_data(data_dir, tmp_path):
    card = read_card(data_dir / "v1_card.json")
    write_card_json(card, tmp_path / "up.json", version=2)
    out = json.loads((tmp_path / "up.json").read_text("utf-8"))
    original = json.loads((data_dir / "v1_card.json").read_text("utf-8"))
    assert out["spec"] == SPEC_V2
    assert out["data"]["extensions"]["talkativeness"] == original["talkativeness"]
    assert out["data"]["creator_notes"] == original["creatorcomment"]
    for key in ("x_old_tool_field", "create_date", "chat", "avatar"):
        assert out[key] == original[key]
    for key in ("name", "description", "personality", "scenario", "first_mes", "mes_example"):
        assert out["data"][key] == original[key] == out[key]


def test_charx_written_with_assets(data_dir, tmp_path):
    card = read_card(data_dir / "v3_card.json")
    icon = read_avatar(data_dir / "chub_style.png")
    card.assets = [
        {"type": "icon", "uri": "embeded://assets/icon/image/main.png", "name": "main", "ext": "png"}
    ]
    write_charx(card, tmp_path / "m.charx", {"assets/icon/image/main.png": icon})
    with zipfile.ZipFile(tmp_path / "m.charx") as zf:
        assert sorted(zf.namelist()) == ["assets/icon/image/main.png", "card.json"]
        assert json.loads(zf.read("card.json"))["spec"] == SPEC_V3
    assert read_avatar(tmp_path / "m.charx") == icon
    with pytest.raises(CardError):
        write_charx(card, tmp_path / "evil.charx", {"../evil.png": b"x"})
    assert not (tmp_path / "evil.charx").exists()


def test_placeholder_avatar_when_none_given(tmp_path):
    card = Card(name="Érin", description="d")
    write_card_png(card, tmp_path / "e.png")
    with Image.open(tmp_path / "e.png") as im:
        assert im.size == (256, 384)
    assert read_card(tmp_path / "e.png") == card


def test_non_png_avatar_is_converted(tmp_path):
    buf = io.BytesIO()
    Image.new("RGB", (40, 60), (10, 200, 30)).save(buf, format="JPEG")
    card = Card(name="Jay")
    write_card_png(card, tmp_path / "j.png", buf.getvalue())
    with Image.open(tmp_path / "j.png") as im:
        assert im.format == "PNG" and im.size == (40, 60)
    with pytest.raises(CardError, match="j2.png"):
        write_card_png(card, tmp_path / "j2.png", b"definitely not an image")
    assert not (tmp_path / "j2.png").exists()


def test_writes_are_atomic_and_leave_no_temp_files(data_dir, tmp_path):
    card = read_card(data_dir / "real" / "Seraphina.png")
    target = tmp_path / "Seraphina.json"
    write_card_json(card, target, 2)
    before = target.read_bytes()
    # A failing write (a value that is not JSON) leaves the old file untouched.
    card.extensions["bad"] = object()
    with pytest.raises(CardError, match="Seraphina.json"):
        write_card_json(card, target, 2)
    assert target.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["Seraphina.json"]


def test_write_into_missing_folder_is_a_card_error(tmp_path):
    with pytest.raises(CardError, match="cannot write"):
        write_card_json(Card(name="N"), tmp_path / "missing" / "n.json")


def test_lone_surrogate_text_round_trips(tmp_path):
    card = Card(name="S", description="bad \ud800 half")
    write_card_png(card, tmp_path / "s.png")
    write_card_json(card, tmp_path / "s.json")
    assert read_card(tmp_path / "s.png") == card == read_card(tmp_path / "s.json")
