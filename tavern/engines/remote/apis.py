"""One small class per remote API: where a turn is sent and what its body holds, how a stream
chunk carries text, reasoning and the finish reason, where the models, the context size and a
token count come from, and what a cancelled turn must tell the server.

`RemoteEngine` keeps what every API shares (the client, retries, notices, the think splitter,
stats) and asks `api_for(profile.api, base)` for the rest. Everything read from a server is
checked for shape here: valid JSON of the wrong shape (`"choices": "x"`, `"content": 5`) raises
`ShapeError` naming the field, which the engine turns into one line naming the server.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, TypeVar

import httpx

from tavern.engines.base import GenerationRequest
from tavern.engines.remote.http import RemoteError, ShapeError
from tavern.engines.remote.profile import CFG_APIS
from tavern.errors import json_kind

Getter = Callable[[str], object]
"""GET a path under the profile's URL and return its JSON, unchecked (raises RemoteError)."""

T = TypeVar("T", str, int, bool)
"""The scalar kinds `field` checks for."""


@dataclass(frozen=True)
class Delta:
    """What one stream chunk carries."""

    text: str = ""
    reasoning: str = ""
    finish: str | None = None


@dataclass(frozen=True)
class ServerInfo:
    """What `load` learns beyond the model names (None: the server did not say)."""

    n_ctx: int | None = None
    chat_template: str | None = None


# -- shape checks ------------------------------------------------------------------------------


_WANT: dict[type[object], str] = {str: "a string", int: "a whole number", bool: "true/false"}


def field(obj: dict[str, object], key: str, kind: type[T], where: str = "") -> T | None:
    """obj[key] when it is of `kind`; None when absent or null; else ShapeError naming it.
    A whole float passes as an int (some servers write counts as 12.0); a bool never does."""
    value = obj.get(key)
    if value is None:
        return None
    if kind is int and isinstance(value, float) and value.is_integer():
        return kind(value)
    if isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
        return value
    raise ShapeError(f"`{where}{key}` is {json_kind(value)}, not {_WANT[kind]}")


def object_field(obj: dict[str, object], key: str, where: str = "") -> dict[str, object] | None:
    """obj[key] when it is an object; None when absent or null; else ShapeError naming it."""
    value = obj.get(key)
    if value is None or isinstance(value, dict):
        return value
    raise ShapeError(f"`{where}{key}` is {json_kind(value)}, not an object")


def list_field(obj: dict[str, object], key: str, where: str = "") -> list[object] | None:
    """obj[key] when it is a list; None when absent or null; else ShapeError naming it."""
    value = obj.get(key)
    if value is None or isinstance(value, list):
        return value
    raise ShapeError(f"`{where}{key}` is {json_kind(value)}, not a list")


def text_field(obj: dict[str, object], key: str, where: str = "") -> str:
    return field(obj, key, str, where) or ""


def as_object(value: object, what: str) -> dict[str, object]:
    if not isinstance(value, dict):
        raise ShapeError(f"{what} is {json_kind(value)}, not an object")
    return value


def usage(chunk: dict[str, object]) -> dict[str, int]:
    """Prompt token counts where a server reports them, whatever its API (OpenAI `usage`,
    llama-server `timings` on its OpenAI endpoints too, Ollama's `prompt_eval_count`)."""
    out: dict[str, int] = {}
    u = object_field(chunk, "usage") or {}
    prompt = field(u, "prompt_tokens", int, "usage.")
    if prompt:
        out["prompt"] = prompt
        details = object_field(u, "prompt_tokens_details", "usage.") or {}
        cached = field(details, "cached_tokens", int, "usage.prompt_tokens_details.")
        if cached:
            out["cached"] = cached
    timings = object_field(chunk, "timings") or {}
    prompt_n = field(timings, "prompt_n", int, "timings.")
    evaluated = field(chunk, "tokens_evaluated", int)
    if prompt_n is not None:
        # llama-server: prompt tokens evaluated this turn, and those its cache served.
        out["cached"] = field(timings, "cache_n", int, "timings.") or 0
        out["prompt"] = prompt_n + out["cached"]
    elif evaluated:
        out["prompt"] = evaluated
    ollama_prompt = field(chunk, "prompt_eval_count", int)
    if ollama_prompt:
        out["prompt"] = ollama_prompt
    return out


def _models_list(answer: object, key: str, name: str, what: str) -> list[str]:
    """The `name` of each entry of answer[key] (OpenAI's data[].id, Ollama's models[].name)."""
    try:
        entries = list_field(as_object(answer, "the answer"), key) or []
        return [text_field(as_object(e, f"`{key}[{i}]`"), name, f"{key}[{i}].") for i, e in enumerate(entries)]
    except ShapeError as err:
        raise ShapeError(f"{what}: {err}") from None  # which of the server's answers was wrong


# -- the APIs ----------------------------------------------------------------------------------


