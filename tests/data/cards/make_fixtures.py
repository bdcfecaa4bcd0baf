"""Rebuild the constructed card fixtures in this folder from the real ones in real/.

Run from the repository root:  .venv/bin/python tests/data/cards/make_fixtures.py

The output is committed; this script documents exactly how each file was made. It writes
PNG chunks and zips with its own few lines (not with tavern.cards), so the fixtures do not
depend on the code they test. See README.md for what each file stands for.
"""

from __future__ import annotations

import base64
import io
import json
import struct
import zipfile
import zlib
from pathlib import Path

HERE = Path(__file__).resolve().parent
REAL = HERE / "real"
BAD = HERE / "bad"
SIG = b"\x89PNG\r\n\x1a\n"


# -- PNG plumbing -----------------------------------------------------------------------


def chunks_of(data: bytes) -> list[tuple[bytes, bytes]]:
    out, pos = [], 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        ctype = data[pos + 4 : pos + 8]
        out.append((ctype, data[pos + 8 : pos + 8 + length]))
        pos += 12 + length
        if ctype == b"IEND":
            break
    return out


def chunk(ctype: bytes, body: bytes, crc: int | None = None) -> bytes:
    if crc is None:
        crc = zlib.crc32(ctype + body) & 0xFFFFFFFF
    return struct.pack(">I", len(body)) + ctype + body + struct.pack(">I", crc)


def png_of(chunk_list: list[tuple[bytes, bytes]]) -> bytes:
    return SIG + b"".join(chunk(t, b) for t, b in chunk_list)


def keyword_of(body: bytes) -> str:
    return body.split(b"\0", 1)[0].decode("latin-1").lower()


def image_chunks(png: bytes) -> list[tuple[bytes, bytes]]:
    """All chunks except card text and IEND."""
    return [
        (t, b)
        for t, b in chunks_of(png)
        if t != b"IEND" and not (t in (b"tEXt", b"iTXt", b"zTXt") and keyword_of(b) in ("chara", "ccv3"))
    ]


def card_json_of(png: bytes, keyword: str = "chara") -> dict:
    for t, b in chunks_of(png):
        if t == b"tEXt" and keyword_of(b) == keyword:
            return json.loads(base64.b64decode(b.split(b"\0", 1)[1]))
    raise LookupError(keyword)


def b64(obj: dict) -> bytes:
    # JSON.stringify's compact form, UTF-8, base64: what SillyTavern writes.
    return base64.b64encode(json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode())


def st_write(png: bytes, card: dict) -> bytes:
    """SillyTavern's writer (src/character-card-parser.js): drop tEXt chara/ccv3, insert tEXt
    chara (V2) then tEXt ccv3 (same JSON, spec rewritten) before IEND."""
    v3 = dict(card, spec="chara_card_v3", spec_version="3.0")
    return png_of(
        image_chunks(png)
        + [(b"tEXt", b"chara\0" + b64(card)), (b"tEXt", b"ccv3\0" + b64(v3)), (b"IEND", b"")]
    )


def entry(name: str, compress: int = zipfile.ZIP_STORED) -> zipfile.ZipInfo:
    """A zip entry with a fixed date, so rebuilding gives the same bytes."""
    info = zipfile.ZipInfo(name, date_time=(2024, 9, 15, 12, 0, 0))
    info.compress_type = compress
    return info


def thumbnail(png: bytes, size: tuple[int, int] = (80, 120)) -> bytes:
    """The picture of `png`, scaled down (keeps the constructed fixtures small)."""
    from PIL import Image

    with Image.open(io.BytesIO(png)) as im:
        out = io.BytesIO()
        im.resize(size).save(out, format="PNG", optimize=True)
    return out.getvalue()


def small_png(colour: tuple[int, int, int], size: tuple[int, int] = (32, 48)) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, format="PNG")
    return out.getvalue()


# -- card contents ------------------------------------------------------------------------

