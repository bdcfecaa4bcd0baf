"""Lorebook activation speed: `scan_lore` on 10,000 entries vs naive per-key loops.

Run: .venv/bin/python benchmarks/bench_lore.py [--entries 10000] [--turns 40]

Builds a seeded lorebook shaped like the big ones users import from SillyTavern: most keys are
proper names (people, places), then common nouns, multi-word keys, some secondary keys with
each selective logic, a few regex keys and constants. A seeded chat of English-like messages
mentions some of those keys. Each turn scans the last 10 messages (scan depth 10, recursion
on, default 25% budget of an 8192 context) the way the prompt assembler does
(`explain=False`), and the mean per turn is printed beside two naive loops over the same
entries and messages, measured in the same run: one `key in text` test per primary key (the
cheapest possible loop, without whole-word matching), and one precompiled whole-word regex per
primary key (SillyTavern's way; slow, so timed on a few turns only). Neither naive loop does
secondary keys, recursion or budget. The index is built on the first scan and cached; its
build time is printed separately.
"""

from __future__ import annotations

import argparse
import random
import re
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tavern.lore import LoreSettings, ScanMessage, lorebook_from_dict, scan_lore

NOUNS = [
    "sword",
    "shield",
    "castle",
    "river",
    "king",
    "queen",
    "prince",
    "princess",
    "dragon",
    "wizard",
    "witch",
    "tower",
    "forest",
    "village",
    "city",
    "harbor",
    "ship",
    "captain",
    "guard",
    "soldier",
    "knight",
    "priest",
    "temple",
    "church",
    "market",
    "tavern",
    "inn",
    "road",
    "bridge",
    "mountain",
    "valley",
    "lake",
    "sea",
    "island",
    "desert",
    "cave",
    "mine",
    "forge",
    "smith",
    "merchant",
    "thief",
    "assassin",
    "spy",
    "council",
    "senate",
    "emperor",
    "empress",
    "army",
    "fleet",
    "war",
    "peace",
    "treaty",
    "crown",
    "throne",
    "ring",
    "amulet",
    "staff",
    "wand",
    "potion",
    "poison",
    "herb",
    "healer",
    "plague",
    "famine",
    "storm",
    "winter",
    "summer",
    "festival",
    "harvest",
    "wedding",
    "funeral",
    "tomb",
    "crypt",
    "ghost",
    "spirit",
    "demon",
    "angel",
    "god",
    "goddess",
    "oracle",
    "prophecy",
    "curse",
    "blessing",
    "rune",
    "scroll",
    "library",
    "school",
    "academy",
    "guild",
    "order",
    "cult",
    "heretic",
    "rebel",
    "bandit",
    "pirate",
    "smuggler",
    "slave",
    "prisoner",
    "prison",
    "dungeon",
    "gate",
    "wall",
    "fortress",
    "keep",
    "barracks",
    "stable",
    "horse",
    "wolf",
    "bear",
    "raven",
    "serpent",
    "griffin",
    "unicorn",
    "phoenix",
    "giant",
    "troll",
    "goblin",
    "orc",
    "elf",
    "dwarf",
    "gnome",
    "halfling",
    "vampire",
    "werewolf",
    "necromancer",
    "paladin",
    "ranger",
    "bard",
    "monk",
    "druid",
    "cleric",
    "sorcerer",
    "warlock",
    "alchemist",
    "engineer",
    "airship",
    "train",
    "factory",
    "clockwork",
    "steam",
    "lantern",
    "compass",
    "map",
    "treasure",
    "gold",
    "silver",
    "copper",
    "iron",
    "steel",
    "diamond",
    "ruby",
    "emerald",
    "sapphire",
    "pearl",
    "silk",
    "wine",
    "ale",
    "bread",
    "cheese",
    "salt",
    "spice",
    "tea",
    "coffee",
    "tobacco",
]

ADJECTIVES = [
    "old",
    "new",
    "black",
    "white",
    "red",
    "golden",
    "silver",
    "iron",
    "crimson",
    "silent",
    "hidden",
    "lost",
    "ancient",
    "broken",
    "northern",
    "southern",
    "eastern",
    "western",
    "high",
    "low",
    "great",
    "little",
    "frozen",
    "burning",
    "sunken",
    "holy",
    "dark",
    "bright",
    "royal",
]

