"""Generation speed through Tavern's engine against bare llama-cpp-python on the same prompt.

    python benchmarks/bench_generation.py [--tokens 200] [--rounds 3]

Both sides load the bundled SmolLM2 with the same context and threads, use the same prompt and
the same sampler settings (temperature 0.7, top-k 40, top-p 0.95, min-p 0.05, fixed seed), and
generate the same number of tokens (EOS banned by a stop-free long prompt; counts printed).
Rounds alternate sides so machine noise hits both; medians are printed with the ratio.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

PROMPT = (
    "<|im_start|>system\nYou are a storyteller.<|im_end|>\n<|im_start|>user\n"
    "Tell a very long story about a harbor town, its inn and the ships that come and go.<|im_end|>\n"
    "<|im_start|>assistant\n"
)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()

    import llama_cpp

    from tavern.engines.base import Finished, GenerationRequest
    from tavern.engines.local import LocalEngine
    from tavern.engines.models import default_model_path
    from tavern.engines.samplers import SamplerSettings

    path = str(default_model_path())
    threads = os.cpu_count() or 1
    bare = llama_cpp.Llama(path, n_ctx=2048, n_threads=threads, n_threads_batch=threads, verbose=False)
    ours = LocalEngine(path, n_ctx=2048)
    ours.load()
    bias = {bare.token_eos(): -1e9}  # both sides generate exactly --tokens tokens
    settings = SamplerSettings(temperature=0.7, top_k=40, top_p=0.95, min_p=0.05, seed=1234, logit_bias=bias)

    def run_bare() -> tuple[int, float]:
        bare.reset()  # no prompt cache on either side: same work
        t0 = None
        n = 0
        for _chunk in bare.create_completion(
            PROMPT,
            max_tokens=args.tokens,
            temperature=0.7,
            top_k=40,
            top_p=0.95,
            min_p=0.05,
            repeat_penalty=1.0,
            seed=1234,
            stream=True,
            logit_bias=bias,
        ):
            if t0 is None:
                t0 = time.perf_counter()
            n += 1
        return n, (n - 1) / (time.perf_counter() - t0)

    def run_ours() -> tuple[int, float]:
        ours.unload()
        ours.load()  # fresh cache, same as bare.reset()
        t0 = None
        n = 0
        for ev in ours.generate(GenerationRequest(PROMPT, max_tokens=args.tokens, sampler=settings)):
            if isinstance(ev, Finished):
                break
            if t0 is None:
                t0 = time.perf_counter()
            n += 1
        return ev.stats.gen_tokens, (ev.stats.gen_tokens - 1) / (time.perf_counter() - t0)

    bare_tps, our_tps = [], []
    for r in range(args.rounds):
        for name, fn, acc in (("bare", run_bare, bare_tps), ("tavern", run_ours, our_tps)):
            n, tps = fn()
            acc.append(tps)
            print(f"round {r + 1} {name:7s} {n} tokens  {tps:6.1f} tok/s", flush=True)
    b, o = statistics.median(bare_tps), statistics.median(our_tps)
    print(f"bare llama-cpp-python create_completion: {b:.1f} tok/s (median)")
    print(f"tavern LocalEngine.generate:             {o:.1f} tok/s (median)")
    print(f"ratio: {100 * o / b:.1f}% of bare")


if __name__ == "__main__":
    main()
