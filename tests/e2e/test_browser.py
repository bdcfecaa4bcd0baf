"""End to end in a browser: `tavern serve` opened in Debian's headless chromium (driven by
Playwright through /usr/bin/chromium; never a downloaded browser), a message typed, the
streamed reply read from the page's terminal.

textual-serve draws with xterm.js on a canvas, so the page has no text to query: the test
serves the page's script with one change, keeping a handle on the xterm `Terminal`, and reads
its screen buffer (what the canvas shows) line by line.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed")

TERMINAL_NEW = "this.terminal=new v.Terminal("
"""Where textual-serve's bundled script makes its xterm Terminal (checked below)."""

SCREEN_JS = """() => {
  const t = window.__tavernTerminal;
  if (!t) return "";
  const b = t.buffer.active, rows = [];
  for (let i = 0; i < t.rows; i++) { const l = b.getLine(b.viewportY + i); rows.push(l ? l.translateToString(true) : ""); }
  return rows.join("\\n");
}"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_chat_in_headless_chromium(home: Path, tmp_path: Path) -> None:
    pytest.importorskip("textual_serve")
    sync_api = pytest.importorskip("playwright.sync_api")
    (home / "settings.toml").write_text(
        "[model]\nn_ctx = 1024\n[generation]\nmax_tokens = 12\nseed = 7\n", encoding="utf-8"
    )
    port = _free_port()
    env = {**os.environ, "TAVERN_HOME": str(home), "TAVERN_GRAPHICS": "0", "PYTHONPATH": os.getcwd()}
    env.pop("TAVERN_SERVE_PASSWORD", None)  # the random token, read from the printed URL
    printed = tmp_path / "serve.out"
    with printed.open("wb") as sink:
        server = subprocess.Popen(
            [sys.executable, "-m", "tavern", "serve", "--port", str(port)],
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        url = _printed_url(printed, server)
        with sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch_persistent_context(
                str(tmp_path / "chromium-profile"),  # a fresh user-data dir
                executable_path=str(CHROMIUM),
                headless=True,
                args=[
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                ],
                viewport={"width": 1100, "height": 700},
            )
            try:
                _chat(browser, url, home)
            finally:
                browser.close()
    finally:
        server.terminate()
        server.wait(10)


def _printed_url(printed: Path, server: subprocess.Popen[bytes]) -> str:
    """The URL `tavern serve` prints, with its token: the page answers nothing else."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and server.poll() is None:
        found = re.search(r"Serving Tavern at (\S+)", printed.read_text("utf-8", "replace"))
        if found:
            assert "?token=" in found.group(1), found.group(1)
            return found.group(1)
        time.sleep(0.1)
    raise AssertionError(f"tavern serve printed no URL:\n{printed.read_text('utf-8', 'replace')}")


def _chat(browser: object, url: str, home: Path) -> None:
    page = browser.new_page()  # type: ignore[attr-defined]

    def keep_terminal(route: object) -> None:
        response = route.fetch()  # type: ignore[attr-defined]
        script = response.text()
        assert TERMINAL_NEW in script, "textual-serve's script changed: update TERMINAL_NEW"
        script = script.replace(TERMINAL_NEW, "this.terminal=window.__tavernTerminal=new v.Terminal(", 1)
        route.fulfill(response=response, body=script)  # type: ignore[attr-defined]

    page.route("**/textual.js", keep_terminal)
    page.route("https://fonts.googleapis.com/**", lambda route: route.abort())  # offline
    deadline = time.monotonic() + 30
    while True:  # the server takes a moment to listen
        try:
            page.goto(url)
            break
        except Exception:  # noqa: BLE001 - connection refused until it is up
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)

    def wait_for(check: Callable[[str], bool], timeout: float = 60) -> str:
        end = time.monotonic() + timeout
        screen = ""
        while time.monotonic() < end:
            screen = page.evaluate(SCREEN_JS)
            if check(screen):
                return screen
            page.wait_for_timeout(100)
        raise AssertionError(f"not seen in the page within {timeout} s:\n{screen}")

    wait_for(lambda s: "2 characters" in s)
    page.locator(".textual-terminal").click()
    page.keyboard.type("Mira")  # typing searches the library
    wait_for(lambda s: "1 of 2 characters" in s)
    page.keyboard.press("Enter")
    wait_for(lambda s: "Message Mira" in s)
    wait_for(lambda s: "smollm" in s.splitlines()[0].lower(), 120)  # the model is loaded
    page.keyboard.type("Hello there!")
    page.keyboard.press("Enter")
    # The reply has streamed when the status bar shows its figures ("tok/s" shows while the
    # prompt is read too, and "writing…" while the reply streams).
    screen = wait_for(lambda s: _reply_done(s.splitlines()[0]), 120)
    chat = next((home / "chats" / "Mira").glob("*.jsonl"))
    lines = [json.loads(x) for x in chat.read_text(encoding="utf-8").splitlines()]
    assert lines[-2]["mes"] == "Hello there!"
    words = [w.strip('*"_`') for w in lines[-1]["mes"].split()][:3]
    flat = " ".join(screen.split())
    assert "Hello there!" in flat
    assert all(w in flat for w in words if w), (words, screen)


def _reply_done(status: str) -> bool:
    return "tok/s" in status and "reading prompt" not in status and "writing" not in status
