"""Streaming over HTTP (SSE and NDJSON) and the mapping of transport failures to one line.

Every failure becomes a `RemoteError` whose message names the problem and never the key (the
key is scrubbed from any text a server echoes back). `retriable` says whether a retry is safe:
only failures before the first streamed token are ever retried.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import httpx

from tavern.errors import EngineError


class RemoteError(EngineError):
    title = "Backend"

    def __init__(self, message: str, retriable: bool = False, param: str | None = None):
        super().__init__(message)
        self.retriable = retriable
        self.param = param


def scrub(text: str, key: str) -> str:
    return text.replace(key, "***") if key else text


def _server_message(body: bytes) -> str:
    text = body.decode("utf-8", "replace").strip()
    try:
        data = json.loads(text)
    except ValueError:
        return text[:300]
    err = data.get("error", data) if isinstance(data, dict) else data
    if isinstance(err, dict):
        err = err.get("message") or err.get("detail") or json.dumps(err)
    if isinstance(data, dict) and "detail" in data and not isinstance(err, str):
        err = data["detail"]
    return str(err)[:300]


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


DONE: dict[str, Any] = {"_done": True}
"""Yielded for OpenAI's `data: [DONE]`, so callers can tell a finished stream from a cut one."""


def iter_sse(lines: Iterator[str]) -> Iterator[dict[str, Any]]:
    """JSON payloads of an SSE stream's `data:` events; `[DONE]` ends it; bad JSON raises."""
    data: list[str] = []
    for line in lines:
        if line == "":
            if data:
                payload = "\n".join(data)
                data = []
                if payload.strip() == "[DONE]":
                    yield DONE
                    return
                yield _json(payload)
            continue
        if line.startswith(":"):
            continue  # keep-alive comment
        field, _, value = line.partition(":")
        if field == "data":
            data.append(value[1:] if value.startswith(" ") else value)
        elif field == "error":
            raise RemoteError(f"the server reported an error mid-stream: {value.strip()[:300]}")
    if data:
        payload = "\n".join(data)
        yield DONE if payload.strip() == "[DONE]" else _json(payload)


def iter_ndjson(lines: Iterator[str]) -> Iterator[dict[str, Any]]:
    for line in lines:
        if line.strip():
            yield _json(line)


def _json(payload: str) -> dict[str, Any]:
    try:
        value = json.loads(payload)
    except ValueError:
        raise RemoteError(f"malformed stream from the server: {payload[:80]!r}") from None
    if not isinstance(value, dict):
        raise RemoteError(f"malformed stream from the server: {payload[:80]!r}")
    if "error" in value and not value.get("choices"):
        err = value["error"]
        raise RemoteError(f"the server reported an error mid-stream: {str(err.get('message', err) if isinstance(err, dict) else err)[:300]}")
    return value
