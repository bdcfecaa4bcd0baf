"""Bad input: each case is one CardError whose one-line message names the file and the
problem; memory stays bounded on huge or exploding chunks and zip bombs."""

from __future__ import annotations

import base64
import io
import json
import struct
import tracemalloc
import zipfile
import zlib

import pytest

from tavern.cards import CardLibrary, read_avatar, read_card, read_card_bytes
from tavern.cards.png import MAX_TEXT_CHUNK
from tavern.errors import CardError

MiB = 1024 * 1024


def expect_card_error(path, *words):
    with pytest.raises(CardError) as info:
        read_card(path)
    message = str(info.value)
    assert "\n" not in message
    assert str(path) in message
    for word in words:
        assert word in message, message
    return message


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("truncated.png", ["truncated"]),
        ("invalid_base64.png", ["chara", "base64"]),
        ("invalid_json.png", ["chara", "JSON"]),
        ("not_utf8.png", ["UTF-8"]),
        ("no_card.png", ["no character data"]),
        ("wrong_types.json", ["data.description", "text"]),
        ("not_utf8.json", ["UTF-8"]),
        ("not_a_card.json", ["not a character card"]),
        ("notes.txt", ["not a character card"]),
        ("traversal.charx", [".."]),
        ("absolute.charx", ["absolute"]),
    ],
)
def test_bad_fixture_gives_one_card_error(data_dir, name, words):
    expect_card_error(data_dir / "bad" / name, *words)


@pytest.mark.parametrize(
    ("name", "label"),
    [
        ("real/Eldoria.json", "lorebook"),
        ("real/textgen_Default.json", "sampler preset"),
        ("real/instruct_ChatML.json", "instruct preset"),
        ("real/context_ChatML.json", "context preset"),
    ],
)
def test_other_sillytavern_files_are_named_for_what_they_are(data_dir, name, label):
    expect_card_error(data_dir / name, label, "not a character card")


def test_missing_empty_folder_and_image_files(tmp_path):
    expect_card_error(tmp_path / "nope.png", "not found")
    (tmp_path / "empty.png").write_bytes(b"")
    expect_card_error(tmp_path / "empty.png", "empty")
    expect_card_error(tmp_path, "folder")
    (tmp_path / "photo.png").write_bytes(b"\xff\xd8\xff\xe0" + b"\0" * 100)
    expect_card_error(tmp_path / "photo.png", "JPEG")


def _write_huge_chunk_png(path, keyword: bytes, size: int, picture_chunks, card_after: bytes = b""):
    """A PNG whose text chunk declares `size` bytes; the body is a sparse hole on disk."""
    head = b"\x89PNG\r\n\x1a\n" + b"".join(
        struct.pack(">I", len(b)) + t + b + struct.pack(">I", zlib.crc32(t + b)) for t, b in picture_chunks
    )
    with open(path, "wb") as f:
        f.write(head)
        f.write(struct.pack(">I", size) + b"tEXt" + keyword + b"\0")
        f.seek(len(head) + 8 + size)
        f.write(b"\0\0\0\0" + card_after + struct.pack(">I", 0) + b"IEND" + struct.pack(">I", 0xAE426082))


def test_100_mib_chara_chunk_is_refused_without_reading_it(tmp_path, pngkit, small_picture):
    path = tmp_path / "huge.png"
    _write_huge_chunk_png(path, b"chara", 100 * MiB, pngkit.image_only(small_picture))
    tracemalloc.start()
    try:
        message = expect_card_error(path, "chara", "100.0 MiB", "limit")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * MiB, f"read {peak} bytes into memory: {message}"


def test_huge_unrelated_text_chunk_is_skipped(tmp_path, pngkit, small_picture):
    card = base64.b64encode(json.dumps({"spec": "chara_card_v2", "data": {"name": "After"}}).encode())
    body = b"chara\0" + card
    after = struct.pack(">I", len(body)) + b"tEXt" + body + struct.pack(">I", zlib.crc32(b"tEXt" + body))
    path = tmp_path / "comment.png"
    _write_huge_chunk_png(path, b"Comment", 100 * MiB, pngkit.image_only(small_picture), after)
    tracemalloc.start()
    try:
        assert read_card(path).name == "After"
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * MiB


def test_ztxt_bomb_is_bounded(pngkit, small_picture):
    bomb = zlib.compress(b"A" * (MAX_TEXT_CHUNK + 1024), 9)
    assert len(bomb) < 100_000
    png = pngkit.make_png(pngkit.image_only(small_picture) + [(b"zTXt", b"chara\0\0" + bomb), (b"IEND", b"")])
    with pytest.raises(CardError, match="bomb.png: the 'chara' chunk inflates to more than"):
        read_card_bytes(png, "bomb.png")


def _zip(entries: dict[str, bytes], compression=zipfile.ZIP_DEFLATED) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=compression) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return out.getvalue()


CARD_JSON = json.dumps({"spec": "chara_card_v3", "spec_version": "3.0", "data": {"name": "Z"}}).encode()


