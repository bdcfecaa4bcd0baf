"""Tavern never writes a card it refuses to read (issue #26, item 8).

A 13 MB PNG card with a 10 MB description was read fine (its `chara` chunk is 13 MiB), then
written as SillyTavern's full form (V1 copies on top, so the text twice, in both `chara` and
`ccv3`): a 53 MB file whose 25 MiB chunks the reader refuses (16 MiB per card chunk). Now a
card over a reader limit in the full form is written without the V1 copies (every V2 reader
takes the fields from `data`), and one over a limit even so is refused before anything is
written, with one line naming the limit.
"""

from __future__ import annotations

import base64
import json
import os
import random
import string
import struct
from pathlib import Path

import pytest

from tavern.cards import png
from tavern.cards.avatar import placeholder_avatar
from tavern.cards.formats import MAX_IMAGE_FILE, MAX_JSON_FILE, read_card, write_card_json
from tavern.cards.library import CardLibrary
from tavern.errors import CardError


def text_of(size: int, seed: int = 1) -> str:
    rnd = random.Random(seed)
    word = [rnd.choice(string.ascii_letters) for _ in range(997)]
    return ("".join(word) + " ") * (size // 998) + "x" * (size % 998)


def png_card(path: Path, description: str) -> Path:
    """A PNG card as other tools write it: only a V2 `chara` chunk, no V1 copies."""
    obj = {
        "spec": "chara_card_v2",
        "spec_version": "2.0",
        "data": {"name": "Big", "description": description},
    }
    chunks = png.split_chunks(placeholder_avatar("Big"), "avatar")
    payload = base64.b64encode(json.dumps(obj).encode()).decode()
    path.write_bytes(png.join_chunks([*chunks, png.text_chunk("chara", payload)]))
    return path


def card_chunk_lengths(path: Path) -> list[int]:
    data = path.read_bytes()
    pos, lengths = len(png.SIGNATURE), []
    while pos < len(data):
        length, ctype = struct.unpack_from(">I4s", data, pos)
        if ctype == b"tEXt":
            lengths.append(length)
        pos += 12 + length
    return lengths


def test_a_10_mb_description_imports_and_reads_back(tmp_path: Path) -> None:
    description = text_of(10_000_000)
    source = png_card(tmp_path / "big.png", description)
    library = CardLibrary(tmp_path / "characters")
    key = library.import_file(source)
    written = library.path(key)
    assert os.path.getsize(written) <= MAX_IMAGE_FILE
    assert all(n <= png.MAX_TEXT_CHUNK for n in card_chunk_lengths(written))
    [entry] = library.list()
    assert entry.error is None and entry.name == "Big"
    card = library.get(key)
    assert card.description == description
    card.creator = "me"  # an edit is saved and still reads back
    library.save(key, card)
    assert library.get(key).creator == "me"


def test_a_card_too_big_for_any_form_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    source = tmp_path / "big.json"
    obj = {
        "spec": "chara_card_v2",
        "spec_version": "2.0",
        "data": {"name": "Big", "description": text_of(14_000_000)},
    }
    source.write_text(json.dumps(obj), encoding="utf-8")
    library = CardLibrary(tmp_path / "characters")
    with pytest.raises(CardError) as err:
        library.import_file(source)
    message = str(err.value)
    assert "\n" not in message and "16.0 MiB" in message and "nothing was written" in message
    assert not (tmp_path / "characters").exists() or not os.listdir(tmp_path / "characters")


def test_an_edit_that_makes_a_card_too_big_leaves_the_old_file(tmp_path: Path) -> None:
    library = CardLibrary(tmp_path / "characters")
    key = library.import_file(png_card(tmp_path / "small.png", "short"))
    before = library.path(key).read_bytes()
    card = library.get(key)
    card.description = text_of(14_000_000)
    with pytest.raises(CardError, match="16.0 MiB"):
        library.save(key, card)
    assert library.path(key).read_bytes() == before
    assert [n for n in os.listdir(tmp_path / "characters") if n.endswith(".tmp")] == []


def test_a_json_export_over_the_json_limit_is_written_compact_and_reads_back(tmp_path: Path) -> None:
    # 17 MB twice (V1 copy and data), indented: over the 32 MiB the JSON reader takes.
    library = CardLibrary(tmp_path / "characters")
    key = library.import_file(png_card(tmp_path / "small.png", "short"))
    card = library.get(key)
    card.description = text_of(17_000_000)
    target = tmp_path / "export.json"
    write_card_json(card, target)
    assert os.path.getsize(target) <= MAX_JSON_FILE
    assert read_card(target).description == card.description
