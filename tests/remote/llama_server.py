"""The real servers the remote tests talk to: `python -m llama_cpp.server` with the bundled
model (the `llama_server` fixture), and llama.cpp's own llama-server where
benchmarks/build_llama_server.sh has built it (`native_llama_server`); tests/remote/conftest.py
offers both to every test module here."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def llama_server(model_path, tmp_path_factory):
    pytest.importorskip("llama_cpp.server.app", reason="llama-cpp-python[server] not installed")
    port = _free_port()
    log = tmp_path_factory.mktemp("srv") / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "llama_cpp.server", "--model", str(model_path), "--host", "127.0.0.1",
             "--port", str(port), "--n_ctx", "2048", "--n_threads", str(os.cpu_count() or 2)],
            stdout=out, stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):  # loading the model takes about a second; allow for a busy machine
            if proc.poll() is not None:
                pytest.fail(f"llama_cpp.server exited: {log.read_text()[-500:]}")
            try:
                if httpx.get(url + "/v1/models", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()




def native_server_binary() -> Path | None:
    """llama-server built from the llama.cpp that llama-cpp-python vendors, where present."""
    import importlib.metadata as md

    env = os.environ.get("TAVERN_LLAMA_SERVER")
    if env:
        return Path(env) if Path(env).is_file() else None
    root = Path(os.environ.get("TAVERN_BENCH_CACHE", Path.home() / ".cache" / "tavern-bench"))
    binary = root / md.version("llama-cpp-python") / "build" / "bin" / "llama-server"
    return binary if binary.is_file() else None


@pytest.fixture(scope="session")
def native_llama_server(model_path, tmp_path_factory):
    binary = native_server_binary()
    if binary is None:
        pytest.skip("llama-server is not built (benchmarks/build_llama_server.sh builds it; ~10+ min on 2 cores, "
                    "so CI does not) and TAVERN_LLAMA_SERVER does not name one")
    port = _free_port()
    log = tmp_path_factory.mktemp("native") / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(binary), "-m", str(model_path), "--host", "127.0.0.1", "--port", str(port), "-c", "2048",
             "-t", str(os.cpu_count() or 2), "--no-webui"],
            stdout=out, stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            if proc.poll() is not None:
                pytest.fail(f"llama-server exited: {log.read_text()[-500:]}")
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        yield url
    finally:
        proc.send_signal(signal.SIGINT)  # its clean shutdown (SIGTERM aborts with a backtrace)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
