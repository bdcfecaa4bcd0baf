"""`tavern serve` refuses what a foreign page or a stranger could send: the real server process
on 127.0.0.1, real HTTP and WebSocket clients (aiohttp).

A page on any site can open `ws://127.0.0.1:PORT/ws` with the user's browser; the server must
refuse a foreign `Origin` even with the right token, and anything without the run's token
(printed in the URL) or the `[serve]` password.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

pytest.importorskip("textual_serve")
import aiohttp  # installed with textual-serve

EVIL = "http://evil.example.com"
T = TypeVar("T")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Served:
    port: int
    url: str
    """The URL `tavern serve` printed."""
    proc: subprocess.Popen[bytes]
    out: Path
    """Its stdout and stderr."""

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def token(self) -> str:
        found = re.search(r"[?&]token=([^&\s]+)", self.url)
        assert found, self.url
        return found.group(1)


def _start(home: Path, tmp_path: Path, *extra: str, env: dict[str, str] | None = None) -> Served:
    port = _free_port()
    out = tmp_path / f"serve-{port}.out"
    with out.open("wb") as sink:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(
            [*_tavern(home), "serve", "--port", str(port), *extra],
            env={**_env(home), **(env or {})},
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    end = time.monotonic() + 60
    while time.monotonic() < end and proc.poll() is None and not _answers(port):
        time.sleep(0.1)
    if proc.poll() is not None or not _answers(port):
        proc.terminate()
        proc.wait(10)
        raise AssertionError(f"tavern serve never answered:\n{out.read_text()}")
    found = re.search(r"Serving Tavern at (\S+)", out.read_text("utf-8", "replace"))  # printed first
    return Served(port, found.group(1) if found else "", proc, out)


def _tavern(home: Path) -> list[str]:
    # A model file that does not exist: the app shows the library without loading llama.cpp
    # (these tests are about who may reach it, not about chatting).
    return [sys.executable, "-m", "tavern", "--model", str(home / "none.gguf")]


def _env(home: Path) -> dict[str, str]:
    env = {**os.environ, "TAVERN_HOME": str(home), "TAVERN_GRAPHICS": "0", "PYTHONPATH": os.getcwd()}
    env.pop("TAVERN_SERVE_PASSWORD", None)
    return env


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """An empty data home (the bundled characters are seeded into it); no model is loaded."""
    h = tmp_path / "home"
    h.mkdir()
    return h


@pytest.fixture
def served(home: Path, tmp_path: Path) -> Iterator[Served]:
    s = _start(home, tmp_path)
    yield s
    s.proc.terminate()
    s.proc.wait(10)


def _run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


async def _ws_status(url: str, **kwargs: object) -> int:
    """The status of a WebSocket handshake: 101 when it was accepted."""
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        return await _ws_status_in(http, url, **kwargs)


async def _ws_status_in(http: aiohttp.ClientSession, url: str, **kwargs: object) -> int:
    try:
        async with http.ws_connect(url, **kwargs) as ws:  # type: ignore[arg-type]
            await ws.close()
            return 101
    except aiohttp.WSServerHandshakeError as err:
        return err.status


async def _get(url: str, **kwargs: object) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http, http.get(url, allow_redirects=False, **kwargs) as r:  # type: ignore[arg-type]
        return r.status, await r.text()


def test_the_printed_url_holds_a_token(served: Served) -> None:
    assert served.url == f"http://127.0.0.1:{served.port}/?token={served.token}"
    assert len(served.token) >= 24
    printed = served.out.read_text("utf-8")
    assert printed.count("http://") == 1 and "textual-serve" not in printed.lower()  # one URL, ours
    status, page = _run(_get(served.url))
    assert status == 200 and f"ws://127.0.0.1:{served.port}/ws" in page


def test_no_token_is_refused_for_the_page_the_socket_and_the_files(served: Served) -> None:
    status, page = _run(_get(served.base + "/"))
    assert status == 401 and "/ws" not in page and "textual.js" not in page
    assert _run(_ws_status(served.base + "/ws?width=80&height=24")) == 403
    assert _run(_ws_status(served.base + "/ws", origin=served.base)) == 403
    status, body = _run(_get(served.base + "/static/js/textual.js"))
    assert status == 403 and body.startswith("tavern: forbidden") and body.count("\n") == 1


def test_a_wrong_token_or_cookie_is_refused(served: Served) -> None:
    status, body = _run(_get(served.base + "/?token=" + served.token[:-1] + "x"))
    assert status == 403 and body == "tavern: forbidden: wrong token\n"
    assert _run(_ws_status(served.base + "/ws?token=nope")) == 403
    forged = {"Cookie": f"tavern_session_{served.port}={served.token}"}  # the token is no session
    assert _run(_ws_status(served.base + "/ws", headers=forged)) == 403


def test_a_foreign_origin_is_refused_even_with_the_token(served: Served) -> None:
    async def check() -> None:
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
            assert await _ws_status_in(http, served.base + "/ws", origin=EVIL) == 403  # the reported hole
            async with http.get(served.url) as page:  # the cookie a real page would hold
                assert page.status == 200
            assert http.cookie_jar.filter_cookies(served.base)  # type: ignore[arg-type]
            assert await _ws_status_in(http, served.base + "/ws", origin=EVIL) == 403
            assert await _ws_status_in(http, f"{served.base}/ws?token={served.token}", origin=EVIL) == 403
            # a DNS-rebound name pointing at 127.0.0.1: Origin and Host agree, neither is loopback
            rebound = f"http://evil.example.com:{served.port}"
            headers = {"Host": f"evil.example.com:{served.port}"}
            assert await _ws_status_in(http, served.base + "/ws", origin=rebound, headers=headers) == 403
            # the accepted case, for contrast: the same cookie from the page's own origin
            assert await _ws_status_in(http, served.base + "/ws", origin=served.base) == 101

    _run(check())


def test_the_token_and_the_page_origin_get_the_app(served: Served) -> None:
    async def session() -> str:
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
            async with http.get(served.url) as page:
                assert page.status == 200 and "Tavern" in await page.text()
            async with http.get(served.base + "/static/js/textual.js") as script:  # the cookie suffices
                assert script.status == 200
            seen = b""
            async with http.ws_connect(served.base + "/ws?width=80&height=24", origin=served.base) as ws:
                await ws.send_json(["resize", {"width": 80, "height": 24}])
                end = time.monotonic() + 90
                while b"characters" not in seen and time.monotonic() < end:
                    msg = await ws.receive(timeout=90)
                    if msg.type == aiohttp.WSMsgType.BINARY:
                        seen += msg.data
                    elif msg.type != aiohttp.WSMsgType.TEXT:
                        break
                await ws.send_json(["stdin", "\x11"])  # Ctrl+Q
            return seen.decode("utf-8", "replace")

    assert "characters" in _run(session())


def test_localhost_is_the_same_loopback_server(served: Served) -> None:
    """Opened as localhost, the page's socket goes to localhost (where its cookie lives)."""
    local = f"http://localhost:{served.port}"
    status, page = _run(_get(f"{local}/?token={served.token}"))
    assert status == 200 and f"ws://localhost:{served.port}/ws" in page
    assert _run(_ws_status(f"{local}/ws?token={served.token}", origin=local)) == 101


