"""Fuzz: thousands of mutations of real cards. Reading one may succeed or raise CardError,
nothing else, and never hang; whatever reads must also export and read back equal.

A seeded mutator (not hypothesis) keeps the run deterministic and its length fixed: each
failure message carries the seed and case number, and `FUZZ_SEED=<n>` reruns a seed.
Cases are a mix of byte-level damage (flips, cuts, splices, rewritten chunk lengths),
damage inside the decoded JSON, and type swaps in the parsed card object re-encoded into a
valid PNG, so the parser, the chunk walker, the zip layer and the field checks all get hit.
"""

from __future__ import annotations

import base64
import json
import os
import random
import signal
import struct
import zlib
from contextlib import contextmanager

import pytest

from tavern.cards import Card, detect_kind, read_card_bytes
from tavern.cards.formats import card_png_bytes, load_card_with_avatar
from tavern.errors import CardError

SEEDS = [int(os.environ["FUZZ_SEED"])] if "FUZZ_SEED" in os.environ else [20240915, 7, 1234]
CASES_PER_SEED = 600

SOURCES = [
    "seraphina_st_export.png",
    "chub_style.png",
    "ztxt_card.png",
    "itxt_card.png",
    "v1_card.json",
    "v3_card.json",
    "v2_bom_crlf.json",
    "risu_export.charx",
]

INTERESTING_U32 = [0, 1, 0x7F, 0x80, 0xFF, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 16 * 1024 * 1024 + 1]
ODD_VALUES = [
    None,
    True,
    0,
    -1,
    2**70,
    1.5,
    "",
    "x" * 300,
    "\ud800",
    "\u202e",
    [],
    {},
    [None],
    {"a": [1]},
    ["a", 1],
    [[["deep"]]],
    "1700000000",
    1e300,
    {"entries": 5},
    [{"uri": 5, "type": "icon"}],
]