class RemoteApi:
    """The parts of one API; subclasses override what differs."""

    name: ClassVar[str]
    ndjson: ClassVar[bool] = False
    """The stream is newline-delimited JSON (Ollama) rather than SSE."""
    raw_prompt: ClassVar[bool] = True
    counts_joined: ClassVar[bool] = False
    """The token counting endpoint takes many texts joined (llama-server's /tokenize)."""
    length_param: ClassVar[str] = "max_tokens"
    """The body's reply length limit: never dropped, whatever a 400 names."""

    def __init__(self, base: str):
        self.base = base.rstrip("/")

    @property
    def cfg(self) -> bool:
        return self.name in CFG_APIS

    def _v1(self) -> str:
        return "" if self.base.endswith("/v1") else "/v1"

    def models(self, get: Getter) -> list[str]:
        raise NotImplementedError

    def discover(self, get: Getter) -> ServerInfo:
        """The context size and chat template, where the server tells them."""
        return ServerInfo()

    def endpoint(self) -> str:
        """The full URL a turn is POSTed to."""
        raise NotImplementedError

    def body(
        self, request: GenerationRequest, model: str, n_ctx: int, fields: dict[str, object]
    ) -> dict[str, object]:
        raise NotImplementedError

    def delta(self, chunk: dict[str, object]) -> Delta:
        raise NotImplementedError

    def count_request(self, text: str) -> tuple[str, dict[str, object]] | None:
        """(URL, JSON body) of a request counting `text`'s tokens; None: no such endpoint."""
        return None

    def count_value(self, answer: object) -> int:
        raise NotImplementedError

    def cancel(self, client: httpx.Client) -> None:
        """Tell the server a cancelled turn is over (most stop when the client leaves)."""


def _with_stop(body: dict[str, object], stop: list[str]) -> dict[str, object]:
    if stop:
        body["stop"] = stop[:4]  # OpenAI's limit; most servers accept more but some refuse
    return body


def _openai_choice(chunk: dict[str, object]) -> dict[str, object] | None:
    choices = list_field(chunk, "choices")
    if not choices:
        return None  # a usage-only chunk (choices: [])
    return as_object(choices[0], "`choices[0]`")


class OpenAIText(RemoteApi):
    name = "openai-text"

    def models(self, get: Getter) -> list[str]:
        return _models_list(get(self._v1() + "/models"), "data", "id", self._v1() + "/models")

    def endpoint(self) -> str:
        return self.base + self._v1() + "/completions"

    def body(
        self, request: GenerationRequest, model: str, n_ctx: int, fields: dict[str, object]
    ) -> dict[str, object]:
        head = {"model": model} if model else {}
        body = {**head, "prompt": request.prompt, "max_tokens": request.max_tokens, "stream": True, **fields}
        return _with_stop(body, list(request.stop))

    def delta(self, chunk: dict[str, object]) -> Delta:
        c = _openai_choice(chunk)
        if c is None:
            return Delta()
        return Delta(text_field(c, "text", "choices[0]."), "", field(c, "finish_reason", str, "choices[0]."))

    def count_request(self, text: str) -> tuple[str, dict[str, object]] | None:
        # llama-cpp-python's server; other OpenAI-style servers answer 404 once.
        return self.base.removesuffix("/v1") + "/extras/tokenize/count", {"input": text}

    def count_value(self, answer: object) -> int:
        return _count(answer, "count")


class OpenAIChat(OpenAIText):
    name = "openai-chat"
    raw_prompt = False

    def endpoint(self) -> str:
        return self.base + self._v1() + "/chat/completions"

    def body(
        self, request: GenerationRequest, model: str, n_ctx: int, fields: dict[str, object]
    ) -> dict[str, object]:
        head = {"model": model} if model else {}
        messages = request.messages or [{"role": "user", "content": request.prompt}]
        body = {**head, "messages": messages, "max_tokens": request.max_tokens, "stream": True, **fields}
        return _with_stop(body, list(request.stop))

    def delta(self, chunk: dict[str, object]) -> Delta:
        c = _openai_choice(chunk)
        if c is None:
            return Delta()
        d = object_field(c, "delta", "choices[0].") or {}
        where = "choices[0].delta."
        reasoning = text_field(d, "reasoning_content", where) or text_field(d, "reasoning", where)
        return Delta(
            text_field(d, "content", where), reasoning, field(c, "finish_reason", str, "choices[0].")
        )


class TextGen(OpenAIText):
    """text-generation-webui: OpenAI text completions plus its own fields (CFG) and counter."""

    name = "textgen"

    def count_request(self, text: str) -> tuple[str, dict[str, object]] | None:
        return self.base.removesuffix("/v1") + "/v1/internal/token-count", {"text": text}

    def count_value(self, answer: object) -> int:
        return _count(answer, "length")


