"""HTTP requests that assembling one prompt costs on a remote backend, and how long it takes.

A 200-message chat with the bundled Mira card, through a connection profile to a real server on
127.0.0.1. Turn 1 assembles the prompt from a fresh process; turn 2 after two more messages.
Baseline (same run, same server): the counter asks the server about each piece on its own, one
round trip after another (Tavern before batching). Batched: the assembler hands the pieces to
`RemoteEngine.count_tokens_many` first (one /tokenize on llama-server, one concurrent batch on
servers that count one text per request).

    python benchmarks/bench_remote_counting.py [--native]   # --native: llama-server too (built
                                                            # by benchmarks/build_llama_server.sh)
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tavern.backends import BackendStore  # noqa: E402
from tavern.engines.models import default_model_path  # noqa: E402
from tavern.prompt.token_counter import TokenCounter  # noqa: E402
from tavern.session import Tavern  # noqa: E402
from tavern.store import ChatMessage  # noqa: E402

LINES = [
    "The lanterns along the quay swing in the wind, and the harbourmaster counts the ships twice.",
    "She laughs, tucks a strand of hair behind her ear, and points at the map of the old city.",
    "Rain drums on the tin roof of the tavern; somewhere a dog barks at the tide.",
    "I tell her about the lighthouse keeper who vanished, and the letters he left behind.",
]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd: list[str], url: str, probe: str) -> subprocess.Popen:
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(900):
        if proc.poll() is not None:
            raise SystemExit(f"server exited: {' '.join(cmd[:3])}")
        try:
            if httpx.get(url + probe, timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise SystemExit("server did not start")


def measure(home: Path, api: str, url: str, batched: bool) -> list[tuple[int, float]]:
    """(requests, seconds) of turn 1 and turn 2 from a fresh Tavern."""
    BackendStore(home).add("srv", api, url)
    app = Tavern.open(home, **{"memory.enabled": False})  # counting alone, no background index
    app.backend_override = "srv"
    session = app.open_chat("Mira", chat_name=None)
    engine = app.load_engine()
    app.prompt_format()
    if not batched:
        app._counter = TokenCounter(engine.count_tokens)  # one request per piece, as before
    out = []
    for turn in range(2):
        if turn:
            session.chat.append(ChatMessage(name="User", is_user=True, mes="And the second letter?"))
            session.chat.append(ChatMessage(name="Mira", is_user=False, mes=LINES[turn] + " (turn 2)"))
        before = engine.http_requests
        t0 = time.perf_counter()
        session.build_prompt()
        out.append((engine.http_requests - before, time.perf_counter() - t0))
    app.engines.drop()
    return out


def seed_home(home: Path) -> None:
    app = Tavern.open(home)
    session = app.open_chat("Mira", new=True)
    for i in range(200):
        user = i % 2 == 0
        session.chat.append(ChatMessage(name="User" if user else "Mira", is_user=user,
                                        mes=f"{LINES[i % 4]} ({i})"))


def run(label: str, api: str, url: str) -> None:
    rows = {}
    for batched in (False, True):
        with tempfile.TemporaryDirectory() as tmp:
            home = Path(tmp)
            seed_home(home)
            rows[batched] = measure(home, api, url, batched)
    (b1, bt1), (b2, bt2) = rows[False]
    (a1, at1), (a2, at2) = rows[True]
    print(f"{label}: turn 1 {a1} requests in {at1 * 1000:.0f} ms (baseline, one per piece: {b1} in "
          f"{bt1 * 1000:.0f} ms); turn 2 {a2} requests (baseline {b2})")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--native", action="store_true", help="also llama-server (benchmarks/build_llama_server.sh)")
    args = ap.parse_args()
    model = str(default_model_path())
    threads = str(os.cpu_count() or 2)
    port = _port()
    url = f"http://127.0.0.1:{port}"
    proc = start([sys.executable, "-m", "llama_cpp.server", "--model", model, "--host", "127.0.0.1",
                  "--port", str(port), "--n_ctx", "2048", "--n_threads", threads], url, "/v1/models")
    try:
        run("llama_cpp.server, openai-chat (counts one text per request)", "openai-chat", url)
    finally:
        proc.terminate()
        proc.wait(10)
    if args.native:
        binary = subprocess.run(["bash", str(Path(__file__).with_name("build_llama_server.sh"))],
                                capture_output=True, text=True, check=True,
                                env={**os.environ, "PYTHON": sys.executable}).stdout.strip()
        port = _port()
        url = f"http://127.0.0.1:{port}"
        proc = start([binary, "-m", model, "--host", "127.0.0.1", "--port", str(port), "-c", "2048",
                      "-np", "1", "-t", threads], url, "/health")
        try:
            run("llama-server, llamacpp (/tokenize of the pieces joined)", "llamacpp", url)
        finally:
            proc.send_signal(signal.SIGINT)  # its clean shutdown (SIGTERM aborts with a backtrace)
            proc.wait(10)


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