@contextmanager
def deadline(seconds: int, what: str):
    """Fail (instead of hanging the suite) if one case runs away. POSIX only."""
    if not hasattr(signal, "SIGALRM"):
        yield
        return

    def fire(signum, frame):
        raise TimeoutError(f"hang: {what}")

    old = signal.signal(signal.SIGALRM, fire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


# -- mutators ---------------------------------------------------------------------------------


def flip_bytes(rng, data):
    buf = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        buf[rng.randrange(len(buf))] = rng.randrange(256)
    return bytes(buf)


def cut(rng, data):
    return data[: rng.randrange(len(data))]


def insert_junk(rng, data):
    at = rng.randrange(len(data))
    return data[:at] + rng.randbytes(rng.randint(1, 64)) + data[at:]


def delete_range(rng, data):
    at = rng.randrange(len(data))
    return data[:at] + data[at + rng.randint(1, 256) :]


def splice_copy(rng, data):
    a = rng.randrange(len(data))
    piece = data[a : a + rng.randint(1, 512)]
    b = rng.randrange(len(data))
    return data[:b] + piece + data[b:]


def poke_u32(rng, data):
    """Overwrite 4 bytes with an interesting integer, preferably a chunk length or a zip
    size field, where parsers trust the input most."""
    buf = bytearray(data)
    targets = [
        i - 4 for i in range(len(buf)) if buf[i : i + 4] in (b"tEXt", b"iTXt", b"zTXt", b"IDAT", b"IHDR")
    ]
    targets += [i + 18 for i in range(len(buf)) if buf[i : i + 4] in (b"PK\x03\x04", b"PK\x01\x02")]
    at = rng.choice(targets) if targets and rng.random() < 0.7 else rng.randrange(max(1, len(buf) - 4))
    struct.pack_into(">I", buf, max(0, min(at, len(buf) - 4)), rng.choice(INTERESTING_U32))
    return bytes(buf)


BYTE_MUTATORS = [flip_bytes, cut, insert_junk, delete_range, splice_copy, poke_u32]


def card_object(data: bytes) -> dict:
    card = read_card_bytes(data, "seed")
    return card.to_v2_dict() if isinstance(card, Card) else card


def mutate_object(rng, obj):
    """Swap a random value somewhere in the object for an odd one (or delete it)."""
    obj = json.loads(json.dumps(obj))
    node, path = obj, []
    for _ in range(rng.randint(1, 5)):
        if isinstance(node, dict) and node:
            key = rng.choice(list(node))
        elif isinstance(node, list) and node:
            key = rng.randrange(len(node))
        else:
            break
        path.append((node, key))
        node = node[key]
    if not path:
        return rng.choice(ODD_VALUES)
    parent, key = path[-1]
    if isinstance(parent, dict) and rng.random() < 0.2:
        del parent[key]
    else:
        parent[key] = rng.choice(ODD_VALUES)
    return obj


def encode_object(rng, obj, picture: bytes) -> bytes:
    text = json.dumps(obj, ensure_ascii=rng.random() < 0.5)
    raw = text.encode("utf-8", "surrogatepass")
    if rng.random() < 0.15:  # damage the JSON text itself
        at = rng.randrange(len(raw))
        raw = raw[:at] + rng.choice([b'"', b"{", b"]", b"\\", b"\xff", b"\x00", b""]) + raw[at + 1 :]
    if rng.random() < 0.3:
        return raw
    keyword = rng.choice([b"chara", b"ccv3", b"CHARA"])
    payload = base64.b64encode(raw)
    if rng.random() < 0.2:
        payload = payload.rstrip(b"=") + b"\n"
    body = keyword + b"\0" + payload
    ctype = b"tEXt"
    if rng.random() < 0.2:
        ctype, body = b"zTXt", keyword + b"\0\0" + zlib.compress(payload)
    chunk = struct.pack(">I", len(body)) + ctype + body + struct.pack(">I", zlib.crc32(ctype + body))
    iend = picture.rindex(b"IEND") - 4
    return picture[:iend] + chunk + picture[iend:]


# -- the property --------------------------------------------------------------------------


def check_case(data: bytes, tmp_file, picture: bytes, what: str) -> bool:
    """Check one case; True when the card was accepted."""
    with deadline(10, what):
        try:
            card = read_card_bytes(data, "fuzz")
        except CardError as err:
            assert str(err).startswith("fuzz: ") and "\n" not in str(err), what
            card = None
        if card is not None:
            # Anything we accept, we can write and read back as the same card.
            assert Card.from_dict(card.to_v2_dict()) == card, what
            assert Card.from_dict(card.to_v3_dict()) == card, what
            assert read_card_bytes(card_png_bytes(card, picture), "again") == card, what
        tmp_file.write_bytes(data)
        assert detect_kind(tmp_file) in {
            "card",
            "lorebook",
            "chat",
            "unknown",
            "preset:sampler",
            "preset:instruct",
            "preset:context",
            "preset:chat",
        }, what
        try:
            load_card_with_avatar(tmp_file)
        except CardError:
            pass
    return card is not None


@pytest.mark.parametrize("seed", SEEDS)
def test_mutated_real_cards_only_raise_card_error(data_dir, tmp_path, small_picture, seed):
    rng = random.Random(seed)
    originals = {name: (data_dir / name).read_bytes() for name in SOURCES}
    objects = {name: card_object(data) for name, data in originals.items()}
    tmp_file = tmp_path / "case"
    accepted = rejected = 0
    for case in range(CASES_PER_SEED):
        name = rng.choice(SOURCES)
        what = f"seed {seed} case {case} from {name}"
        if rng.random() < 0.6:
            data = originals[name]
            for _ in range(rng.choice([1, 1, 1, 2, 3])):
                if len(data) < 8:  # cut to almost nothing: the mutators need a few bytes
                    break
                data = rng.choice(BYTE_MUTATORS)(rng, data)
        else:
            data = encode_object(rng, mutate_object(rng, objects[name]), small_picture)
        try:
            if check_case(data, tmp_file, small_picture, what):
                accepted += 1
            else:
                rejected += 1
        except AssertionError:
            raise
        except Exception as err:  # noqa: BLE001 - any other exception is the bug we hunt
            # (a CardError here came from writing or re-reading an accepted card: also a bug)
            pytest.fail(f"{what}: {type(err).__name__}: {err}")
    # Both sides of the property must be exercised: mutations so mild that every card still
    # reads (or so wild that none does) would check only half of it.
    print(f"seed {seed}: {accepted} accepted, {rejected} rejected")
    assert accepted >= CASES_PER_SEED // 10, f"only {accepted} of {CASES_PER_SEED} mutated cards were accepted"
    assert rejected >= CASES_PER_SEED // 10, f"only {rejected} of {CASES_PER_SEED} mutated cards were rejected"
