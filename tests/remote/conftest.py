"""Fixtures shared by the remote-backend tests.

The real servers (`llama_server`, `native_llama_server`: remote/llama_server.py) are offered to
every module here; the scripted ones run on a free loopback port for one module's tests:
`fault_url` (remote/fault_server.py) and `hostile_url` (remote/hostile_server.py). A module
that checks retries without waiting for them asks for `fast_backoff`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from remote.fault_server import Handler
from remote.hostile_server import Hostile
from remote.llama_server import llama_server, native_llama_server  # noqa: F401  (the fixtures)
from tavern.engines.remote import engine as remote_engine


def _serve(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """`handler` on a free loopback port: its base URL, until the caller is done."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def fault_url() -> Iterator[str]:
    """The base URL of fault_server's `Handler` (a path segment after it picks the fault)."""
    yield from _serve(Handler)


@pytest.fixture(scope="module")
def hostile_url() -> Iterator[str]:
    """The base URL of hostile_server's `Hostile` (a path segment after it picks the mode)."""
    yield from _serve(Hostile)


@pytest.fixture
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """Retries without the engine's real backoff between them."""
    monkeypatch.setattr(remote_engine, "BACKOFF_S", 0.01)
