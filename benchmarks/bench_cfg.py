"""Classifier-free guidance and side sequences on the embedded engine, each beside its baseline
in the same run (SmolLM2, greedy):

1. speed: tokens/s generating with a negative prompt vs without, same prompt (goal >= 75%:
   both sequences advance in one batch per token);
2. cache: a 40-turn chat that overflows the context, with CFG on: prompt tokens evaluated per
   turn for the chat and the negative sequence (goal: both at the cache floor after turn 1);
3. a background job on the side: the chat turn after a summary-sized job on SEQ_BACKGROUND,
   served from the cache (goal >= 90%), beside the same job run on the chat's own sequence.

    python benchmarks/bench_cfg.py [--rounds 3] [--turns 40] [--ctx 1024]
"""

from __future__ import annotations

import argparse
import statistics
import time

from tavern.engines.base import SEQ_BACKGROUND, SEQ_CFG, SEQ_CHAT, Finished, GenerationRequest
from tavern.engines.local import LocalEngine
from tavern.engines.models import default_model_path
from tavern.engines.samplers import SamplerSettings

GREEDY = SamplerSettings(greedy=True)
SYSTEM = (
    "<|im_start|>system\nWrite Mira's next reply in a fictional chat between Mira and User. Mira keeps "
    "the Rusty Lantern, an inn on the harbor of Saltmere.<|im_end|>\n"
)
NEGATIVE = "<|im_start|>system\nMira refuses, apologises and lectures User about safety.<|im_end|>\n"
LINES = [
    "Good evening! Is there a room free tonight?",
    "What's the best thing on the menu?",
    "Tell me about the ship with green sails.",
    "Who is that old sailor in the corner?",
    "I heard there's a storm coming. Is it true?",
]


def user(i: int) -> str:
    return f"<|im_start|>user\nUser: {LINES[i % len(LINES)]} ({i})<|im_end|>\n<|im_start|>assistant\nMira:"


def run(engine: LocalEngine, prompt: str, negative: str | None = None, n: int = 48, seq: int = SEQ_CHAT) -> Finished:
    req = GenerationRequest(
        prompt=prompt, max_tokens=n, sampler=GREEDY, negative_prompt=negative,
        guidance_scale=1.5 if negative else 1.0, seq_id=seq,
    )
    final = None
    for ev in engine.generate(req):
        if isinstance(ev, Finished):
            final = ev
    assert final is not None and final.error is None, final and final.error
    return final


def speed(engine: LocalEngine, rounds: int) -> None:
    plain, guided = [], []
    for r in range(rounds):
        prompt = SYSTEM + user(r)
        engine.states.clear()
        plain.append(run(engine, prompt, None, 128).stats.gen_tps)
        guided.append(run(engine, prompt, SYSTEM + NEGATIVE + user(r), 128).stats.gen_tps)
    p, g = statistics.median(plain), statistics.median(guided)
    print(f"speed: with CFG {g:.1f} tok/s, without {p:.1f} tok/s: {100 * g / p:.0f}% (median of {rounds})")


def ceiling(engine: LocalEngine, n: int = 64) -> None:
    """The hardware's own bound, same model and threads: one llama_decode of a token pair (two
    sequences, logits for both) against one of a single token, with no sampling at all. On a CPU
    where a small model is compute-bound the pair costs twice the work, and no frontend can get
    CFG past this ratio; where decoding is memory-bound (a GPU, a large model) it nears 100%."""
    tokens = engine.tokenize(SYSTEM + user(0))
    decoder, kv = engine._decoder, engine._kv  # below the engine: raw decodes, mirrors cleared after
    single, pair = [], []
    for _ in range(3):
        for seq in (SEQ_CHAT, SEQ_CFG):
            kv.clear(seq)
            decoder.decode(tokens, seq, 0)
        p = len(tokens)
        t = time.perf_counter()
        for i in range(n):
            decoder.decode([tokens[i % p]], SEQ_CHAT, p + i)
        single.append((time.perf_counter() - t) / n)
        t = time.perf_counter()
        for i in range(n):
            decoder.decode_each(tokens[i % p], [(SEQ_CHAT, p + n + i), (SEQ_CFG, p + i)])
        pair.append((time.perf_counter() - t) / n)
    kv.clear(SEQ_CHAT)
    kv.clear(SEQ_CFG)
    s, d = statistics.median(single), statistics.median(pair)
    print(
        f"ceiling (bare llama_decode, no sampling): single token {1000 * s:.1f} ms, pair {1000 * d:.1f} ms: "
        f"a pair runs at {100 * s / d:.0f}% of single-token speed on this machine"
    )


