"""`RemoteEngine`: the Engine protocol over a connection profile.

What differs between APIs (endpoint and body, how a chunk carries text, models, context
discovery, the token counting endpoint, the cancel hook) is one small class each in
tavern/engines/remote/apis.py. Shared here: the client, retries before the first token, dropping
a sampler the server names in a 400, reasoning kept apart, the client-side limits a hostile
server cannot talk its way past (the reply length, an idle timeout, a deadline, the longest
stream line), and a partial reply kept on any failure.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Generator, Iterable, Iterator, Sized
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import httpx

from tavern.engines.base import Capabilities, Engine, Event, Finished, GenerationRequest, Token, TurnStats
from tavern.engines.remote.apis import Delta, api_for, usage
from tavern.engines.remote.http import (
    DONE,
    MAX_BODY,
    MAX_ERROR_BODY,
    MAX_LINE,
    HtmlError,
    RemoteError,
    ShapeError,
    StreamClock,
    StreamError,
    iter_ndjson,
    iter_sse,
    json_answer,
    looks_html,
    read_capped,
    scrub,
    split_lines,
    status_error,
    transport_error,
)
from tavern.engines.remote.params import map_sampler
from tavern.engines.remote.profile import IgnoredParams, Profile

RETRIES = 2
BACKOFF_S = 0.5
COUNT_WORKERS = 8
"""Concurrent count requests where a server counts one text per request."""
CFG_UNAVAILABLE = "CFG is unavailable on this backend ({api}): the negative prompt is not applied"
OVERRAN = "the server sent more than the {limit} tokens asked for: the reply was stopped there"


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


@dataclass
class _Turn:
    """What one `generate` has streamed so far (kept across retries and on any failure)."""

    t0: float
    split: ThinkSplitter = field(default_factory=ThinkSplitter)
    text: str = ""
    reasoning: str = ""
    tokens: int = 0
    """Token events yielded (the reply's gen_tokens)."""
    pieces: int = 0
    """Chunks that carried text or reasoning: what the client-side length limit counts."""
    ttft: float = 0.0
    finish: str | None = None
    usage: dict[str, int] = field(default_factory=dict)


class RemoteEngine(Engine):
    def __init__(
        self, profile: Profile, n_ctx: int = 4096, store: IgnoredParams | None = None, timeout: float = 120.0
    ):
        self.profile = profile
        self.name = profile.api
        self.api = api_for(profile.api, profile.url)
        self._capabilities = Capabilities(
            raw_prompt=self.api.raw_prompt,
            cfg=self.api.cfg,
            counts_many=True,
            counts_joined=self.api.counts_joined,
        )
        self._n_ctx = n_ctx
        self._store = store  # remembers rejected parameters for the profile (BackendStore)
        # The read timeout never exceeds the idle timeout: a server that sends nothing at all
        # is then caught as soon as one that sends only keep-alives.
        self._timeout = httpx.Timeout(min(timeout, profile.idle_timeout_s), connect=5.0)
        self._client: httpx.Client | None = None
        self._connected = False
        self._meta: dict[str, str] = {}
        self._model = profile.model
        self._counts: dict[str, int] = {}
        self.count_method = "estimate"
        self.notices: list[str] = []
        """Things the user should see once: samplers the API cannot take, ignored parameters.
        A front takes them with `take_notices`; each is added once per engine."""
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

    def _get(self, path: str) -> object:
        """The JSON a GET answers, read no further than MAX_BODY; HTML, other text and a wrong
        shape (checked by the API class) are one line naming the URL."""
        return self._json("GET", self.base + path)

    def _json(self, method: str, url: str, payload: dict[str, object] | None = None) -> object:
        try:
            with self.client.stream(method, url, json=payload) as resp:
                body = read_capped(resp, MAX_ERROR_BODY if resp.status_code >= 400 else MAX_BODY, url)
        except httpx.HTTPError as err:
            raise transport_error(err, url, self.profile.key) from None
        if resp.status_code >= 400:
            raise status_error(resp, body, url, self.profile.key, [])
        return json_answer(resp, body, url)

    def list_models(self) -> list[str]:
        try:
            return self.api.models(self._get)
        except StreamError as err:
            raise RemoteError(f"{self.base}: {err}") from None

    def load(self) -> None:
        """Connect: learn the model, its context and its template where the server says."""
        models = self.list_models()
        if not self._model and models:
            self._model = models[0]
        try:
            info = self.api.discover(self._get)
        except StreamError as err:
            raise RemoteError(f"{self.base}: {err}") from None
        # llama-server's /props chat template (the prompt format for text APIs).
        if info.chat_template:
            self._meta["tokenizer.chat_template"] = info.chat_template
        if info.n_ctx:
            self._n_ctx = info.n_ctx
        self._connected = True


    def unload(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        self._connected = False

    @property
    def loaded(self) -> bool:
        return self._connected

    @property
    def capabilities(self) -> Capabilities:
        return self._capabilities

    @property
    def format_hint(self) -> str:
        return self.profile.format

    def take_notices(self) -> list[str]:
        out, self.notices = self.notices, []
        return out

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
        # capabilities.token_ids is False: callers count with count_tokens instead.
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
        if self.count_method == "estimate" and self._counts:
            return None  # the server had no endpoint the first time: don't ask again
        asked = self.api.count_request(text)
        if asked is None:
            return None
        url, payload = asked
        n = self.api.count_value(self._json("POST", url, payload))  # bounded: a count is small
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
            counts = self._joined_counts(todo) if self.api.counts_joined else None
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
        asked = self.api.count_request("".join(texts))
        if asked is None:
            return None
        url, payload = asked
        try:
            sizes = _piece_sizes(self._json("POST", url, {**payload, "with_pieces": True}))
        except (RemoteError, httpx.HTTPError, ValueError):
            sizes = None
        if sizes is None:
            return None  # any answer but the expected one: count one text at a time
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

    def _fields(self, request: GenerationRequest) -> dict[str, object]:
        """The sampler's fields under the API's names (and CFG's where the API takes it),
        less those the server rejected before; what the API cannot take is a notice."""
        fields, unsupported = map_sampler(request.sampler, self.profile.api)
        for name in unsupported:
            self._notice(f"{self.profile.api} has no {name}: not applied")
        for name in self.profile.ignored:
            fields.pop(name, None)
        if request.negative_prompt is not None and request.guidance_scale != 1.0:
            if self._capabilities.cfg:
                # text-generation-webui's own names (as SillyTavern sends them): the whole
                # negative prompt, formatted like the prompt, and the scale.
                fields["guidance_scale"] = request.guidance_scale
                fields["negative_prompt"] = request.negative_prompt
            else:
                self._notice(CFG_UNAVAILABLE.format(api=self.profile.api))
        return fields

    def generate(self, request: GenerationRequest, cancel: threading.Event | None = None) -> Iterator[Event]:
        cancel = cancel or threading.Event()
        turn = _Turn(time.perf_counter())
        fields = self._fields(request)
        body = self.api.body(request, self._model, self._n_ctx, fields)
        clock = StreamClock(self.profile.idle_timeout_s, self.profile.deadline_s)
        error = yield from self._attempts(request, body, list(fields), turn, clock, cancel)
        if turn.finish == "cancelled":
            self.api.cancel(self.client)
        out, more = turn.split.flush()
        turn.text += out
        turn.reasoning += more
        if out:
            yield Token(out)
        yield self._finished(turn, error)

    def _attempts(
        self, request: GenerationRequest, body: dict[str, object], droppable: list[str], turn: _Turn,
        clock: StreamClock, cancel: threading.Event,
    ) -> Generator[Token, None, str | None]:
        """Stream the reply, retrying what is safe before the first token; the error line or None."""
        url, key, tries = self.api.endpoint(), self.profile.key, 0
        while True:
            try:
                yield from self._attempt(url, request, body, droppable, turn, clock, cancel)
                return None
            except (RemoteError, httpx.HTTPError) as err:
                rerr = err if isinstance(err, RemoteError) else transport_error(err, url, key)
                if turn.text or turn.reasoning:
                    return f"{scrub(str(rerr), key)} (partial reply kept)"
                if self._drop(rerr, body, droppable):
                    continue
                if rerr.retriable and tries < RETRIES and not cancel.is_set() and not clock.expired():
                    tries += 1
                    time.sleep(BACKOFF_S * 2 ** (tries - 1))
                    continue
                return scrub(str(rerr), key)

    def _attempt(
        self, url: str, request: GenerationRequest, body: dict[str, object], droppable: list[str], turn: _Turn,
        clock: StreamClock, cancel: threading.Event,
    ) -> Iterator[Token]:
        with self.client.stream("POST", url, json=body) as resp:
            code = resp.status_code
            if code >= 400:
                message = read_capped(resp, MAX_ERROR_BODY, url)
                raise status_error(resp, message, url, self.profile.key, droppable)
            if looks_html(b"", resp.headers.get("content-type", "")):
                raise RemoteError(f"{url}: the server answered with HTML, not JSON (status {code})")
            lines = split_lines(clock.watch(resp.iter_bytes(), cancel), MAX_LINE)
            chunks = iter_ndjson(lines) if self.api.ndjson else iter_sse(lines)
            try:
                for chunk in chunks:
                    yield from self._take(chunk, request, turn, clock)
                    if cancel.is_set():
                        turn.finish = "cancelled"
                    if turn.finish in ("cancelled", "overran"):
                        break  # leaving the `with` closes the stream at once
            except HtmlError as err:
                raise RemoteError(f"{url}: {err} (status {code})") from None
            except ShapeError as err:
                raise RemoteError(f"{url}: a chunk of the wrong shape: {err}") from None
            except StreamError as err:
                raise RemoteError(f"{url}: {err}") from None
            if turn.finish is None and cancel.is_set():
                turn.finish = "cancelled"  # the watch ended the stream while it sent nothing
            if turn.finish is None:
                # A stream that just stops (no finish reason, no [DONE]) was cut off.
                raise RemoteError(f"{url}: the server closed the connection mid-reply")
            if turn.finish == "overran":
                turn.finish = "length"
                self._notice(OVERRAN.format(limit=request.max_tokens))

    def _take(self, chunk: dict[str, object], request: GenerationRequest, turn: _Turn,
              clock: StreamClock) -> Iterator[Token]:
        """One chunk into the turn: its text streamed, its reasoning kept apart."""
        if chunk is DONE:
            turn.finish = turn.finish or "stop"  # [DONE] after finish_reason "length" keeps it
            return
        turn.usage.update(usage(chunk))
        d: Delta = self.api.delta(chunk)
        if d.text or d.reasoning:
            turn.pieces += 1
            if 0 < request.max_tokens < turn.pieces:
                # The server ignores the length limit: the reply ends here, as if it had kept it.
                turn.finish = "overran"
                return
            clock.progress()
        turn.finish = d.finish or turn.finish
        out, more = turn.split.feed(d.text) if d.text else ("", "")
        turn.reasoning += d.reasoning + more
        if out:
            if turn.tokens == 0:
                turn.ttft = (time.perf_counter() - turn.t0) * 1000
            turn.tokens += 1
            turn.text += out
            yield Token(out)

    def _drop(self, rerr: RemoteError, body: dict[str, object], droppable: list[str]) -> bool:
        """Version skew: a 400 named a sampler the server does not take. Drop it for good and
        retry; only the sampler's fields are candidates, never the prompt, the stop strings or
        the length limit (a 400 about those is the server's message, shown as it is)."""
        name = rerr.param
        if not name or name not in droppable or name == self.api.length_param:
            return False
        options = body.get("options")
        if name not in body and not (isinstance(options, dict) and name in options):
            return False
        body.pop(name, None)
        if isinstance(options, dict):
            options.pop(name, None)
        self._notice(f"the server ignored the setting {name!r}: {rerr} (no longer sent)")
        if self._store is not None:
            self._store.remember_ignored(self.profile.name, name)
        self.profile.ignored.append(name)
        return True

    def _finished(self, turn: _Turn, error: str | None) -> Finished:
        total = (time.perf_counter() - turn.t0) * 1000
        gen_s = max(total - turn.ttft, 1e-6) / 1000
        if error:
            reason = "error"
        else:
            reason = turn.finish if turn.finish in ("cancelled", "length") else "eos"
        prompt, cached = turn.usage.get("prompt", 0), turn.usage.get("cached", 0)
        stats = TurnStats(prompt_tokens=prompt, cached_tokens=cached, evaluated_tokens=prompt - cached,
                          ttft_ms=turn.ttft, gen_tokens=turn.tokens,
                          gen_tps=turn.tokens / gen_s if turn.tokens else 0.0, total_ms=total,
                          stop_reason=reason)
        extra: dict[str, object] = {"reasoning": turn.reasoning.strip()} if turn.reasoning.strip() else {}
        return Finished(text=turn.text, stats=stats, error=error, extra=extra)

    def _notice(self, line: str) -> None:
        if line not in self._said:
            self._said.add(line)
            self.notices.append(line)


def _piece_sizes(answer: object) -> list[int] | None:
    """The size in bytes of each token's piece in llama-server's /tokenize answer `with_pieces`
    (a string, or a list of byte values where a piece is not whole UTF-8); None for an answer of
    any other shape."""
    if not isinstance(answer, dict) or "tokens" not in answer:
        return None
    tokens = answer["tokens"]
    if not isinstance(tokens, Iterable):
        return None
    sizes = []
    for token in tokens:
        if not isinstance(token, dict) or "piece" not in token:
            return None
        piece = token["piece"]
        if isinstance(piece, str):
            sizes.append(len(piece.encode("utf-8")))  # a lone surrogate: ValueError, for the caller
        elif isinstance(piece, Sized):
            sizes.append(len(piece))
        else:
            return None
    return sizes
