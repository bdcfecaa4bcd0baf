"""Coming back to a chat after talking to another character: what the first turns back cost.

The user chats with Mira (her Saltmere lorebook attached) for `--turns` turns, sends one
message to Captain Varga (who shares that book), then goes back to Mira for `--back` turns.
Three sides, each the whole Tavern stack (session, lore, assembler, embedded engine) on the
bundled SmolLM2, greedy, in the same run:

- stays: the same chat, never left (what a turn costs anyway);
- switches: Tavern's engine (saved states in host memory, the bank of removed text, the
  chat's layout kept while it is closed);
- one state: the same switch with `cache_ram_mib = 0` and `bank_cells = 0`, a cache with one
  state per slot (llama-server without `--cache-ram`).

    python benchmarks/bench_chat_switch.py [--turns 15] [--back 3] [--ctx 1024] [--threads 2]

Prints the prompt tokens evaluated on each turn back, per side.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_context_shift import LORE_LINES  # noqa: E402

from tavern.engines.base import Finished  # noqa: E402
from tavern.engines.local import LocalEngine  # noqa: E402
from tavern.engines.models import default_model_path  # noqa: E402


def play(args: argparse.Namespace, switch: bool, **engine_kw: int) -> list[tuple[int, int, str]]:
    """(prompt tokens, evaluated tokens, restored state) of each turn back to Mira."""
    from tavern.session import Tavern

    app = Tavern.open(
        Path(tempfile.mkdtemp(prefix="tavern-bench-")),
        **{
            "model.n_ctx": args.ctx,
            "generation.max_tokens": args.reply,
            "generation.preset": "Deterministic",
            "memory.enabled": False,
        },
    )
    engine = LocalEngine(default_model_path(), n_ctx=args.ctx, cache_reuse=32, n_threads=args.threads, **engine_kw)
    engine.load()
    app.use_engine(engine)
    lines = LORE_LINES["mira"]

    def send(session, line: str):
        return [ev for ev in session.send(line) if isinstance(ev, Finished)][-1].stats

    try:
        mira = app.open_chat("Mira", new=True)
        for t in range(args.turns):
            send(mira, lines[t % len(lines)])
        if switch:
            send(app.open_chat("Captain Ilse Varga", new=True), "Where are we headed, captain?")
            mira = app.open_chat("Mira")  # the latest chat, opened again
        out = []
        for t in range(args.turns, args.turns + args.back):
            st = send(mira, lines[t % len(lines)])
            out.append((st.prompt_tokens, st.evaluated_tokens, st.restored_state))
        return out
    finally:
        engine.unload()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--turns", type=int, default=15, help="turns with Mira before the switch")
    ap.add_argument("--back", type=int, default=3, help="turns with Mira after it")
    ap.add_argument("--ctx", type=int, default=1024)
    ap.add_argument("--reply", type=int, default=48)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    print(f"Mira: {args.turns} turns, one turn with Captain Varga, {args.back} turns back; ctx {args.ctx}, greedy")
    sides = [
        ("stays (never left)", False, {}),
        ("switches: tavern", True, {}),
        ("switches: one state", True, {"cache_ram_mib": 0, "bank_cells": 0}),
    ]
    for name, switch, kw in sides:
        turns = play(args, switch, **kw)
        cells = "  ".join(f"{ev:>4} of {pt}" + (f" (restored {st})" if st else "") for pt, ev, st in turns)
        print(f"{name:22s} evaluated on the turns back: {cells}; total {sum(ev for _, ev, _ in turns)}", flush=True)


if __name__ == "__main__":
    main()