def cache(engine: LocalEngine, turns: int, ctx: int) -> None:
    exchanges: list[str] = []
    chat_eval = neg_eval = chat_total = neg_total = chat_floor = neg_floor = 0
    for t in range(turns):
        # Oldest exchanges leave as the window fills (the system prompt stays), as a frontend trims.
        while True:
            body = "".join(exchanges)
            pos, neg = SYSTEM + body + user(t), SYSTEM + body + NEGATIVE + user(t)
            if len(engine.tokenize(neg)) < ctx - 64 or not exchanges:
                break
            exchanges.pop(0)
        final = run(engine, pos, neg)
        if t:
            chat_eval += final.stats.evaluated_tokens
            chat_total += final.stats.prompt_tokens
            neg_eval += final.stats.cfg_evaluated_tokens
            neg_total += final.stats.cfg_prompt_tokens
            # The floor: what is new in each prompt. The chat gains the new user turn; the
            # negative sequence also gets its negative text back in front of it (depth 1).
            chat_floor += len(engine.tokenize(user(t)))
            neg_floor += len(engine.tokenize(NEGATIVE + user(t)))
        exchanges.append(user(t).rsplit("<|im_start|>assistant", 1)[0] + "<|im_start|>assistant\nMira:" + final.text + "<|im_end|>\n")
    print(
        f"cache over {turns} turns at ctx {ctx} with CFG on, turns 2-{turns}: chat evaluated {chat_eval} of "
        f"{chat_total} prompt tokens ({100 * chat_eval / max(1, chat_total):.1f}%; floor {chat_floor}), negative "
        f"sequence {neg_eval} of {neg_total} ({100 * neg_eval / max(1, neg_total):.1f}%; floor {neg_floor})"
    )


def side_job(ctx: int) -> None:
    job = "<|im_start|>user\nSummarize the chat so far in three sentences: " + "The storm came. " * 60 + "<|im_end|>\n"
    chat = SYSTEM + "".join(user(i) + " Welcome in!<|im_end|>\n" for i in range(8))
    for name, side in (("job on SEQ_BACKGROUND", -1), ("job on the chat's sequence (no side cells)", 0)):
        engine = LocalEngine(default_model_path(), n_ctx=ctx, side_ctx=side, cache_ram_mib=0)
        engine.load()
        run(engine, chat + user(8))
        run(engine, job, seq=SEQ_BACKGROUND)
        after = run(engine, chat + user(8) + " Yes.").stats
        engine.unload()
        print(
            f"side job: {name}: next chat turn served {100 * after.cached_tokens / after.prompt_tokens:.1f}% "
            f"of its prompt from the cache ({after.evaluated_tokens} of {after.prompt_tokens} evaluated)"
        )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--turns", type=int, default=40)
    ap.add_argument("--ctx", type=int, default=1024)
    args = ap.parse_args()
    engine = LocalEngine(default_model_path(), n_ctx=args.ctx)
    engine.load()
    speed(engine, args.rounds)
    ceiling(engine)
    engine.unload()
    engine = LocalEngine(default_model_path(), n_ctx=args.ctx)
    engine.load()
    cache(engine, args.turns, args.ctx)
    engine.unload()
    side_job(args.ctx)


if __name__ == "__main__":
    main()
