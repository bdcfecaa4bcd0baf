"""Streaming over HTTP (SSE and NDJSON) and the mapping of transport failures to one line.

Every failure becomes a `RemoteError` whose message names the problem and never the key (the
key is scrubbed from any text a server echoes back). `retriable` says whether a retry is safe:
only failures before the first streamed token are ever retried.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterable, Iterator

import httpx

from tavern.errors import EngineError
from tavern.masking import mask_url
from tavern.masking import scrub as _scrub


class RemoteError(EngineError):
    title = "Backend"

    def __init__(self, message: str, retriable: bool = False, param: str | None = None):
        super().__init__(mask_url(message))  # a URL's password never reaches an error line
        self.retriable = retriable
        self.param = param


class StreamError(RemoteError):
    """What was wrong with an answer's content (no URL: the engine adds the server's)."""


class ShapeError(StreamError):
    """Valid JSON of the wrong shape: the message names the field and what it held."""


class HtmlError(StreamError):
    """An HTML page where JSON or a stream was due (a proxy's or a web UI's page)."""


MAX_LINE = 4 * 2**20
"""The longest SSE/NDJSON line (or SSE event) read; a longer one is an error, not a memory hog."""
MAX_BODY = 16 * 2**20
"""The largest plain JSON answer read (/v1/models of a big router is about 1 MiB)."""
MAX_ERROR_BODY = 64 * 2**10
"""Of an error answer only this much is read: its message is cut to 300 characters anyway."""


def scrub(text: str, key: str) -> str:
    return _scrub(text, key)  # the key and any URL password as ***


def _server_message(body: bytes) -> str:
    text = body.decode("utf-8", "replace").strip()
    if looks_html(body):
        return "(an HTML page)"
    try:
        data: object = json.loads(text)
    except ValueError:
        return " ".join(text.split())[:300]
    err = data.get("error", data) if isinstance(data, dict) else data
    if isinstance(err, dict):
        err = err.get("message") or err.get("detail") or json.dumps(err)
    if isinstance(data, dict) and "detail" in data and not isinstance(err, str):
        err = data["detail"]
    return " ".join(str(err).split())[:300]  # one line, whatever the server wrote


def named_param(message: str, candidates: list[str]) -> str | None:
    """Which of the parameters we sent a 400's message names, if any."""
    for name in sorted(candidates, key=len, reverse=True):
        if re.search(rf"(?<![A-Za-z0-9_]){re.escape(name)}(?![A-Za-z0-9_])", message):
            return name
    return None


def status_error(resp: httpx.Response, body: bytes, url: str, key: str, sent: list[str]) -> RemoteError:
    msg = scrub(_server_message(body), key)
    code = resp.status_code
    if code in (401, 403):
        return RemoteError(f"{url}: not authorised ({code}): check the backend's key")
    if code == 429:
        return RemoteError(f"{url}: rate limited (429): {msg}", retriable=True)
    if code >= 500:
        return RemoteError(f"{url}: server error {code}: {msg}", retriable=True)
    if code == 404:
        return RemoteError(f"{url}: not found (404): is the URL and API type right? {msg}")
    param = named_param(msg, sent) if code in (400, 422) else None
    return RemoteError(f"{url}: the server refused the request ({code}): {msg}", param=param)


def transport_error(err: Exception, url: str, key: str) -> RemoteError:
    if isinstance(err, httpx.ConnectError):
        return RemoteError(f"{url}: cannot connect (is the server running?)", retriable=True)
    if isinstance(err, httpx.TimeoutException):
        return RemoteError(f"{url}: the server did not answer in time", retriable=True)
    if isinstance(err, (httpx.RemoteProtocolError, httpx.ReadError)):
        # Retriable: before the first token this is mostly a kept-alive connection the server
        # had closed (llama-server does after a stream); the engine never retries mid-reply.
        return RemoteError(f"{url}: the server closed the connection mid-reply", retriable=True)
    return RemoteError(scrub(f"{url}: {type(err).__name__}: {err}", key))


def looks_html(body: bytes, content_type: str = "") -> bool:
    return "html" in content_type.lower() or body.lstrip()[:1] == b"<"


def read_capped(resp: httpx.Response, limit: int, url: str) -> bytes:
    """The answer's body, read no further than `limit` bytes (an endless or huge answer
    must not fill memory); a longer answer raises unless it is an error page (cut instead)."""
    out = bytearray()
    for chunk in resp.iter_bytes():
        out += chunk
        if len(out) > limit:
            if resp.status_code >= 400:
                return bytes(out[:limit])
            raise RemoteError(f"{url}: the answer is larger than {limit // 2**20} MiB")
    return bytes(out)


def json_answer(resp: httpx.Response, body: bytes, url: str) -> object:
    """The JSON of a plain answer, its shape unchecked (the API classes check what they read);
    HTML or other text is one line naming the status."""
    code = resp.status_code
    if looks_html(body, resp.headers.get("content-type", "")):
        raise RemoteError(f"{url}: the server answered with HTML, not JSON (status {code})")
    try:
        answer: object = json.loads(body)
    except ValueError:
        head = body[:60].decode("utf-8", "replace")
        raise RemoteError(
            f"{url}: the server answered with text that is not JSON (status {code}): {head!r}"
        ) from None
    return answer