FILLER = [
    "the",
    "a",
    "an",
    "and",
    "but",
    "or",
    "so",
    "then",
    "when",
    "while",
    "as",
    "she",
    "he",
    "they",
    "we",
    "you",
    "i",
    "it",
    "her",
    "his",
    "their",
    "our",
    "my",
    "your",
    "was",
    "were",
    "is",
    "are",
    "had",
    "has",
    "have",
    "did",
    "do",
    "does",
    "said",
    "asked",
    "whispered",
    "shouted",
    "looked",
    "turned",
    "walked",
    "ran",
    "stood",
    "sat",
    "smiled",
    "laughed",
    "nodded",
    "sighed",
    "grinned",
    "frowned",
    "reached",
    "took",
    "gave",
    "found",
    "saw",
    "heard",
    "felt",
    "knew",
    "thought",
    "wanted",
    "needed",
    "tried",
    "began",
    "kept",
    "left",
    "came",
    "went",
    "back",
    "into",
    "onto",
    "from",
    "with",
    "without",
    "about",
    "over",
    "under",
    "through",
    "across",
    "toward",
    "after",
    "before",
    "again",
    "still",
    "just",
    "only",
    "never",
    "always",
    "maybe",
    "perhaps",
    "quite",
    "very",
    "really",
    "too",
    "not",
    "no",
    "yes",
    "here",
    "there",
    "now",
    "later",
    "soon",
    "tonight",
    "today",
    "tomorrow",
    "little",
    "long",
    "short",
    "quiet",
    "loud",
    "slow",
    "quick",
    "careful",
    "softly",
    "quietly",
    "slowly",
    "suddenly",
    "finally",
    "something",
    "nothing",
    "everything",
    "someone",
    "anyone",
    "nobody",
    "hand",
    "eyes",
    "face",
    "voice",
    "door",
    "table",
    "chair",
    "room",
    "fire",
    "window",
    "floor",
    "cup",
    "night",
    "day",
    "morning",
    "evening",
    "light",
    "shadow",
    "way",
    "time",
    "moment",
    "word",
    "name",
]

SYLLABLES = [
    "ka",
    "el",
    "mir",
    "an",
    "dor",
    "th",
    "ri",
    "va",
    "sel",
    "ion",
    "bra",
    "gor",
    "lin",
    "tha",
    "ve",
    "ros",
    "qu",
    "ash",
    "ul",
    "fen",
    "mar",
    "is",
    "cal",
    "der",
    "ny",
    "om",
    "bel",
    "ar",
    "wyn",
    "tor",
    "zen",
    "phi",
    "la",
    "mo",
    "re",
    "ki",
    "sa",
    "dun",
    "hal",
    "ev",
    "or",
    "gwen",
    "ald",
    "ric",
    "fa",
    "nor",
    "sha",
    "ly",
    "bro",
]


def make_names(rng: random.Random, count: int) -> list[str]:
    names: set[str] = set()
    while len(names) < count:
        parts = rng.randint(2, 3)
        names.add("".join(rng.choice(SYLLABLES) for _ in range(parts)).capitalize())
    return sorted(names)


def make_book(rng: random.Random, size: int, names: list[str]) -> dict:
    entries = {}
    for uid in range(size):
        roll = rng.random()
        keys: list[str]
        if roll < 0.60:
            keys = rng.sample(names, rng.randint(1, 3))
        elif roll < 0.85:
            keys = rng.sample(NOUNS, rng.randint(1, 2))
        else:
            keys = [f"{rng.choice(ADJECTIVES)} {rng.choice(NOUNS)}" for _ in range(rng.randint(1, 2))]
        if uid % 500 == 7:
            keys.append(f"/{rng.choice(names).lower()}s?/i")
        secondary: list[str] = []
        if rng.random() < 0.2:
            secondary = rng.sample(NOUNS + names[:200], rng.randint(1, 2))
        entries[str(uid)] = {
            "uid": uid,
            "key": keys,
            "keysecondary": secondary,
            "comment": f"Entry {uid}",
            "content": " ".join(rng.choice(FILLER + NOUNS) for _ in range(rng.randint(25, 60))),
            "constant": uid < 3,
            "selective": True,
            "selectiveLogic": rng.randint(0, 3),
            "order": rng.randint(0, 300),
            "position": rng.choice([0, 1, 4]),
            "disable": rng.random() < 0.03,
            "probability": 100,
            "useProbability": True,
            "depth": 4,
            "group": "",
            "scanDepth": None,
        }
    return {"entries": entries}