class LlamaCpp(RemoteApi):
    """llama-server's native /completion, which keeps the prompt's cache (`cache_prompt`)."""

    name = "llamacpp"
    counts_joined = True
    length_param = "n_predict"

    def models(self, get: Getter) -> list[str]:
        props = as_object(get("/props"), "the answer of /props")
        return [text_field(props, "model_path") or text_field(props, "model_alias")]

    def discover(self, get: Getter) -> ServerInfo:
        props = as_object(get("/props"), "the answer of /props")
        settings = object_field(props, "default_generation_settings") or {}
        n_ctx = field(settings, "n_ctx", int, "default_generation_settings.")
        return ServerInfo(n_ctx=n_ctx or None, chat_template=text_field(props, "chat_template") or None)

    def endpoint(self) -> str:
        return self.base + "/completion"

    def body(
        self, request: GenerationRequest, model: str, n_ctx: int, fields: dict[str, object]
    ) -> dict[str, object]:
        return {
            "prompt": request.prompt,
            "n_predict": request.max_tokens,
            "stream": True,
            "cache_prompt": True,
            "n_keep": -1,
            "stop": list(request.stop),
            **fields,
        }

    def delta(self, chunk: dict[str, object]) -> Delta:
        finish = None
        if field(chunk, "stop", bool):
            # stop_type "limit": n_predict reached, which callers (the loop guard) tell apart.
            finish = "length" if text_field(chunk, "stop_type") == "limit" else "stop"
        return Delta(text_field(chunk, "content"), "", finish)

    def count_request(self, text: str) -> tuple[str, dict[str, object]] | None:
        return self.base + "/tokenize", {"content": text}

    def count_value(self, answer: object) -> int:
        tokens = list_field(as_object(answer, "the answer of /tokenize"), "tokens")
        if tokens is None:
            raise ShapeError("the answer of /tokenize has no `tokens`")
        return len(tokens)


class Kobold(RemoteApi):
    name = "kobold"
    length_param = "max_length"

    def models(self, get: Getter) -> list[str]:
        return [text_field(as_object(get("/api/v1/model"), "the answer of /api/v1/model"), "result")]

    def discover(self, get: Getter) -> ServerInfo:
        try:
            answer = as_object(get("/api/extra/true_max_context_length"), "the context length answer")
            return ServerInfo(n_ctx=field(answer, "value", int) or None)
        except RemoteError:
            return ServerInfo()  # an older KoboldCpp: the profile's context stands

    def endpoint(self) -> str:
        return self.base + "/api/extra/generate/stream"

    def body(
        self, request: GenerationRequest, model: str, n_ctx: int, fields: dict[str, object]
    ) -> dict[str, object]:
        return {
            "prompt": request.prompt,
            "max_length": request.max_tokens,
            "stop_sequence": list(request.stop),
            "max_context_length": n_ctx,
            **fields,
        }

    def delta(self, chunk: dict[str, object]) -> Delta:
        return Delta(text_field(chunk, "token"), "", field(chunk, "finish_reason", str))

    def count_request(self, text: str) -> tuple[str, dict[str, object]] | None:
        return self.base + "/api/extra/tokencount", {"prompt": text}

    def count_value(self, answer: object) -> int:
        return _count(answer, "value")

    def cancel(self, client: httpx.Client) -> None:
        # KoboldCpp keeps generating after the client leaves unless told to stop.
        try:
            client.post(self.base + "/api/extra/abort", json={}, timeout=2)
        except httpx.HTTPError:
            pass


class Ollama(RemoteApi):
    """Ollama's /api/generate with the raw prompt; the samplers go in `options`."""

    name = "ollama"
    ndjson = True
    length_param = "num_predict"

    def models(self, get: Getter) -> list[str]:
        return _models_list(get("/api/tags"), "models", "name", "/api/tags")

    def endpoint(self) -> str:
        return self.base + "/api/generate"

    def body(
        self, request: GenerationRequest, model: str, n_ctx: int, fields: dict[str, object]
    ) -> dict[str, object]:
        head = {"model": model} if model else {}
        options = {"num_predict": request.max_tokens, "stop": list(request.stop), "num_ctx": n_ctx, **fields}
        return {**head, "prompt": request.prompt, "raw": True, "stream": True, "options": options}

    def delta(self, chunk: dict[str, object]) -> Delta:
        finish = None
        if field(chunk, "done", bool):
            finish = "length" if text_field(chunk, "done_reason") == "length" else "stop"
        return Delta(text_field(chunk, "response"), text_field(chunk, "thinking"), finish)


def _count(answer: object, key: str) -> int:
    n = field(as_object(answer, "the count answer"), key, int)
    if n is None:
        raise ShapeError(f"the count answer has no `{key}`")
    return n


APIS: dict[str, type[RemoteApi]] = {
    cls.name: cls for cls in (OpenAIChat, OpenAIText, TextGen, LlamaCpp, Kobold, Ollama)
}


def api_for(name: str, base: str) -> RemoteApi:
    try:
        return APIS[name](base)
    except KeyError:
        raise RemoteError(f"unknown API {name!r} (one of: {', '.join(APIS)})") from None