def test_a_lan_host_without_a_password_is_refused(home: Path) -> None:
    done = subprocess.run(
        [*_tavern(home), "serve", "--host", "0.0.0.0", "--port", str(_free_port())],
        env=_env(home),
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "Traceback" not in done.stderr and done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "tavern: error: refusing to serve on 0.0.0.0 without a password"
    )
    assert "TAVERN_SERVE_PASSWORD" in lines[0]


def test_a_lan_host_with_the_settings_password_requires_it(home: Path, tmp_path: Path) -> None:
    (home / "settings.toml").write_text('[serve]\npassword = "correct horse"\n', encoding="utf-8")
    s = _start(home, tmp_path, "--host", "0.0.0.0")
    try:
        assert "correct horse" not in s.url and "token=" not in s.url

        async def check() -> None:
            async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
                async with http.get(s.base + "/") as r:
                    assert r.status == 401 and "type=password" in await r.text()
                async with http.post(s.base + "/", data={"token": "wrong horse"}, allow_redirects=False) as r:
                    assert r.status == 403
                assert await _ws_status_in(http, s.base + "/ws", origin=s.base) == 403
                async with http.post(
                    s.base + "/", data={"token": "correct horse"}, allow_redirects=False
                ) as r:
                    assert r.status == 303
                async with http.get(s.base + "/") as r:
                    assert r.status == 200 and f"ws://127.0.0.1:{s.port}/ws" in await r.text()
                assert await _ws_status_in(http, s.base + "/ws", origin=EVIL) == 403
                assert await _ws_status_in(http, s.base + "/ws", origin=s.base) == 101
                # any name of the machine is served, but the page quotes it: no markup gets in
                async with http.get(s.base + "/", headers={"Host": 'x"><script>alert(1)</script>'}) as r:
                    assert r.status == 403 and "<script>" not in await r.text()

        _run(check())
    finally:
        s.proc.terminate()
        s.proc.wait(10)


def test_the_environment_password_wins(home: Path, tmp_path: Path) -> None:
    (home / "settings.toml").write_text('[serve]\npassword = "from settings"\n', encoding="utf-8")
    s = _start(home, tmp_path, env={"TAVERN_SERVE_PASSWORD": "from env"})
    try:
        assert _run(_get(s.base + "/?token=from%20settings"))[0] == 403
        assert _run(_get(s.base + "/?token=from%20env"))[0] == 200
    finally:
        s.proc.terminate()
        s.proc.wait(10)
