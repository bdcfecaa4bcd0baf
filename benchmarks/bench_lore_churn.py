"""Lore churn: prompt tokens evaluated over a 40-turn chat whose embedded lorebook flickers.

A card (the bundled Mira plus an embedded lorebook of six entries) and a fixed script of user
messages that mention one or two entries' keys each turn, each key coming back every three to
six turns, so that with SillyTavern's rules the entries fire and stop firing turn after turn and
the lore block keeps changing. Two workloads: `embedded`, the card with only its own book (the
issue's workload), and `saltmere`, the same card still attached to the bundled Saltmere world
as Mira is: 14 more entries, two of them @depth entries that move with the newest message
every turn, an inclusion group, a cooldown, and more lore than the 25% budget holds. The
same chat is played on the bundled SmolLM2-135M at context 2048 (greedy, fixed seed) with
`[lore] cache_aware = false` (the default: SillyTavern's behaviour, the baseline) and `true`
(an entry lingers for `linger` messages after it last fired). The figure is the share of the
prompt tokens the engine had to evaluate, summed over the turns (the rest came from its cache).

    python benchmarks/bench_lore_churn.py [--workload embedded|saltmere|both] [--turns 40]
        [--max-tokens 48] [--linger 6]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tavern.engines.base import Finished  # noqa: E402
from tavern.session import Tavern  # noqa: E402

ENTRIES = [
    ("storm", "A storm season grips Saltmere: boats stay in, and the harbour bell rings at every squall."),
    ("lighthouse", "The lighthouse on Gull Point has been dark for a week; nobody will say who keeps it now."),
    ("smuggler", "Smugglers run brandy past the customs cutter on moonless nights, and Mira buys from them."),
    ("festival", "The Lantern Festival is in three days: paper lanterns on every roof and a boat race."),
    ("kestrel", "The Kestrel, a cargo skyship, moors at the mast above the town twice a month."),
    ("cat", "Mira's cat, Admiral, sleeps on the bar and bites anyone who calls him fat."),
]
TOPICS = [
    "Is the {} still a worry tonight?",
    "Tell me more about the {}.",
    "What do people say about the {}?",
]


def script(turns: int) -> list[str]:
    """Turn i mentions one or two keys, in a rotation that brings each back every 2-3 turns."""
    keys = [k for k, _ in ENTRIES]
    out = []
    for i in range(turns):
        first = keys[i % len(keys)]
        second = keys[(i * 2 + 1) % len(keys)]
        line = TOPICS[i % len(TOPICS)].format(first)
        out.append(line if i % 2 else f"{line} And the {second}?")
    return out


def make_card(folder: Path, world: bool) -> Path:
    data = json.loads((ROOT / "cards" / "Mira.json").read_text(encoding="utf-8"))
    data["data"]["name"] = "Mira Churn"
    if not world:
        data["data"]["extensions"].pop("world", None)  # only its own book
    data["data"]["character_book"] = {
        "name": "Saltmere flicker",
        "scan_depth": 2,
        "token_budget": 512,
        "recursive_scanning": False,
        "extensions": {},
        "entries": [
            {
                "id": i,
                "keys": [key],
                "content": content,
                "enabled": True,
                "insertion_order": 100 + i,
                "position": "after_char",
                "extensions": {},
            }
            for i, (key, content) in enumerate(ENTRIES)
        ],
    }
    path = folder / "mira_churn.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def play(cache_aware: bool, turns: int, max_tokens: int, linger: int, world: bool) -> dict:
    home = Path(tempfile.mkdtemp(prefix="bench-churn-"))
    app = Tavern.open(
        home,
        **{
            "model.n_ctx": 2048,
            "generation.max_tokens": max_tokens,
            "generation.temperature": 0.0,
            "generation.seed": 3,
            "lore.cache_aware": cache_aware,
            "lore.linger": linger,
        },
    )
    key = app.cards.library.import_file(make_card(home, world))
    session = app.open_chat(key, new=True)
    prompt = evaluated = changes = 0
    last_lore: tuple = ()
    start = time.perf_counter()
    for text in script(turns):
        final = None
        for event in session.send(text):
            if isinstance(event, Finished):
                final = event
        assert final is not None and not final.error, final and final.error
        prompt += final.stats.prompt_tokens
        evaluated += final.stats.evaluated_tokens
        lore = tuple(sorted((a.book, a.uid) for a in session.last_lore.activated)) if session.last_lore else ()
        changes += lore != last_lore
        last_lore = lore
    app.engines.current.unload()
    return {
        "prompt": prompt,
        "evaluated": evaluated,
        "share": evaluated / prompt if prompt else 0.0,
        "lore_changes": changes,
        "seconds": time.perf_counter() - start,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--turns", type=int, default=40)
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--linger", type=int, default=6)
    ap.add_argument("--workload", choices=["embedded", "saltmere", "both"], default="both")
    args = ap.parse_args()
    workloads = ["embedded", "saltmere"] if args.workload == "both" else [args.workload]
    for workload in workloads:
        world = workload == "saltmere"
        base = play(False, args.turns, args.max_tokens, args.linger, world)
        aware = play(True, args.turns, args.max_tokens, args.linger, world)
        for name, r in (("default (SillyTavern)", base), (f"cache_aware, linger {args.linger}", aware)):
            print(
                f"{workload:9} {name:26} {r['evaluated']:6,} of {r['prompt']:7,} prompt tokens evaluated "
                f"({r['share']:.1%}); the lore set changed on {r['lore_changes']} of {args.turns} turns; "
                f"{r['seconds']:.0f} s",
                flush=True,
            )


if __name__ == "__main__":
    main()
