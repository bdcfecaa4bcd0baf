"""The word index never misses an entry: scans of seeded random books give exactly what a
brute-force matcher (every key tested against the text, as SillyTavern does, with Tavern's
Unicode boundaries) gives, and the fast prompt path activates what the explaining path does."""

from __future__ import annotations

import random
import re

import pytest
from lore_helpers import make_book, st_entry, words

from tavern.lore import LoreSettings, ScanMessage, scan_lore

TOKENS = [
    "dragon",
    "dragonfly",
    "snapdragon",
    "Dragon",
    "DRAGON",
    "cat",
    "category",
    "half-elf",
    "half-elfish",
    "o'neil",
    "C++",
    "#tag",
    "ox",
    "a",
    "an",
    "red",
    "red dragon",
    "dark forest",
    "the old mill",
    "mill",
    "кот",
    "который",
    "Кот",
    "café",
    "cafés",
    "x1",
    "_under_",
    "Ilse",
    "ilse",
    "Varga",
    "sea",
    "serpent",
    "seaserpent",
    "sea-serpent",
    "ab",
    "abc",
    "abcd",
]
KEYS = [
    "dragon",
    "Dragon",
    "cat",
    "half-elf",
    "o'neil",
    "c++",
    "#tag",
    "ox",
    "a",
    "red dragon",
    "dark forest",
    "old mill",
    "mill",
    "кот",
    "café",
    "x1",
    "_under_",
    "Ilse",
    "sea serpent",
    "serpent",
    "ab",
    "abc",
    "ark fores",
    "/sea.?serpent/i",
    "/^x/",
    "/dragon$/",
]


def reference_match(key: str, text: str, case: bool, whole: bool) -> bool:
    """SillyTavern's matchKeys, written plainly (Unicode boundaries, as Tavern documents)."""
    key = key.strip()
    shape = re.fullmatch(r"/([\w\W]+?)/([gimsuy]*)", key)
    if shape and not re.search(r"(^|[^\\])/", shape.group(1)):
        flags = re.IGNORECASE if "i" in shape.group(2) else 0
        pattern = shape.group(1).replace("$", r"\Z")
        return re.search(pattern, text, flags) is not None
    if not case:
        key, text = key.lower(), text.lower()
    if whole and len(key.split()) == 1:
        return re.search(r"(?<!\w)" + re.escape(key) + r"(?!\w)", text) is not None
    return key in text


def random_book(rng: random.Random, size: int):
    entries = []
    for uid in range(size):
        fields = {"key": rng.sample(KEYS, rng.randint(1, 2)), "content": f"content {uid}"}
        roll = rng.random()
        if roll < 0.15:
            fields["caseSensitive"] = True
        elif roll < 0.3:
            fields["matchWholeWords"] = False
        if rng.random() < 0.2:
            fields["scanDepth"] = rng.randint(0, 4)
        if rng.random() < 0.3:
            fields["keysecondary"] = rng.sample(KEYS, rng.randint(1, 2))
            fields["selectiveLogic"] = rng.randint(0, 3)
        entries.append(st_entry(uid, **fields))
    return make_book(*entries)


def scan_text(messages: list[ScanMessage], depth: int) -> str:
    if depth <= 0:
        return ""
    parts = [f"{m.name}: {m.text}".strip() for m in reversed(messages)][:depth]
    return "\x01" + "\n\x01".join(parts)


def expected(book, messages: list[ScanMessage], depth: int) -> list[int]:
    out = []
    for entry in book.entries:
        case = bool(entry.case_sensitive)
        whole = entry.match_whole_words is not False
        text = scan_text(messages, entry.scan_depth if entry.scan_depth is not None else depth)
        if not any(reference_match(k, text, case, whole) for k in entry.key):
            continue
        if entry.selective and entry.keysecondary:
            hits = [reference_match(k, text, case, whole) for k in entry.keysecondary]
            logic = entry.selective_logic
            ok = (
                (logic == 0 and any(hits))
                or (logic == 1 and not all(hits))
                or (logic == 2 and not any(hits))
                or (logic == 3 and all(hits))
            )
            if not ok:
                continue
        out.append(entry.uid)
    return out


@pytest.mark.parametrize("seed", range(6))
def test_index_finds_exactly_what_brute_force_finds(seed):
    rng = random.Random(seed)
    book = random_book(rng, 150)
    settings = LoreSettings(scan_depth=3, recursive=False)
    for _ in range(15):
        messages = [
            ScanMessage(rng.choice(["User", "Mira"]), " ".join(rng.choices(TOKENS, k=rng.randint(1, 8))))
            for _ in range(rng.randint(1, 5))
        ]
        result = scan_lore([("global", book)], messages, settings, 10**6, words)
        assert sorted(a.uid for a in result.activated) == expected(book, messages, 3)


@pytest.mark.parametrize("seed", range(4))
def test_prompt_path_activates_what_the_explaining_path_does(seed):
    rng = random.Random(100 + seed)
    entries = []
    for uid in range(200):
        fields = {
            "key": rng.sample(KEYS[:20], rng.randint(1, 2)),
            "content": " ".join(rng.choices(TOKENS, k=rng.randint(3, 12))),
            "order": rng.randint(0, 50),
        }
        if rng.random() < 0.2:
            fields["group"] = rng.choice(["g1", "g2", "g1, g2"])
        if rng.random() < 0.2:
            fields["probability"] = rng.randint(10, 90)
        if rng.random() < 0.1:
            fields["sticky"] = 2
        entries.append(st_entry(uid, **fields))
    book = make_book(*entries)
    state: dict = {}
    history: list[ScanMessage] = []
    for turn in range(8):
        history.append(ScanMessage("User", " ".join(rng.choices(TOKENS, k=10))))
        runs = [
            scan_lore(
                [("global", book)],
                history,
                LoreSettings(),
                600,
                words,
                timed_state=state,
                rng_seed=turn,
                explain=explain,
            )
            for explain in (True, False)
        ]
        full, fast = runs
        assert [(a.uid, a.reason) for a in fast.activated] == [(a.uid, a.reason) for a in full.activated]
        assert fast.timed_state == full.timed_state and fast.tokens_used == full.tokens_used
        state = full.timed_state