# An original V3 card in RisuAI's export shape (createBaseV3 in src/ts/characterCards.ts):
# every V3 field, a lorebook with decorators and a regex key, RisuAI and unknown extensions.
MIRA_V3 = {
    "spec": "chara_card_v3",
    "spec_version": "3.0",
    "data": {
        "name": "Mira Vale",
        "description": "{{char}} keeps the lighthouse on Gull Rock. She is 34, weathered, patient,\nand talks to the lamp as if it could hear her.",
        "personality": "calm, dry humour, stubborn about safety",
        "scenario": "{{user}} washes up on Gull Rock after a storm.",
        "first_mes": '*The door bangs open against the wind.* "In. Quickly. The kettle\'s on."',
        "mes_example": '<START>\n{{user}}: Does the light ever go out?\n{{char}}: "Not while I breathe."',
        "creator_notes": "A calm lighthouse keeper for slow, cozy roleplay.",
        "system_prompt": "",
        "post_history_instructions": "",
        "alternate_greetings": [
            "*Mira is trimming the wick when you knock.*",
            '"You\'re late. The ferry left at noon."',
        ],
        "character_book": {
            "name": "Gull Rock",
            "scan_depth": 3,
            "token_budget": 512,
            "recursive_scanning": False,
            "extensions": {"risu_fullWordMatching": False},
            "entries": [
                {
                    "keys": ["lamp", "light"],
                    "content": "@@depth 4\n@@role system\nThe lamp is a first-order Fresnel lens, lit at dusk.",
                    "extensions": {"risu_activationPercent": 100},
                    "enabled": True,
                    "insertion_order": 100,
                    "constant": False,
                    "selective": False,
                    "name": "Lamp",
                    "comment": "Lamp",
                    "case_sensitive": False,
                    "use_regex": False,
                },
                {
                    "keys": ["/storms?/i"],
                    "content": "@@risu_only_decorator 2\n@@@activate\nStorms on Gull Rock last three days.",
                    "extensions": {},
                    "enabled": True,
                    "insertion_order": 90,
                    "constant": False,
                    "selective": False,
                    "name": "Storms",
                    "comment": "Storms",
                    "case_sensitive": False,
                    "use_regex": True,
                },
            ],
        },
        "tags": ["cozy", "original", "sfw"],
        "creator": "tavern-tests",
        "character_version": "1.2",
        "extensions": {
            "risuai": {"bias": [], "viewScreen": "none", "utilityBot": False, "lowLevelAccess": False},
            "depth_prompt": {
                "prompt": "{{char}} never leaves the lamp unattended.",
                "depth": 4,
                "role": "system",
            },
            "talkativeness": "0.5",
            "fav": False,
            "world": "",
            "x_unknown_extension": {"nested": [1, {"a": None}], "flag": True},
        },
        "group_only_greetings": ["*Mira waves everyone in from the rain.*"],
        "nickname": "Mira",
        "source": ["https://example.invalid/characters/mira-vale"],
        "creation_date": 1718000000,
        "modification_date": 1726000000,
        "assets": [{"type": "icon", "uri": "ccdefault:", "name": "main", "ext": "png"}],
        "creator_notes_multilingual": {
            "en": "A calm lighthouse keeper for slow, cozy roleplay.",
            "ru": "Спокойная смотрительница маяка для неспешной уютной игры.",
        },
        "x_unknown_data_key": "kept verbatim",
    },
}

# A card in the shape chub.ai's PNG export uses: V2 without top-level V1 copies, chub's own
# extension object, an unknown data key.
CHUB_V2 = {
    "spec": "chara_card_v2",
    "spec_version": "2.0",
    "data": {
        "name": "Orrin Thatch",
        "description": "{{char}} is a travelling cartographer who trades maps for stories.",
        "personality": "curious, talkative",
        "scenario": "A roadside inn at dusk.",
        "first_mes": "\"A new face! Tell me where you've been, and I'll tell you where you're going.\"",
        "mes_example": "",
        "creator_notes": "",
        "system_prompt": "",
        "post_history_instructions": "",
        "alternate_greetings": [],
        "tags": ["fantasy", "male"],
        "creator": "tavern-tests",
        "character_version": "main",
        "extensions": {
            "chub": {
                "expressions": None,
                "alt_expressions": {},
                "id": 1234567,
                "full_path": "tavern-tests/orrin-thatch",
                "related_lorebooks": [],
                "background_image": None,
                "preset": None,
                "extensions": [],
            },
            "depth_prompt": {"prompt": "", "depth": 4},
            "fav": False,
            "talkativeness": "0.5",
            "world": "",
        },
        "x_site_field": 42,
    },
}


