"""The very prompts Tavern built, replayed through Tavern's engine and through a real llama-server
(built from the llama.cpp that the installed llama-cpp-python vendors), same model, same context,
one token generated per prompt: how many prompt tokens each evaluates.

    python benchmarks/bench_context_shift.py --workload mira --turns 40 --ctx 1024 --save-prompts p.json
    python benchmarks/bench_llama_server.py --prompts p.json [--server PATH] [--cache-reuse 64]

The server is started on 127.0.0.1 with one slot, `--cache-reuse N` and its default host-memory
prompt cache; `benchmarks/build_llama_server.sh` builds it when --server is not given (~4 min).
Counts are turns 2..N (the first turn evaluates everything on both sides).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tavern.engines.base import Finished, GenerationRequest
from tavern.engines.local import LocalEngine
from tavern.engines.models import default_model_path
from tavern.engines.samplers import SamplerSettings

HERE = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tavern_counts(prompts: list[str], ctx: int, insert_reuse: bool = True, threads: int = 0) -> list[int]:
    # Tavern's engine as it ships: side cells beside the window, and in them the bank of removed
    # text (with llama-server's walk there is no bank: it serves inserted text only).
    engine = LocalEngine(default_model_path(), n_ctx=ctx, cache_reuse=32, insert_reuse=insert_reuse, n_threads=threads)
    engine.load()
    out = []
    try:
        for text in prompts:
            final = None
            for ev in engine.generate(GenerationRequest(prompt=text, max_tokens=1, sampler=SamplerSettings(greedy=True))):
                if isinstance(ev, Finished):
                    final = ev
            assert final is not None and final.error is None, final and final.error
            out.append(final.stats.evaluated_tokens)
    finally:
        engine.unload()
    return out


def server_counts(binary: str, prompts: list[str], ctx: int, cache_reuse: int, threads: int = 0) -> list[int]:
    port = free_port()
    cmd = [
        binary, "-m", str(default_model_path()), "-c", str(ctx), "-np", "1", "--host", "127.0.0.1",
        "--port", str(port), "-t", str(threads or os.cpu_count() or 1), "--cache-reuse", str(cache_reuse),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(timeout=600) as client:
            for _ in range(300):
                try:
                    if client.get(f"{base}/health").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.2)
            else:
                raise SystemExit("llama-server did not come up")
            out = []
            for text in prompts:
                r = client.post(
                    f"{base}/completion",
                    json={"prompt": text, "n_predict": 1, "cache_prompt": True, "temperature": 0},
                )
                r.raise_for_status()
                out.append(int(r.json()["timings"]["prompt_n"]))
            return out
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", required=True)
    ap.add_argument("--server", default="")
    ap.add_argument("--cache-reuse", type=int, default=64)
    ap.add_argument("--no-server", action="store_true", help="only Tavern's engine, both walks")
    ap.add_argument("--threads", type=int, default=0, help="threads for both engines (0: all cores)")
    args = ap.parse_args()
    data = json.loads(Path(args.prompts).read_text(encoding="utf-8"))
    ctx = int(data["ctx"])
    binary = "" if args.no_server else args.server or subprocess.run(
        ["bash", str(HERE / "build_llama_server.sh")], env={**os.environ, "PYTHON": sys.executable},
        check=True, capture_output=True, text=True,
    ).stdout.strip().splitlines()[-1]
    tok = LocalEngine(default_model_path(), n_ctx=ctx)
    for layout, prompts in data["prompts"].items():
        total = sum(len(tok.tokenize(p)) for p in prompts[1:])
        ours = tavern_counts(prompts, ctx, threads=args.threads)[1:]
        walk = tavern_counts(prompts, ctx, insert_reuse=False, threads=args.threads)[1:]
        theirs = server_counts(binary, prompts, ctx, args.cache_reuse, args.threads)[1:] if binary else []

        def pct(xs: list[int], total: int = total) -> str:
            return f"{sum(xs):>6} ({100 * sum(xs) / max(1, total):.1f}%)"

        line = (
            f"{layout:15s} {len(prompts)} prompts, ctx {ctx}, {total} prompt tokens in turns 2-{len(prompts)}: "
            f"Tavern evaluated {pct(ours)}; same engine with llama-server's walk {pct(walk)}"
        )
        if theirs:
            line += (
                f"; llama-server --cache-reuse {args.cache_reuse} {pct(theirs)}; turns where Tavern "
                f"evaluated more: {sum(1 for a, b in zip(ours, theirs) if a > b)}"
            )
        print(line, flush=True)
    tok.unload()


if __name__ == "__main__":
    main()
