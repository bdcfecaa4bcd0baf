"""A long roleplay that overflows the context many times: Tavern's engine against a naive one.

Both sides use Tavern's real assembler (system prompt and card kept, oldest messages dropped
newest-first to the budget) and the same llama.cpp engine on the bundled SmolLM2; the only
difference is the KV cache: Tavern shifts it (cache reuse), the naive side reuses only the
common prefix, as `Llama.create_completion` and a naive frontend do. Greedy sampling, so both
sides see the same conversation as long as their replies agree.

    python benchmarks/bench_context_shift.py [--turns 300] [--ctx 2048] [--reply 48]

Prints, per side: total prompt tokens evaluated, total prompt-evaluation seconds, the share of
turns after the first with >= 90% of the prompt served from the cache, and the ratio.
"""

from __future__ import annotations

import argparse
import statistics
import time

from tavern.engines.base import Finished, GenerationRequest
from tavern.engines.local import LocalEngine
from tavern.engines.models import default_model_path
from tavern.engines.samplers import SamplerSettings
from tavern.prompt.assemble import CardFields, HistoryMessage, PromptInputs, TokenCounter, assemble_prompt
from tavern.prompt.templates import get_format

USER_LINES = [
    "Good evening! Is there a room free tonight?",
    "What's the best thing on the menu?",
    "Tell me about the ship with green sails.",
    "Who is that old sailor in the corner?",
    "I heard there's a storm coming. Is it true?",
    "Can you tell me a story about Saltmere?",
    "How long have you run this inn?",
    "What do the fishermen talk about these days?",
    "Is the harbor master a fair man?",
    "I'll have another cider, please.",
    "Have you ever left Saltmere?",
    "What's behind the locked door upstairs?",
]

CARD = CardFields(
    name="Mira",
    description=(
        "Mira is the cheerful keeper of the Rusty Lantern, an inn on the harbor of Saltmere. She is in her "
        "thirties, freckled, with a red scarf. She knows every sailor's name and every rumor on the docks."
    ),
    personality="warm, curious, quick to laugh, a little nosy",
    scenario="User has just stepped into the Rusty Lantern out of the rain.",
)


def run_side(engine: LocalEngine, turns: int, ctx: int, reply: int) -> list:
    fmt = get_format("chatml")
    count = TokenCounter(engine.count_tokens)
    history: list[HistoryMessage] = [
        HistoryMessage("Mira", "Come in, you're dripping all over my floor!", False, index=0)
    ]
    stats = []
    sampler = SamplerSettings(greedy=True)
    for t in range(turns):
        history.append(
            HistoryMessage("User", USER_LINES[t % len(USER_LINES)] + f" ({t})", True, index=len(history))
        )
        inputs = PromptInputs(
            card=CARD, user_name="User", history=history, system_prompt="Write Mira's next reply."
        )
        prompt = assemble_prompt(inputs, fmt, count, ctx, reply)
        req = GenerationRequest(
            prompt=prompt.text, max_tokens=reply, stop=prompt.stop, sampler=sampler, add_bos=prompt.add_bos
        )
        final = None
        for ev in engine.generate(req):
            if isinstance(ev, Finished):
                final = ev
        assert final is not None and final.error is None, final and final.error
        stats.append(final.stats)
        history.append(HistoryMessage("Mira", final.text.strip() or "...", False, index=len(history)))
    return stats


def summarize(name: str, stats: list) -> dict:
    after_first = stats[1:]
    served = [s.cached_tokens / s.prompt_tokens for s in after_first]
    good = sum(1 for x in served if x >= 0.9)
    return {
        "name": name,
        "evaluated": sum(s.evaluated_tokens for s in stats),
        "prompt_s": sum(s.prompt_ms for s in stats) / 1000,
        "median_turn_s": statistics.median(s.total_ms for s in stats) / 1000,
        "good_share": good / max(1, len(after_first)),
        "prompt_tokens": sum(s.prompt_tokens for s in stats),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--turns", type=int, default=300)
    ap.add_argument("--ctx", type=int, default=2048)
    ap.add_argument("--reply", type=int, default=48)
    args = ap.parse_args()
    path = default_model_path()
    results = []
    for name, reuse in (("tavern (context shift)", 32), ("naive (prefix cache only)", 0)):
        engine = LocalEngine(path, n_ctx=args.ctx, cache_reuse=reuse)
        engine.load()
        t0 = time.perf_counter()
        stats = run_side(engine, args.turns, args.ctx, args.reply)
        engine.unload()
        r = summarize(name, stats)
        r["wall_s"] = time.perf_counter() - t0
        full = [s for s in stats if s.prompt_tokens > (args.ctx - args.reply) * 0.8]
        short = stats[:10]
        r["full_window_turns"] = len(full)
        r["short_median_s"] = statistics.median(s.total_ms for s in short) / 1000
        r["full_median_s"] = statistics.median(s.total_ms for s in full) / 1000 if full else float("nan")
        results.append(r)
        print(
            f"{name:28s} turns {args.turns}  evaluated {r['evaluated']:>7} of {r['prompt_tokens']} prompt tokens  "
            f"prompt eval {r['prompt_s']:7.1f} s  median turn {r['median_turn_s']:.2f} s  "
            f">=90% cached on {100 * r['good_share']:.1f}% of turns after the first  "
            f"(turns at a near-full window: {r['full_window_turns']}; median turn there "
            f"{r['full_median_s']:.2f} s vs {r['short_median_s']:.2f} s in the first 10 turns)",
            flush=True,
        )
    t, n = results
    print(
        f"ratio: naive evaluated {n['evaluated'] / max(1, t['evaluated']):.1f}x more prompt tokens, "
        f"spent {n['prompt_s'] / max(1e-9, t['prompt_s']):.1f}x more time on prompt evaluation"
    )


if __name__ == "__main__":
    main()