def main() -> None:
    BAD.mkdir(exist_ok=True)
    seraphina = (REAL / "Seraphina.png").read_bytes()
    sensei = (REAL / "CodingSensei.png").read_bytes()
    sera_card = card_json_of(seraphina)
    sensei_card = card_json_of(sensei)

    # What SillyTavern writes when it saves Seraphina: chara (V2) + ccv3.
    (HERE / "seraphina_st_export.png").write_bytes(st_write(thumbnail(seraphina), sera_card))

    # chara and ccv3 disagree: V3 must win.
    v2_old = dict(sera_card, data=dict(sera_card["data"], name="Seraphina (old V2)", description="old"))
    v3_new = dict(sera_card, spec="chara_card_v3", spec_version="3.0")
    v3_new["data"] = dict(
        sera_card["data"], nickname="Sera", group_only_greetings=["*Seraphina greets the group.*"]
    )
    # Constructed variants carry a thumbnail of Seraphina's picture, not the whole of it.
    img = image_chunks(thumbnail(seraphina))
    (HERE / "v2_v3_disagree.png").write_bytes(
        png_of(
            img + [(b"tEXt", b"chara\0" + b64(v2_old)), (b"tEXt", b"ccv3\0" + b64(v3_new)), (b"IEND", b"")]
        )
    )

    # Keywords in other cases, ccv3 before chara.
    (HERE / "keyword_case.png").write_bytes(
        png_of(
            img + [(b"tEXt", b"CCV3\0" + b64(v3_new)), (b"tEXt", b"Chara\0" + b64(v2_old)), (b"IEND", b"")]
        )
    )

    # The card in iTXt (uncompressed), iTXt (compressed) and zTXt chunks.
    payload = b64(sera_card)
    (HERE / "itxt_card.png").write_bytes(
        png_of(img + [(b"iTXt", b"chara\0\0\0\0\0" + payload), (b"IEND", b"")])
    )
    (HERE / "itxt_compressed_card.png").write_bytes(
        png_of(img + [(b"iTXt", b"chara\0\1\0en\0\0" + zlib.compress(payload)), (b"IEND", b"")])
    )
    (HERE / "ztxt_card.png").write_bytes(
        png_of(img + [(b"zTXt", b"chara\0\0" + zlib.compress(payload)), (b"IEND", b"")])
    )

    # Trailing bytes after IEND (some sites append data), and bad CRCs on IDAT and chara.
    (HERE / "trailing_bytes.png").write_bytes(seraphina + b"\0GARBAGE-AFTER-IEND" * 50)
    bad_crc = SIG + b"".join(
        chunk(t, b, crc=0xDEADBEEF if t in (b"IDAT", b"tEXt") else None) for t, b in chunks_of(seraphina)
    )
    (HERE / "bad_crc.png").write_bytes(bad_crc)

    # Base64 without padding, wrapped every 76 characters with \r\n.
    raw = payload.rstrip(b"=")
    assert raw != payload, "pick a card whose base64 has padding"
    wrapped = b"\r\n".join(raw[i : i + 76] for i in range(0, len(raw), 76))
    (HERE / "base64_wrapped_nopad.png").write_bytes(
        png_of(img + [(b"tEXt", b"chara\0" + wrapped), (b"IEND", b"")])
    )

    # chub-style PNG (V2 only, no top-level copies), on a small picture.
    (HERE / "chub_style.png").write_bytes(
        png_of(
            chunks_of(small_png((90, 110, 140)))[:-1] + [(b"tEXt", b"chara\0" + b64(CHUB_V2)), (b"IEND", b"")]
        )
    )

    # JSON files. V1: SillyTavern's flat V1 object (Coding Sensei's top level, which is
    # exactly what ST wrote for V1 readers), with an extra key from some other tool.
    v1 = {k: v for k, v in sensei_card.items() if k not in ("spec", "spec_version", "data")}
    v1["creator"] = sensei_card["data"]["creator"]
    v1["x_old_tool_field"] = "kept"
    (HERE / "v1_card.json").write_text(json.dumps(v1, indent=2, ensure_ascii=False), "utf-8")
    # V2: Seraphina with a UTF-8 BOM and \r\n line ends (Windows editors).
    text = json.dumps(sera_card, indent=4, ensure_ascii=False).replace("\n", "\r\n")
    (HERE / "v2_bom_crlf.json").write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    # V3: RisuAI's JSON export layout (indent 4).
    (HERE / "v3_card.json").write_text(json.dumps(MIRA_V3, indent=4, ensure_ascii=False), "utf-8")

    # CHARX as RisuAI writes it: assets first (stored, fflate level 0), module.risum, then
    # card.json; asset URIs point into the zip with embeded://.
    charx_card = json.loads(json.dumps(MIRA_V3))
    charx_card["data"]["assets"] = [
        {"type": "icon", "uri": "embeded://assets/icon/image/1.png", "name": "main", "ext": "png"},
        {"type": "emotion", "uri": "embeded://assets/emotion/image/2.png", "name": "happy", "ext": "png"},
    ]
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr(entry("assets/icon/image/1.png"), small_png((200, 160, 60)))
        zf.writestr(entry("assets/emotion/image/2.png"), small_png((60, 160, 200)))
        zf.writestr(
            entry("module.risum"), b"RISUM-PLACEHOLDER: not a real module, only present as RisuAI writes one"
        )
        zf.writestr(entry("card.json"), json.dumps(charx_card, indent=4, ensure_ascii=False))
    (HERE / "risu_export.charx").write_bytes(out.getvalue())

    # ---- bad inputs ----
    (BAD / "truncated.png").write_bytes(seraphina[: len(seraphina) // 3])
    (BAD / "invalid_base64.png").write_bytes(
        png_of(img + [(b"tEXt", b"chara\0" + b"eyJuYW1lIjoi!!!not*base64###"), (b"IEND", b"")])
    )
    (BAD / "invalid_json.png").write_bytes(
        png_of(
            img + [(b"tEXt", b"chara\0" + base64.b64encode(b'{"name": "Broken", "data": {')), (b"IEND", b"")]
        )
    )
    (BAD / "not_utf8.png").write_bytes(
        png_of(
            img
            + [(b"tEXt", b"chara\0" + base64.b64encode('{"name": "Zoë"}'.encode("latin-1"))), (b"IEND", b"")]
        )
    )
    (BAD / "no_card.png").write_bytes(png_of(img + [(b"tEXt", b"Software\0GIMP"), (b"IEND", b"")]))
    (BAD / "wrong_types.json").write_text(
        json.dumps(
            {
                "spec": "chara_card_v2",
                "spec_version": "2.0",
                "data": {"name": "Typo", "description": ["not", "text"]},
            }
        ),
        "utf-8",
    )
    (BAD / "not_utf8.json").write_bytes('{"name": "Zoë", "first_mes": "Ça va?"}'.encode("cp1252"))
    (BAD / "not_a_card.json").write_text(json.dumps({"hello": "world"}), "utf-8")
    (BAD / "notes.txt").write_text("Just some notes, not a card.\n", "utf-8")
    for name, evil in (("traversal.charx", "../../evil.txt"), ("absolute.charx", "/tmp/evil.txt")):
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w") as zf:
            zf.writestr(entry("card.json", zipfile.ZIP_DEFLATED), json.dumps(MIRA_V3))
            info = entry("placeholder", zipfile.ZIP_DEFLATED)
            info.filename = evil  # ZipInfo() would strip the leading slash; attackers don't
            zf.writestr(info, b"owned")
        (BAD / name).write_bytes(out.getvalue())


if __name__ == "__main__":
    main()
