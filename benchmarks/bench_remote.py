"""Streamed tokens/s through Tavern's RemoteEngine vs a bare httpx SSE read of the same request.

Starts `python -m llama_cpp.server` on the bundled SmolLM2 on 127.0.0.1, then alternates the two
clients on the same greedy text-completion request (same server, same run), and prints both
rates. Goal: Tavern at >= 97% of the bare read.

    python benchmarks/bench_remote.py [--rounds 3] [--tokens 128]
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import time

import httpx

from tavern.backends import Profile
from tavern.engines.base import GenerationRequest, Token
from tavern.engines.models import default_model_path
from tavern.engines.remote.engine import RemoteEngine
from tavern.engines.samplers import SamplerSettings

PROMPT = "<|im_start|>user\nTell me a long story about a lighthouse keeper.<|im_end|>\n<|im_start|>assistant\n"


def bare(url: str, n: int) -> float:
    body = {"prompt": PROMPT, "max_tokens": n, "stream": True, "temperature": 0.0, "seed": 1}
    got, t_first = 0, None
    with httpx.Client(timeout=300) as c, c.stream("POST", url + "/v1/completions", json=body) as r:
        for line in r.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                if json.loads(line[6:])["choices"][0].get("text"):
                    got += 1
                    t_first = t_first or time.perf_counter()
    return (got - 1) / (time.perf_counter() - t_first)


def tavern(engine: RemoteEngine, n: int) -> float:
    req = GenerationRequest(prompt=PROMPT, max_tokens=n, sampler=SamplerSettings(temperature=0.0, seed=1))
    got, t_first = 0, None
    for ev in engine.generate(req):
        if isinstance(ev, Token):
            got += 1
            t_first = t_first or time.perf_counter()
    return (got - 1) / (time.perf_counter() - t_first)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=128)
    a = ap.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", str(default_model_path()),
                             "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "1024"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                httpx.get(url + "/v1/models", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        engine = RemoteEngine(Profile(name="bench", api="openai-text", url=url))
        engine.load()
        bare(url, 8)  # warm the server's prompt cache for both
        ours, base = [], []
        for _ in range(a.rounds):
            base.append(bare(url, a.tokens))
            ours.append(tavern(engine, a.tokens))
        o, b = statistics.median(ours), statistics.median(base)
        print(f"tavern RemoteEngine: {o:.1f} tok/s   bare httpx SSE: {b:.1f} tok/s   ratio {o / b:.1%}"
              f"   ({a.rounds} rounds of {a.tokens} tokens)")
    finally:
        proc.terminate()
        proc.wait(10)


if __name__ == "__main__":
    main()
