"""A local server that misbehaves the ways real hostile or broken servers did (issue #26 item 7).

The first path segment picks the behaviour (base URL http://127.0.0.1:PORT/<mode>), and the rest
of the path the API: `/v1/chat/completions` and `/v1/completions` (OpenAI SSE), `/completion`
(llama-server), `/api/generate` (Ollama NDJSON), GET `/v1/models`, `/props`, `/api/tags`.

overrun     ignores the length limit: 5,000 tokens whatever max_tokens says
keepalive   one token, then only `: keep-alive` comments for 20 s, then it just stops
keepalive0  only keep-alive comments for 20 s, not one token
endless     a token every 0.05 s for 20 s (a reply that never ends)
longline    a token, then one SSE line of 50 MB (any POST: the token count's answer too)
shapeN      a token, then chunk N of SHAPES (valid JSON of the wrong shape)
html        every answer an HTML page with status 200 (a web UI at the API's URL)
htmlplain   the completions answer is an HTML page labelled text/plain
jsonbody    the completions answer is one plain JSON body, not a stream
notjson     every GET answers 200 with plain text
badmodels   /v1/models answers {"data": "x"}
maxtok400   400 naming max_tokens whenever the request sends it, else a good stream
html502     a proxy's multi-line HTML 502 page
ok          a good two-token reply (and good models and props)

Every POST body is recorded in `Hostile.requests` (tests check what Tavern sent).
"""

from __future__ import annotations

import json
import time
from http.server import BaseHTTPRequestHandler
from typing import Any

SHAPES: list[dict[str, Any]] = [
    {"choices": "x"},
    {"choices": [{"delta": "str"}]},
    {"choices": [{"delta": {"content": 5}}]},
    {"choices": [{"delta": {"content": " more"}}], "usage": "lots"},
    {"choices": [{"delta": {}}], "usage": {"prompt_tokens": "many"}},
    {"choices": [42]},
    {"choices": [{"delta": {"content": " more"}, "finish_reason": 3}]},
]
"""What each shapeN mode sends after a good token, and the field the error must name."""
SHAPE_FIELDS = [
    "`choices`",
    "`choices[0].delta`",
    "`choices[0].delta.content`",
    "`usage`",
    "`usage.prompt_tokens`",
    "`choices[0]`",
    "`choices[0].finish_reason`",
]

HTML = (
    b"<!DOCTYPE html>\n<html>\n<head><title>Sign in</title></head>\n<body><h1>Welcome</h1></body>\n</html>\n"
)
LONG_LINE = 50 * 2**20


def _openai(text: str = "", finish: str | None = None) -> dict[str, Any]:
    # `delta` for chat completions, `text` for text completions: one chunk serves both.
    return {
        "choices": [
            {"index": 0, "delta": {"content": text} if text else {}, "text": text, "finish_reason": finish}
        ]
    }


class Hostile(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    requests: list[dict[str, Any]] = []

    def log_message(self, *args: object) -> None:  # quiet
        pass

    # -- plumbing ----------------------------------------------------------------------------

    def _send(self, code: int, data: bytes, ctype: str = "application/json") -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _json(self, code: int, body: Any) -> None:
        self._send(code, json.dumps(body).encode())

    def _start(self, ctype: str = "text/event-stream") -> None:
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Connection", "close")
        self.end_headers()

    def _write(self, data: bytes) -> bool:
        """False once the client has gone (it stopped reading: what the tests want)."""
        try:
            self.wfile.write(data)
            self.wfile.flush()
            return True
        except OSError:
            return False

    @property
    def _api(self) -> str:
        if self.path.endswith("/api/generate"):
            return "ollama"
        if self.path.endswith("/completion"):
            return "llamacpp"
        return "openai"

    def _chunk(self, text: str = "", finish: str | None = None) -> bytes:
        if self._api == "ollama":
            body = {"response": text, "done": finish is not None}
            return json.dumps(body).encode() + b"\n"
        if self._api == "llamacpp":
            body = {"content": text, "stop": finish is not None}
            return b"data: " + json.dumps(body).encode() + b"\n\n"
        return b"data: " + json.dumps(_openai(text, finish)).encode() + b"\n\n"

    def _end(self) -> None:
        done = b"data: [DONE]\n\n" if self._api == "openai" else b""
        self._write(self._chunk(finish="stop") + done)

    # -- GET: models and props -----------------------------------------------------------------

    def do_GET(self) -> None:
        mode = self.path.strip("/").split("/")[0]
        if mode == "html":
            return self._send(200, HTML, "text/html; charset=utf-8")
        if mode == "notjson":
            return self._send(200, b"OK\n", "text/plain")
        if mode == "badmodels" and self.path.endswith("/models"):
            return self._json(200, {"data": "x"})
        if self.path.endswith("/props"):
            return self._json(
                200, {"model_path": "hostile.gguf", "default_generation_settings": {"n_ctx": 2048}}
            )
        if self.path.endswith("/api/tags"):
            return self._json(200, {"models": [{"name": "hostile"}]})
        return self._json(200, {"data": [{"id": "hostile-model"}]})

    # -- POST: the reply -----------------------------------------------------------------------

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        Hostile.requests.append(body)
        mode = self.path.strip("/").split("/")[0]
        if mode == "html":
            return self._send(200, HTML, "text/html")
        if mode == "html502":
            return self._send(
                502,
                b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
                b"<center><h1>502 Bad Gateway</h1></center>\r\n</body>\r\n</html>\r\n",
                "text/html",
            )
        if mode == "jsonbody":
            return self._json(200, {"choices": [{"message": {"content": "Hi"}, "finish_reason": "stop"}]})
        if mode == "maxtok400" and "max_tokens" in body:
            return self._json(400, {"error": {"message": "max_tokens must be at most 64 for this model"}})
        ndjson = self._api == "ollama"
        self._start(
            "text/plain" if mode == "htmlplain" else "application/x-ndjson" if ndjson else "text/event-stream"
        )
        getattr(self, "_" + mode.rstrip("0123456789"), self._ok)(mode)

    def _ok(self, mode: str) -> None:
        if self._write(self._chunk("Hello") + self._chunk(" world")):
            self._end()

    def _htmlplain(self, mode: str) -> None:
        self._write(HTML)

    def _overrun(self, mode: str) -> None:
        for i in range(5000):
            if not self._write(self._chunk(f" w{i}")):
                return
        self._end()

    def _keepalive(self, mode: str) -> None:
        if mode == "keepalive" and not self._write(self._chunk("Hello")):
            return
        until = time.monotonic() + 20
        while time.monotonic() < until:
            if not self._write(b": keep-alive\n\n"):
                return
            time.sleep(0.05)

    def _endless(self, mode: str) -> None:
        until, i = time.monotonic() + 20, 0
        while time.monotonic() < until:
            if not self._write(self._chunk(f" t{i}")):
                return
            i += 1
            time.sleep(0.05)
        self._end()

    def _longline(self, mode: str) -> None:
        if not self._write(self._chunk("Hello") + b"data: "):
            return
        block = b"x" * 2**16
        for _ in range(LONG_LINE // len(block)):
            if not self._write(block):
                return
        self._write(b"\n\n")
        self._end()

    def _shape(self, mode: str) -> None:
        bad = SHAPES[int(mode.removeprefix("shape"))]
        if self._write(self._chunk("Hello") + b"data: " + json.dumps(bad).encode() + b"\n\n"):
            self._end()
