"""Recall through a real Chroma server (`chroma run`, shipped with chromadb) on 127.0.0.1."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tavern.store import ChatMessage

from .conftest import FACT, QUESTION, fill_chat, open_app


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def chroma_server(tmp_path: Path):
    exe = Path(sys.executable).parent / "chroma"
    exe = exe if exe.exists() else Path(shutil.which("chroma") or "chroma")
    port = _free_port()
    env = {**os.environ, "ANONYMIZED_TELEMETRY": "False"}
    proc = subprocess.Popen(
        [str(exe), "run", "--path", str(tmp_path / "chroma"), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):  # a loaded machine may take a while; the loop ends as soon as it answers
            if proc.poll() is not None:
                pytest.fail(f"chroma run exited with {proc.returncode}")
            try:
                with urllib.request.urlopen(f"{url}/api/v2/heartbeat", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.1)
        else:
            pytest.fail("chroma run never answered its heartbeat")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_recall_through_a_chroma_server(home: Path, shared_engine, chroma_server: str) -> None:
    app = open_app(home, shared_engine, **{"memory.chroma_url": chroma_server})
    session = app.open_chat("Mira", new=True)
    fact_index = fill_chat(session)
    session.chat.append(ChatMessage(name=session.user_name, is_user=True, mes=QUESTION))
    assert app.memory.wait_idle(300)
    assert app.memory.failed is None
    prompt = session.build_prompt()
    assert prompt.first_message_index > fact_index
    assert FACT in prompt.text
    # Nothing was written locally: the memory lives on the server.
    assert not any((home / "memory").iterdir())
