"""A small local OpenAI-style server for faults a real server cannot produce on demand.

The first path segment picks the behaviour (base URL http://127.0.0.1:PORT/<mode>):
die (streams two tokens then drops the connection), garbage (a token, then broken SSE),
param400 (400 naming `min_p` when the request sends it), flaky429 (429 on the first request of
each client), auth401 (401 echoing the Authorization header back), think (a <think> block split
across chunks), reasoning (reasoning_content deltas), slow (a token every 0.2 s, 50 of them).
Any mode answers KoboldCpp's `/api/extra/generate/stream` with a short stream. Every POST body
is recorded in `Handler.requests` (tests check what Tavern sent).
"""

from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler


def _chunk(text: str = "", reasoning: str = "", finish: str | None = None) -> bytes:
    delta = {}
    if text:
        delta["content"] = text
    if reasoning:
        delta["reasoning_content"] = reasoning
    # `delta` for chat completions, `text` for text completions: one stream serves both.
    body = {"choices": [{"index": 0, "delta": delta, "text": text, "finish_reason": finish}]}
    return b"data: " + json.dumps(body).encode() + b"\n\n"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen: dict[str, int] = {}
    requests: list[dict] = []

    def log_message(self, *args: object) -> None:  # quiet
        pass

    def _send(self, code: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _stream_start(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()

    def do_GET(self) -> None:
        self._send(200, {"data": [{"id": "fault-model"}]})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        Handler.requests.append(body)
        mode = self.path.strip("/").split("/")[0]
        if self.path.endswith("/api/extra/generate/stream"):  # KoboldCpp's stream
            self._stream_start()
            for token, finish in (("Hello", None), (" kobold", None), ("", "stop")):
                self.wfile.write(b"event: message\ndata: " + json.dumps({"token": token, "finish_reason": finish}).encode() + b"\n\n")
            self.wfile.flush()
            return
        if not self.path.endswith("completions"):
            return self._send(404, {"error": {"message": "no such endpoint"}})
        n = Handler.seen[mode] = Handler.seen.get(mode, 0) + 1
        w = self.wfile
        if mode == "auth401":
            return self._send(401, {"error": {"message": f"bad key {self.headers.get('Authorization')}"}})
        if mode == "param400" and "min_p" in body:
            return self._send(400, {"error": {"message": "Unrecognized request argument supplied: min_p"}})
        if mode == "flaky429" and n == 1:
            return self._send(429, {"error": {"message": "slow down"}})
        if mode == "down500":
            return self._send(503, {"error": {"message": "model is loading"}})
        self._stream_start()
        if mode == "die":
            w.write(_chunk("Hello") + _chunk(" there"))
            w.flush()
            self.connection.shutdown(2)  # the plug pulled: no [DONE], no clean end
            return
        if mode == "garbage":
            w.write(_chunk("Hi") + b"data: {not json at all\n\n")
        elif mode == "think":
            for piece in ("<thi", "nk>the user said hi", "; be kind</th", "ink>\n", "Hello", "!"):
                w.write(_chunk(piece))
        elif mode == "reasoning":
            w.write(_chunk(reasoning="thinking hard") + _chunk("Answer"))
        elif mode == "slow":
            import time

            for i in range(50):
                try:
                    w.write(_chunk(f" t{i}"))
                    w.flush()
                except OSError:
                    return
                time.sleep(0.2)
        else:
            w.write(_chunk("Hello") + _chunk(" world"))
        w.write(_chunk(finish="stop") + b"data: [DONE]\n\n")
        w.flush()
