"""Card import speed: 1,000 generated PNG cards through CardLibrary.import_file, beside
baselines measured on the same files in the same run.

Run:  .venv/bin/python benchmarks/bench_cards.py [--count 1000]

The cards have realistic sizes (a 2-4 KB description, a long greeting, examples, two
alternate greetings, a lorebook on a third of them) on 200x300 noisy avatars (tens of KB,
like small real avatars). Baselines:
- "Pillow": Image.open + load + the `chara` text + base64 + json.loads; what an importer
  built on Pillow does, and it writes nothing.
- "copy": shutil.copyfile of each file, and the same with an fsync per file: the I/O floor
  of any import that writes a durable copy (Tavern's atomic write fsyncs).
Also printed: listing the library (cold, building the index; then warm).
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from PIL import Image

from tavern.cards import Card, CardLibrary
from tavern.cards.formats import card_png_bytes

WORDS = [
    "the",
    "lighthouse",
    "keeper",
    "storm",
    "quiet",
    "harbor",
    "lamp",
    "rope",
    "salt",
    "gull",
    "tide",
    "ferry",
    "old",
    "stories",
    "she",
    "he",
    "they",
    "walks",
    "speaks",
    "softly",
    "remembers",
    "every",
    "ship",
    "that",
    "passed",
    "north",
    "wind",
    "rain",
    "lantern",
    "map",
    "road",
    "inn",
    "traveler",
    "sword",
    "guild",
    "magic",
    "forest",
    "glade",
    "river",
    "mountain",
    "secret",
    "*smiles*",
    "*looks",
    "away*",
    '"Come',
    'in."',
    "{{user}}",
    "{{char}}",
    "warmth",
    "bread",
    "tea",
    "fire",
    "ash",
]


def words(rng: random.Random, n_bytes: int) -> str:
    out, size = [], 0
    while size < n_bytes:
        word = rng.choice(WORDS)
        out.append(word)
        size += len(word) + 1
    return " ".join(out)


def avatar(rng: random.Random) -> bytes:
    image = Image.effect_noise((200, 300), 24).convert("RGB")
    tint = Image.new("RGB", image.size, tuple(rng.randrange(60, 200) for _ in range(3)))
    out = io.BytesIO()
    Image.blend(image, tint, 0.6).save(out, format="PNG")
    return out.getvalue()


def make_card(rng: random.Random, i: int) -> Card:
    book = None
    if i % 3 == 0:
        book = {
            "name": f"World {i}",
            "entries": [
                {
                    "id": j,
                    "keys": [rng.choice(WORDS), rng.choice(WORDS)],
                    "content": words(rng, 400),
                    "extensions": {"position": 0, "probability": 100, "useProbability": True},
                    "enabled": True,
                    "insertion_order": 100,
                    "position": "before_char",
                }
                for j in range(8)
            ],
        }
    return Card(
        name=f"Character {i:04d}",
        description=words(rng, rng.randint(2000, 4000)),
        personality=words(rng, 200),
        scenario=words(rng, 300),
        first_mes=words(rng, rng.randint(800, 1500)),
        mes_example="<START>\n" + words(rng, rng.randint(1000, 2000)),
        creator_notes=words(rng, 300),
        alternate_greetings=[words(rng, 800), words(rng, 800)],
        tags=rng.sample(["fantasy", "sfw", "female", "male", "cozy", "adventure", "original", "scifi"], 4),
        creator=f"creator{i % 37}",
        character_version="1.0",
        extensions={
            "talkativeness": "0.5",
            "fav": False,
            "world": "",
            "depth_prompt": {"prompt": "", "depth": 4, "role": "system"},
        },
        character_book=book,
    )


def rate(count: int, seconds: float) -> str:
    return f"{count / seconds:.1f} cards/s"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=1000)
    count = parser.parse_args().count
    rng = random.Random(1)
    with tempfile.TemporaryDirectory(prefix="bench_cards_") as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        pictures = [avatar(rng) for _ in range(8)]
        paths = []
        for i in range(count):
            path = src / f"card{i:04d}.png"
            path.write_bytes(card_png_bytes(make_card(rng, i), pictures[i % len(pictures)]))
            paths.append(path)
        total = sum(p.stat().st_size for p in paths)
        print(f"{count} cards, {total / count / 1024:.0f} KiB each on average")

        # Baseline 1: Pillow read of the same files (no validation, no write).
        start = time.perf_counter()
        for path in paths:
            with Image.open(path) as image:
                image.load()
                json.loads(base64.b64decode(image.text["chara"]))
        pillow = time.perf_counter() - start

        # Baseline 2: copying the files, then copying them durably (fsync each, as the
        # import's atomic write does).
        copies = Path(tmp) / "copies"
        copies.mkdir()
        start = time.perf_counter()
        for path in paths:
            shutil.copyfile(path, copies / path.name)
        copy = time.perf_counter() - start
        synced = Path(tmp) / "synced"
        synced.mkdir()
        start = time.perf_counter()
        for path in paths:
            with open(synced / path.name, "wb") as out:
                out.write(path.read_bytes())
                out.flush()
                os.fsync(out.fileno())
        copy_sync = time.perf_counter() - start

        library = CardLibrary(Path(tmp) / "home" / "characters")
        start = time.perf_counter()
        for path in paths:
            library.import_file(path)
        tavern = time.perf_counter() - start

        start = time.perf_counter()
        cold = library.list()
        cold_s = time.perf_counter() - start
        start = time.perf_counter()
        warm = library.list()
        warm_s = time.perf_counter() - start
        assert len(cold) == len(warm) == count

        print(f"tavern import: {rate(count, tavern)}")
        print(f"baseline Pillow open+load+chara+json.loads (reads only): {rate(count, pillow)}")
        print(f"baseline file copy (shutil.copyfile): {rate(count, copy)}")
        print(f"baseline file copy + fsync: {rate(count, copy_sync)}")
        print(f"tavern list, cold (reads every card, builds the index): {cold_s * 1000:.0f} ms")
        print(f"tavern list, warm (index): {warm_s * 1000:.0f} ms")


if __name__ == "__main__":
    main()