def test_charx_zip_bomb_entry_is_refused(tmp_path):
    # 64 MiB of zeros as an asset: deflates about 1000:1.
    path = tmp_path / "bomb.charx"
    path.write_bytes(_zip({"card.json": CARD_JSON, "assets/other/other/pad.bin": bytes(64 * MiB)}))
    assert path.stat().st_size < 200_000
    expect_card_error(path, "zip bomb")


def test_charx_card_json_over_the_limit_is_refused_unread(tmp_path):
    big = b'{"spec": "chara_card_v3", "data": {"name": "Z", "description": "' + b" " * (40 * MiB) + b'"}}'
    path = tmp_path / "big.charx"
    path.write_bytes(_zip({"card.json": big}, zipfile.ZIP_STORED))
    tracemalloc.start()
    try:
        expect_card_error(path, "card.json", "limit")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * MiB


def test_charx_that_lies_about_sizes_is_refused(tmp_path):
    data = bytearray(_zip({"card.json": CARD_JSON, "assets/x.bin": b"x" * 1000}, zipfile.ZIP_STORED))
    # Patch the central directory's uncompressed size of the second entry to 3 GiB.
    cd = data.rfind(b"PK\x01\x02")
    struct.pack_into("<I", data, cd + 24, 3 * 1024 * MiB)
    path = tmp_path / "liar.charx"
    path.write_bytes(bytes(data))
    expect_card_error(path)


def test_charx_with_too_many_entries_or_no_card(tmp_path):
    many = tmp_path / "many.charx"
    many.write_bytes(_zip({f"assets/e/{i}.txt": b"" for i in range(4100)} | {"card.json": CARD_JSON}))
    expect_card_error(many, "entries", "limit")
    nocard = tmp_path / "nocard.charx"
    nocard.write_bytes(_zip({"readme.txt": b"hello"}))
    expect_card_error(nocard, "no card.json")
    broken = tmp_path / "broken.charx"
    broken.write_bytes(b"PK\x03\x04" + b"\0" * 50)
    expect_card_error(broken, "zip")


def test_json_wrong_types_name_the_field():
    cases = {
        "data.tags": {"tags": {"a": 1}},
        "data.alternate_greetings": {"alternate_greetings": [["nested"]]},
        "data.extensions": {"extensions": ["list"]},
        "data.character_book": {"character_book": "text"},
        "data.character_book.entries": {"character_book": {"entries": 5}},
        "data.assets": {"assets": ["uri"]},
        "data.creator_notes_multilingual.en": {"creator_notes_multilingual": {"en": 5}},
        "data.creation_date": {"creation_date": "yesterday"},
        "data.name": {"name": {"first": "x"}},
    }
    for field, data in cases.items():
        obj = {"spec": "chara_card_v2", "data": {"name": "N", **data}}
        with pytest.raises(CardError) as info:
            read_card_bytes(json.dumps(obj).encode(), "types.json")
        assert f"'{field}'" in str(info.value) and str(info.value).startswith("types.json: ")


@pytest.mark.parametrize(
    "text",
    [
        b'{"spec": "chara_card_v2", "data": {"name": "N", "extensions": {"x": NaN}}}',
        b'{"spec": "chara_card_v2", "data": {"name": "N", "extensions": {"x": 1e999}}}',
        b'{"spec": "chara_card_v2", "data": {"name": "N", "extensions": {"x": ' + b"9" * 5000 + b"}}}",
        b"[" * 100_000 + b"]" * 100_000,
        b'{"spec": "chara_card_v2", "data": {"name": "N"}',
    ],
)
def test_json_that_cannot_round_trip_is_refused(text):
    with pytest.raises(CardError, match="^odd.json: "):
        read_card_bytes(text, "odd.json")


def test_failed_import_writes_nothing(data_dir, tmp_path):
    library = CardLibrary(tmp_path / "characters")
    for bad in sorted((data_dir / "bad").iterdir()):
        with pytest.raises(CardError):
            library.import_file(bad)
    root = tmp_path / "characters"
    assert not root.exists() or [p.name for p in root.iterdir()] == []
    assert library.list() == []


def test_card_whose_picture_is_cut_off_is_not_imported(data_dir, tmp_path, pngkit):
    # The card text sits before the image data (legal PNG), and the file ends inside IDAT:
    # the card reads, but there is no picture to import, so nothing is written.
    chunks = [(t, b) for t, b, _ in pngkit.chunks((data_dir / "chub_style.png").read_bytes())]
    ihdr, idat = chunks[0], next(c for c in chunks if c[0] == b"IDAT")
    chara = next(c for c in chunks if c[0] == b"tEXt")
    whole = pngkit.make_png([ihdr, chara, idat, (b"IEND", b"")])
    path = tmp_path / "cut.png"
    path.write_bytes(whole[: whole.index(b"IDAT") + 12])
    assert read_card(path).name == "Orrin Thatch"
    with pytest.raises(CardError, match="cut.png.*truncated"):
        read_avatar(path)
    library = CardLibrary(tmp_path / "characters")
    with pytest.raises(CardError, match="cut.png"):
        library.import_file(path)
    assert library.list() == [] and not any((tmp_path / "characters").glob("*"))
