"""`RemoteEngine`: the Engine protocol over a connection profile (one class, five API shapes).

Each API differs in three places only: the endpoint and request body (`_request`), how a stream
chunk carries text (`_delta`), and whether the stream is SSE or NDJSON (Ollama). Everything
else (retries before the first token, dropping a parameter the server names in a 400, reasoning
kept apart, a partial reply kept on any failure) is shared.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from tavern.engines.base import Finished, GenerationRequest, Token, TurnStats
from tavern.engines.remote.http import (
    RemoteError,
    iter_ndjson,
    iter_sse,
    scrub,
    status_error,
    transport_error,
)
from tavern.backends import CFG_APIS
from tavern.engines.remote.params import map_sampler

RETRIES = 2
BACKOFF_S = 0.5
COUNT_WORKERS = 8
"""Concurrent count requests where a server counts one text per request."""
CFG_UNAVAILABLE = "CFG is unavailable on this backend ({api}): the negative prompt is not applied"


class ThinkSplitter:
    """Routes a leading `<think>…</think>` block to reasoning, the rest to the reply."""

    OPEN, CLOSE = "<think>", "</think>"

    def __init__(self) -> None:
        self.state = "start"
        self.buf = ""

    def feed(self, text: str) -> tuple[str, str]:
        """(reply text, reasoning text) ready to emit."""
        self.buf += text
        if self.state == "start":
            head = self.buf.lstrip()
            if head.startswith(self.OPEN):
                self.state, self.buf = "think", head[len(self.OPEN):]
            elif self.OPEN.startswith(head):
                return "", ""  # could still become <think>: wait
            else:
                self.state = "reply"
        if self.state == "think":
            end = self.buf.find(self.CLOSE)
            if end < 0:
                keep = len(self.CLOSE) - 1  # a tag split across chunks
                out, self.buf = self.buf[:-keep] if len(self.buf) > keep else "", self.buf[-keep:]
                return "", out
            reasoning, rest = self.buf[:end], self.buf[end + len(self.CLOSE):].lstrip()
            self.state, self.buf = "reply", ""
            return rest, reasoning
        out, self.buf = self.buf, ""
        return out, ""

    def flush(self) -> tuple[str, str]:
        out, self.buf = self.buf, ""
        return ("", out) if self.state == "think" else (out, "")


class RemoteEngine:
    supports_raw_prompt = True
    supports_kv_shift = False
    keeps_removed_text = False

    def __init__(self, profile: Any, n_ctx: int = 4096, store: Any = None, timeout: float = 120.0):
        self.profile = profile
        self.name = profile.api
        self.supports_raw_prompt = profile.api != "openai-chat"
        self.supports_cfg = profile.api in CFG_APIS
        self.counts_joined = profile.api == "llamacpp"
        """Counts many texts in one request (`count_tokens_many`), so priming more is cheap."""
        # text-generation-webui speaks OpenAI text completions plus its own fields.
        self._shape = "openai-text" if profile.api == "textgen" else profile.api
        self._n_ctx = n_ctx
        self._store = store  # BackendStore, to remember rejected parameters
        self._timeout = httpx.Timeout(timeout, connect=5.0)
        self._client: httpx.Client | None = None
        self._meta: dict[str, str] = {}
        self._model = profile.model
        self._counts: dict[str, int] = {}
        self.count_method = "estimate"
        self.notices: list[str] = []
        """Things the user should see once: samplers the API cannot take, ignored parameters.
        A front shows and clears them; each is added once per engine."""
        self._said: set[str] = set()
        self.http_requests = 0
        """Requests sent to the server (counted by an httpx hook; tests and benchmarks read it)."""

    # -- connection ---------------------------------------------------------------------------

    @property
    def base(self) -> str:
        return self.profile.url.rstrip("/")

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.profile.key}"} if self.profile.key else {}

    @property
    def client(self) -> httpx.Client:
        if self._client is None:
            self._client = httpx.Client(timeout=self._timeout, headers=self._headers(),
                                        event_hooks={"request": [self._sent]})
        return self._client

    def _sent(self, _request: httpx.Request) -> None:
        self.http_requests += 1

    def _get(self, path: str) -> Any:
        url = self.base + path
        try:
            resp = self.client.get(url)
        except httpx.HTTPError as err:
            raise transport_error(err, url, self.profile.key) from None
        if resp.status_code >= 400:
            raise status_error(resp, resp.content, url, self.profile.key, [])
        return resp.json()

    def _v1(self) -> str:
        return "" if self.base.endswith("/v1") else "/v1"

    def list_models(self) -> list[str]:
        api = self.profile.api
        if api == "ollama":
            return [m.get("name", "") for m in self._get("/api/tags").get("models", [])]
        if api == "kobold":
            return [str(self._get("/api/v1/model").get("result", ""))]
        if api == "llamacpp":
            props = self._get("/props")
            return [str(props.get("model_path") or props.get("model_alias") or "")]
        return [m.get("id", "") for m in self._get(self._v1() + "/models").get("data", [])]

    def load(self) -> None:
        """Connect: learn the model, its context and its template where the server says."""
        models = self.list_models()
        if not self._model and models:
            self._model = models[0]
        if self.profile.api == "llamacpp":
            props = self._get("/props")
            if props.get("chat_template"):
                self._meta["tokenizer.chat_template"] = props["chat_template"]
            n_ctx = (props.get("default_generation_settings") or {}).get("n_ctx")
            if n_ctx:
                self._n_ctx = int(n_ctx)
        elif self.profile.api == "kobold":
            try:
                self._n_ctx = int(self._get("/api/extra/true_max_context_length")["value"])
            except (RemoteError, KeyError, ValueError):
                pass

    def unload(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    @property
    def context_size(self) -> int:
        return self._n_ctx

    @property
    def model_name(self) -> str:
        return self._model or self.profile.name

    def metadata(self) -> dict[str, str]:
        return dict(self._meta)

    # -- counting -----------------------------------------------------------------------------

    def tokenize(self, text: str, add_bos: bool = False) -> list[int]:
        raise RemoteError(f"backend {self.profile.name} does not hand out token ids")

    def count_tokens(self, text: str) -> int:
        """The server's count where it offers one (cached per text: the assembler counts each
        piece every turn, and most pieces repeat), tiktoken for OpenAI models, else an estimate
        (`count_method` says which)."""
        hit = self._counts.get(text)
        if hit is not None:
            return hit
        n = self._count(text)
        if len(self._counts) > 50_000:
            self._counts.clear()
        self._counts[text] = n
        return n

    def _count(self, text: str) -> int:
        if self.count_method != "none-left":
            try:
                n = self._server_count(text)
                if n is not None:
                    return n
            except (RemoteError, httpx.HTTPError, ValueError, KeyError):
                pass
        model = self.model_name.lower()
        if model.startswith(("gpt-", "o1", "o3", "o4", "chatgpt")):
            from tavern.prompt.tokenizers import count_tiktoken

            self.count_method = "tiktoken"
            return count_tiktoken(text, model)
        self.count_method = "estimate"
        return max(1, (len(text) + 2) // 3) if text else 0

    def _server_count(self, text: str) -> int | None:
        api = self.profile.api
        if self.count_method == "estimate" and self._counts:
            return None  # the server had no endpoint the first time: don't ask again
        if api == "llamacpp":
            resp = self.client.post(self.base + "/tokenize", json={"content": text})
            n = len(resp.raise_for_status().json()["tokens"])
        elif api == "kobold":
            resp = self.client.post(self.base + "/api/extra/tokencount", json={"prompt": text})
            n = int(resp.raise_for_status().json()["value"])
        elif api == "textgen":
            resp = self.client.post(self.base.removesuffix("/v1") + "/v1/internal/token-count", json={"text": text})
            n = int(resp.raise_for_status().json()["length"])
        elif api.startswith("openai"):
            # llama-cpp-python's server; other OpenAI-style servers answer 404 once.
            resp = self.client.post(self.base.removesuffix("/v1") + "/extras/tokenize/count", json={"input": text})
            n = int(resp.raise_for_status().json()["count"])
        else:
            return None
        self.count_method = "server"
        return n

    def count_tokens_many(self, texts: list[str]) -> list[int]:
        """Counts of many texts with as few round trips as the server allows: llama-server
        tokenizes them joined, in one request, and splits the tokens back at the texts'
        boundaries; a server that counts one text per request gets them concurrently. The
        per-text cache means a later turn asks only about new texts."""
        todo = [t for t in dict.fromkeys(texts) if t and t not in self._counts]
        if len(todo) == 1:
            self.count_tokens(todo[0])
        elif todo:
            counts = self._joined_counts(todo) if self.profile.api == "llamacpp" else None
            if counts is None:
                self.count_tokens(todo[0])  # learns whether the server counts at all
                rest = [t for t in todo[1:] if t not in self._counts]
                if self.count_method == "server":
                    with ThreadPoolExecutor(min(COUNT_WORKERS, len(rest) or 1)) as pool:
                        counts = list(pool.map(self._count, rest))
                else:
                    counts = [self._count(t) for t in rest]  # tiktoken or estimate: no requests
                todo = rest
            for text, n in zip(todo, counts, strict=True):
                self._counts[text] = n
        return [self._counts.get(t, 0) if t else 0 for t in texts]

    def _joined_counts(self, texts: list[str]) -> list[int] | None:
        """llama-server's /tokenize of the texts joined, with each token's piece: a token
        belongs to the text its first byte falls in. Exact where texts meet at special tokens
        (ChatML and the like); elsewhere a token may straddle a seam, and the assembler's
        whole-prompt count corrects the window."""
        try:
            resp = self.client.post(self.base + "/tokenize", json={"content": "".join(texts), "with_pieces": True})
            tokens = resp.raise_for_status().json()["tokens"]
            sizes = [len(p.encode("utf-8")) if isinstance(p, str) else len(p) for p in (t["piece"] for t in tokens)]
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            return None
        self.count_method = "server"
        ends, total = [], 0
        for text in texts:
            total += len(text.encode("utf-8"))
            ends.append(total)
        # A tokenizer's added leading space (SentencePiece) shifts every piece by its size.
        pos = total - sum(sizes) if sum(sizes) > total else 0
        counts, i = [0] * len(texts), 0
        for size in sizes:
            while i < len(ends) - 1 and pos >= ends[i]:
                i += 1
            counts[i] += 1
            pos += size
        return counts

    # -- generation ---------------------------------------------------------------------------

    def _request(self, request: GenerationRequest, fields: dict[str, Any]) -> tuple[str, dict, bool]:
        """(url, body, ndjson) for this API."""
        api, p = self._shape, dict(fields)
        model = {"model": self._model} if self._model else {}
        stop = list(request.stop)
        if request.negative_prompt is not None and request.guidance_scale != 1.0:
            if self.supports_cfg:
                # text-generation-webui's own names (as SillyTavern sends them): the whole
                # negative prompt, formatted like the prompt, and the scale.
                p["guidance_scale"] = request.guidance_scale
                p["negative_prompt"] = request.negative_prompt
            else:
                self._notice(CFG_UNAVAILABLE.format(api=self.profile.api))
        if api == "openai-chat":
            body = {**model, "messages": request.messages or [{"role": "user", "content": request.prompt}],
                    "max_tokens": request.max_tokens, "stream": True, **p}
            return self.base + self._v1() + "/chat/completions", _with_stop(body, stop), False
        if api == "openai-text":
            body = {**model, "prompt": request.prompt, "max_tokens": request.max_tokens, "stream": True, **p}
            return self.base + self._v1() + "/completions", _with_stop(body, stop), False
        if api == "llamacpp":
            body = {"prompt": request.prompt, "n_predict": request.max_tokens, "stream": True,
                    "cache_prompt": True, "n_keep": -1, "stop": stop, **p}
            return self.base + "/completion", body, False
        if api == "kobold":
            body = {"prompt": request.prompt, "max_length": request.max_tokens, "stop_sequence": stop,
                    "max_context_length": self._n_ctx, **p}
            return self.base + "/api/extra/generate/stream", body, False
        # ollama: raw prompt, options hold the samplers
        body = {**model, "prompt": request.prompt, "raw": True, "stream": True,
                "options": {"num_predict": request.max_tokens, "stop": stop, "num_ctx": self._n_ctx, **p}}
        return self.base + "/api/generate", body, True

    def _delta(self, chunk: dict) -> tuple[str, str, str | None]:
        """(text, reasoning, finish reason) of one stream chunk."""
        api = self._shape
        if chunk.get("_done"):
            return "", "", "stop"
        if api.startswith("openai"):
            choices = chunk.get("choices") or [{}]
            c = choices[0]
            if api == "openai-chat":
                d = c.get("delta") or {}
                return d.get("content") or "", d.get("reasoning_content") or d.get("reasoning") or "", c.get("finish_reason")
            return c.get("text") or "", "", c.get("finish_reason")
        if api == "llamacpp":
            return chunk.get("content", ""), "", ("stop" if chunk.get("stop") else None)
        if api == "kobold":
            return chunk.get("token", ""), "", chunk.get("finish_reason")
        return chunk.get("response", ""), chunk.get("thinking", ""), ("stop" if chunk.get("done") else None)

    def generate(self, request: GenerationRequest, cancel: threading.Event | None = None) -> Iterator[Any]:
        cancel = cancel or threading.Event()
        t0 = time.perf_counter()
        fields, unsupported = map_sampler(request.sampler, self.profile.api)
        for name in unsupported:
            self._notice(f"{self.profile.api} has no {name}: not applied")
        for name in self.profile.ignored:
            fields.pop(name, None)
        url, body, ndjson = self._request(request, fields)
        key = self.profile.key
        split = ThinkSplitter()
        text, reasoning, n, ttft, finish = "", "", 0, 0.0, None
        usage: dict[str, int] = {}
        error: str | None = None
        tries = 0
        while True:
            try:
                with self.client.stream("POST", url, json=body) as resp:
                    if resp.status_code >= 400:
                        raise status_error(resp, resp.read(), url, key, list(body) + list(body.get("options", {})))
                    chunks = (iter_ndjson if ndjson else iter_sse)(resp.iter_lines())
                    for chunk in chunks:
                        usage.update(_usage(chunk))
                        piece, think, reason = self._delta(chunk)
                        finish = reason or finish
                        out, more = split.feed(piece) if piece else ("", "")
                        reasoning += think + more
                        if out:
                            if n == 0:
                                ttft = (time.perf_counter() - t0) * 1000
                            n += 1
                            text += out
                            yield Token(out)
                        if cancel.is_set():
                            finish = "cancelled"
                            break  # leaving the `with` closes the stream at once
                    if finish is None:
                        # A stream that just stops (no finish reason, no [DONE]) was cut off.
                        raise RemoteError(f"{url}: the server closed the connection mid-reply")
                break
            except (RemoteError, httpx.HTTPError) as err:
                rerr = err if isinstance(err, RemoteError) else transport_error(err, url, key)
                if text or reasoning:
                    error = f"{scrub(str(rerr), key)} (partial reply kept)"
                    break
                if rerr.param and rerr.param in body:
                    # Version skew: the server named a parameter it does not take.
                    body.pop(rerr.param)
                    self._notice(f"the server ignored the setting {rerr.param!r}: {rerr} (no longer sent)")
                    if self._store is not None:
                        self._store.remember_ignored(self.profile.name, rerr.param)
                    self.profile.ignored.append(rerr.param)
                    continue
                if rerr.retriable and tries < RETRIES and not cancel.is_set():
                    tries += 1
                    time.sleep(BACKOFF_S * 2 ** (tries - 1))
                    continue
                error = scrub(str(rerr), key)
                break
        if finish == "cancelled" and self.profile.api == "kobold":
            # KoboldCpp keeps generating after the client leaves unless told to stop.
            try:
                self.client.post(self.base + "/api/extra/abort", json={}, timeout=2)
            except httpx.HTTPError:
                pass
        out, more = split.flush()
        text += out
        reasoning += more
        if out:
            yield Token(out)
        total = (time.perf_counter() - t0) * 1000
        gen_s = max(total - ttft, 1e-6) / 1000
        reason = "error" if error else ("cancelled" if finish == "cancelled" else ("length" if finish == "length" else "eos"))
        stats = TurnStats(prompt_tokens=usage.get("prompt", 0), cached_tokens=usage.get("cached", 0),
                          evaluated_tokens=usage.get("prompt", 0) - usage.get("cached", 0), ttft_ms=ttft, gen_tokens=n, gen_tps=n / gen_s if n else 0.0, total_ms=total,
                          stop_reason=reason)
        extra = {"reasoning": reasoning.strip()} if reasoning.strip() else {}
        yield Finished(text=text, stats=stats, error=error, extra=extra)

    def _notice(self, line: str) -> None:
        if line not in self._said:
            self._said.add(line)
            self.notices.append(line)


def _usage(chunk: dict) -> dict[str, int]:
    """Prompt token counts where a server reports them (OpenAI usage, llama-server timings,
    Ollama's prompt_eval_count)."""
    out = {}
    u = chunk.get("usage") or {}
    if u.get("prompt_tokens"):
        out["prompt"] = int(u["prompt_tokens"])
        cached = (u.get("prompt_tokens_details") or {}).get("cached_tokens")
        if cached:
            out["cached"] = int(cached)
    timings = chunk.get("timings") or {}
    if "prompt_n" in timings:
        # llama-server: prompt tokens evaluated this turn, and those its cache served.
        out["cached"] = int(timings.get("cache_n") or 0)
        out["prompt"] = int(timings["prompt_n"]) + out["cached"]
    elif chunk.get("tokens_evaluated"):
        out["prompt"] = int(chunk["tokens_evaluated"])
    if chunk.get("prompt_eval_count"):
        out["prompt"] = int(chunk["prompt_eval_count"])
    return out


def _with_stop(body: dict, stop: list[str]) -> dict:
    if stop:
        body["stop"] = stop[:4]  # OpenAI's limit; most servers accept more but some refuse
    return body