def make_chat(rng: random.Random, length: int, names: list[str]) -> list[ScanMessage]:
    chat = []
    for i in range(length):
        words = []
        for _ in range(rng.randint(40, 110)):
            r = rng.random()
            if r < 0.03:
                words.append(rng.choice(names))
            elif r < 0.08:
                words.append(rng.choice(NOUNS))
            else:
                words.append(rng.choice(FILLER))
        text = " ".join(words).capitalize() + "."
        chat.append(ScanMessage("User" if i % 2 == 0 else "Mira", text, i % 2 == 0))
    return chat


def count_tokens(text: str) -> int:
    return len(text) // 4 + 1


def naive_regex(compiled: list[list[re.Pattern[str]]], text: str) -> int:
    hits = 0
    for patterns in compiled:
        for pattern in patterns:
            if pattern.search(text):
                hits += 1
                break
    return hits


def naive_in(keys: list[list[str]], text: str) -> int:
    hits = 0
    for entry_keys in keys:
        for key in entry_keys:
            if key in text:
                hits += 1
                break
    return hits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=10_000)
    parser.add_argument("--turns", type=int, default=40)
    args = parser.parse_args()

    rng = random.Random(1234)
    names = make_names(rng, 6000)
    raw = make_book(rng, args.entries, names)
    started = time.perf_counter()
    book = lorebook_from_dict(raw, "bench")
    load_ms = (time.perf_counter() - started) * 1000
    chat = make_chat(rng, args.turns + 10, names)
    settings = LoreSettings(scan_depth=10)
    books = [("global", book)]

    started = time.perf_counter()
    scan_lore(books, chat[:10], settings, 8192, count_tokens, rng_seed=0, explain=False)
    build_ms = (time.perf_counter() - started) * 1000

    lowered_keys = [[k.lower() for k in entry.key] for entry in book.entries]
    compiled = [[re.compile(r"(?:^|\W)" + re.escape(k) + r"(?:$|\W)") for k in keys] for keys in lowered_keys]

    scan_ms, in_ms, regex_ms, activated, naive_hits = [], [], [], [], []
    for turn in range(args.turns):
        window = chat[turn : turn + 10]
        started = time.perf_counter()
        result = scan_lore(books, window, settings, 8192, count_tokens, rng_seed=turn, explain=False)
        scan_ms.append((time.perf_counter() - started) * 1000)
        activated.append(len(result.activated))

        started = time.perf_counter()
        text = "\n".join(f"{m.name}: {m.text}" for m in reversed(window)).lower()
        naive_hits.append(naive_in(lowered_keys, text))
        in_ms.append((time.perf_counter() - started) * 1000)

        if turn < 3:
            started = time.perf_counter()
            naive_regex(compiled, text)
            regex_ms.append((time.perf_counter() - started) * 1000)

    print(f"entries: {args.entries}, turns: {args.turns}, scan depth: 10 messages")
    print(f"load from dict: {load_ms:.0f} ms; index build (first scan, then cached): {build_ms:.0f} ms")
    print(
        f"tavern scan_lore: {statistics.mean(scan_ms):.2f} ms/turn "
        f"(median {statistics.median(scan_ms):.2f}; {statistics.mean(activated):.1f} entries "
        f"activated incl. recursion, budget-limited)"
    )
    print(
        f"naive loop: {statistics.mean(in_ms):.2f} ms/turn "
        f"(`key in text` per primary key; {statistics.mean(naive_hits):.0f} entries matched)"
    )
    print(
        f"naive whole-word regex loop: {statistics.mean(regex_ms):.0f} ms/turn "
        f"(one regex per primary key, {len(regex_ms)} turns)"
    )


if __name__ == "__main__":
    main()
