"""What a full bank of removed text costs generation: the attention runs over every used cell
of the unified KV cache, masked or not, so cells waiting in the bank make each new token's
attention longer. Tavern's engine with its bank full, beside the same engine with the bank off,
same prompt, same run (interleaved rounds).

    python benchmarks/bench_bank.py [--ctx 1024] [--tokens 64] [--rounds 3] [--threads 1]

Prints generation tok/s for both and how many cells the bank held.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tavern.engines.base import Finished, GenerationRequest  # noqa: E402
from tavern.engines.local import LocalEngine  # noqa: E402
from tavern.engines.models import default_model_path  # noqa: E402
from tavern.engines.samplers import SamplerSettings  # noqa: E402

SYSTEM = "<|im_start|>system\nYou are Mira, the innkeeper of the Rusty Lantern in Saltmere.<|im_end|>\n"
TAIL = "<|im_start|>user\nUser: And then?<|im_end|>\n<|im_start|>assistant\nMira:"


def exchange(i: int) -> str:
    return (
        f"<|im_start|>user\nUser: Tell me about the {i}th ship in the harbor, please.<|im_end|>\n"
        f"<|im_start|>assistant\nMira: The {i}th ship came in at dawn with salt and rope; its mate owes me {i} silver.<|im_end|>\n"
    )


def note(i: int) -> str:
    return f"<|im_start|>system\nLore {i}: " + " ".join(f"the {i}-{j} tide rises over stone {j}." for j in range(14)) + "<|im_end|>\n"


def run(engine: LocalEngine, prompt: str, tokens: int) -> Finished:
    final = None
    req = GenerationRequest(prompt=prompt, max_tokens=tokens, sampler=SamplerSettings(greedy=True), stop=["<|im_end|>"])
    for ev in engine.generate(req):
        if isinstance(ev, Finished):
            final = ev
    assert final is not None and final.error is None, final and final.error
    return final


def round_tps(engine: LocalEngine, ctx: int, tokens: int) -> tuple[float, int]:
    """Eight turns at a 70% full window, each with another note among the messages (the ones
    before go to the bank when it is on), then a reply with no note."""
    n_msgs = 1
    while len(engine.tokenize(SYSTEM + "".join(exchange(i) for i in range(n_msgs + 1)) + TAIL)) < ctx * 0.7:
        n_msgs += 1
    plain = SYSTEM + "".join(exchange(i) for i in range(n_msgs)) + TAIL
    for k in range(8):  # a note of ~120 tokens comes and goes each turn, as lore does
        parts = [exchange(i) for i in range(n_msgs)]
        parts.insert((k + 1) * n_msgs // 10, note(k))
        run(engine, SYSTEM + "".join(parts) + TAIL, 1)
    final = run(engine, plain, tokens)
    held = engine.bank.cells if engine.bank is not None else 0
    engine._kv.clear(0)  # type: ignore[union-attr]  # next round starts cold
    if engine.bank is not None:
        engine.bank.clear()
    return final.stats.gen_tps, held


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ctx", type=int, default=1024)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    on = LocalEngine(default_model_path(), n_ctx=args.ctx, n_threads=args.threads, cache_ram_mib=0)
    off = LocalEngine(default_model_path(), n_ctx=args.ctx, n_threads=args.threads, cache_ram_mib=0, bank_cells=0)
    on.load()
    off.load()
    with_bank, without, held = [], [], []
    for _ in range(args.rounds):
        tps, cells = round_tps(on, args.ctx, args.tokens)
        with_bank.append(tps)
        held.append(cells)
        without.append(round_tps(off, args.ctx, args.tokens)[0])
    a, b = statistics.median(with_bank), statistics.median(without)
    print(
        f"generation at a 70% full window of {args.ctx}, {args.tokens} tokens, median of {args.rounds}: "
        f"bank holding {statistics.median(held):.0f} cells {a:.1f} tok/s ({100 * a / b:.0f}%) | bank off {b:.1f} tok/s"
    )


if __name__ == "__main__":
    main()