def split_lines(chunks: Iterable[bytes], max_line: int = MAX_LINE) -> Iterator[str]:
    """The lines of a byte stream (ended by \n, \r\n or \r, as SSE allows), read
    incrementally: at most one line (`max_line` bytes) is held, so one endless line costs
    `max_line` of memory and then an error, never the whole answer."""
    buf = bytearray()
    for chunk in chunks:
        scan = max(len(buf) - 1, 0)  # a \r last time may be half of \r\n
        buf += chunk
        start = 0
        while True:
            found = _EOL.search(buf, max(start, scan))
            if found is None or (found.group() == b"\r" and found.end() == len(buf)):
                break  # no whole line yet (a trailing \r waits for a possible \n)
            yield _line(buf[start:found.start()], max_line)
            start = found.end()
        del buf[:start]
        if len(buf) > max_line:
            raise StreamError(f"the server sent a stream line longer than {max_line // 2**20} MiB")
    if buf:
        yield _line(buf.rstrip(b"\r"), max_line)


_EOL = re.compile(rb"\r\n|\n|\r")


def _line(raw: bytearray, max_line: int) -> str:
    if len(raw) > max_line:
        raise StreamError(f"the server sent a stream line longer than {max_line // 2**20} MiB")
    return raw.decode("utf-8", "replace")


class StreamClock:
    """Bounds a turn in time: `idle_s` with no streamed text (keep-alive comments and empty
    chunks count as idle) and `deadline_s` for the whole turn, retries included. Checked as
    bytes arrive; a server that sends nothing at all is caught by the client's read timeout,
    which the engine sets to at most `idle_s`."""

    def __init__(self, idle_s: float, deadline_s: float):
        self.idle_s, self.deadline_s = idle_s, deadline_s
        self.start = self.last = time.monotonic()

    def progress(self) -> None:
        """Text or reasoning arrived."""
        self.last = time.monotonic()

    def expired(self) -> bool:
        return time.monotonic() - self.start > self.deadline_s

    def check(self) -> None:
        now = time.monotonic()
        if now - self.start > self.deadline_s:
            raise StreamError(f"the reply ran past its deadline of {self.deadline_s:g} s (deadline_s)")
        if now - self.last > self.idle_s:
            raise StreamError(f"no text for {self.idle_s:g} s, only keep-alives (idle_timeout_s)")

    def watch(self, chunks: Iterable[bytes], cancel: threading.Event) -> Iterator[bytes]:
        """The chunks, ending early when the turn is cancelled (checked as each arrives, so
        Esc works while a server sends only keep-alives)."""
        self.last = time.monotonic()  # idle counts from when the answer starts
        for chunk in chunks:
            if cancel.is_set():
                return
            self.check()
            yield chunk


DONE: dict[str, object] = {"_done": True}
"""Yielded for OpenAI's `data: [DONE]`, so callers can tell a finished stream from a cut one."""


_SSE_FIELDS = ("data", "event", "id", "retry", "error")


def iter_sse(lines: Iterable[str], max_event: int = MAX_LINE) -> Iterator[dict[str, object]]:
    """JSON payloads of an SSE stream's `data:` events; `[DONE]` ends it; bad JSON raises, and
    so does an answer that is no event stream at all (HTML, a plain JSON body)."""
    data: list[str] = []
    size, events, junk = 0, 0, ""
    for line in lines:
        if line == "":
            if data:
                payload = "\n".join(data)
                data, size, events = [], 0, events + 1
                if payload.strip() == "[DONE]":
                    yield DONE
                    return
                yield _json(payload)
            continue
        if line.startswith(":"):
            continue  # keep-alive comment
        field, _, value = line.partition(":")
        if field == "data":
            size += len(value)
            if size > max_event:  # many data lines make one event: bound their sum too
                raise StreamError(f"the server sent a stream event longer than {max_event // 2**20} MiB")
            data.append(value[1:] if value.startswith(" ") else value)
        elif field == "error":
            raise StreamError(f"the server reported an error mid-stream: {value.strip()[:300]}")
        elif field not in _SSE_FIELDS and not events and not data:
            if line.lstrip().startswith("<"):
                raise HtmlError("the server answered with HTML, not an event stream")
            junk = junk or line
    if data:
        payload = "\n".join(data)
        yield DONE if payload.strip() == "[DONE]" else _json(payload)
    elif junk and not events:
        raise StreamError(f"the server's answer is not an event stream: {junk[:80]!r}")


def iter_ndjson(lines: Iterable[str]) -> Iterator[dict[str, object]]:
    for line in lines:
        if line.strip():
            if line.lstrip().startswith("<"):
                raise HtmlError("the server answered with HTML, not a JSON stream")
            yield _json(line)


def _json(payload: str) -> dict[str, object]:
    try:
        value: object = json.loads(payload)
    except ValueError:
        raise StreamError(f"malformed stream from the server: {payload[:80]!r}") from None
    if not isinstance(value, dict):
        raise StreamError(f"malformed stream from the server: {payload[:80]!r}")
    if "error" in value and not value.get("choices"):
        err = value["error"]
        message = err.get("message", err) if isinstance(err, dict) else err
        raise StreamError(f"the server reported an error mid-stream: {' '.join(str(message).split())[:300]}")
    return value
