"""End to end in a real terminal: `tavern` in tmux at 80x24, a message typed, the streamed
reply read back from the pane. Also the app served to a browser's websocket by `tavern serve`."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from e2e.tmux_driver import Tmux

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux not installed")


def _reply_done(status: str) -> bool:
    return "tok/s" in status and "reading prompt" not in status and "writing" not in status


def test_chat_in_tmux_at_80x24(home: Path) -> None:
    (home).mkdir(parents=True, exist_ok=True)
    (home / "settings.toml").write_text(
        "[model]\nn_ctx = 1024\n[generation]\nmax_tokens = 24\nseed = 7\n", encoding="utf-8"
    )
    env = {"TAVERN_HOME": str(home), "TAVERN_GRAPHICS": "0", "PYTHONPATH": os.getcwd()}
    with Tmux(80, 24) as tmux:
        tmux.start([sys.executable, "-m", "tavern"], env)
        tmux.wait_for(lambda s: "2 characters" in s)
        tmux.keys("Mira", literal=True)  # typing searches
        tmux.wait_for(lambda s: "1 of 2 characters" in s)
        tmux.keys("Enter")
        tmux.wait_for(lambda s: "Message Mira" in s)  # the composer's placeholder
        # The model loads in the background: wait for its name in the status bar.
        tmux.wait_for(lambda s: "SmolLM2" in s.splitlines()[0] or "smollm" in s.lower().splitlines()[0], 120)
        tmux.keys("Hello there!", literal=True)
        tmux.keys("Enter")
        # Done when the status bar shows the reply's figures: "tok/s" also shows while the prompt
        # is read ("reading prompt 800/1908 · 178 tok/s"), and "writing…" while it streams.
        screen = tmux.wait_for(lambda s: _reply_done(s.splitlines()[0]), 120)
        chat = next((home / "chats" / "Mira").glob("*.jsonl"))
        lines = [json.loads(x) for x in chat.read_text().splitlines()]
        assert lines[-2]["mes"] == "Hello there!"
        reply = lines[-1]["mes"]
        # The reply as the pane shows it (wrapped at 80 columns, Markdown markers removed).
        words = [w.strip('*"_`') for w in reply.split()][:3]
        flat = " ".join(screen.split())
        assert all(w in flat for w in words if w), (words, screen)
        assert "Hello there!" in flat
        tmux.keys("C-q")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_tavern_serve_runs_the_app_over_a_websocket(home: Path) -> None:
    pytest.importorskip("textual_serve")
    import aiohttp

    port = _free_port()
    # a known password instead of the random token: `tavern serve` answers nothing without it
    env = {**os.environ, "TAVERN_HOME": str(home), "PYTHONPATH": os.getcwd(), "TAVERN_SERVE_PASSWORD": "pw"}
    server = subprocess.Popen(
        [sys.executable, "-m", "tavern", "--model", str(home / "none.gguf"), "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    async def session() -> str:
        async with aiohttp.ClientSession() as http:
            for _ in range(200):
                try:
                    async with http.get(f"http://127.0.0.1:{port}/?token=pw") as page:
                        html = await page.text()
                        break
                except aiohttp.ClientError:
                    await asyncio.sleep(0.1)
            else:
                raise AssertionError("tavern serve never answered")
            assert "Tavern" in html
            seen = b""
            async with http.ws_connect(f"http://127.0.0.1:{port}/ws?token=pw&width=80&height=24") as ws:
                await ws.send_json(["resize", {"width": 80, "height": 24}])
                end = time.monotonic() + 60
                while b"characters" not in seen and time.monotonic() < end:
                    msg = await ws.receive(timeout=60)
                    if msg.type == aiohttp.WSMsgType.BINARY:
                        seen += msg.data
                    elif msg.type == aiohttp.WSMsgType.TEXT:
                        seen += msg.data.encode()
                    else:
                        break
                await ws.send_json(["stdin", "\x11"])  # Ctrl+Q
            return seen.decode("utf-8", "replace")

    try:
        out = asyncio.run(session())
    finally:
        server.terminate()
        server.wait(10)
    assert "characters" in out and "Mira" in out
