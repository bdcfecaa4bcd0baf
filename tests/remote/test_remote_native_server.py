"""llama.cpp's own llama-server (built from the llama.cpp that llama-cpp-python vendors, by
benchmarks/build_llama_server.sh): the native `/completion` path and counting many pieces in
one `/tokenize`. Skips, saying why, where the binary is not built."""

from __future__ import annotations

from tavern.backends import Profile
from tavern.engines.base import Finished, GenerationRequest, Token
from tavern.engines.remote.engine import RemoteEngine
from tavern.engines.samplers import SamplerSettings

PROMPT = "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"


def _engine(url: str) -> RemoteEngine:
    engine = RemoteEngine(Profile(name="native", api="llamacpp", url=url))
    engine.load()
    return engine


def test_native_completion_streams_with_the_servers_template_and_context(native_llama_server) -> None:  # noqa: F811
    engine = _engine(native_llama_server)
    assert engine.context_size == 2048  # from /props, not the settings
    assert "im_start" in engine.metadata().get("tokenizer.chat_template", "")  # the model's own template
    req = GenerationRequest(prompt=PROMPT, max_tokens=12, stop=["<|im_end|>"],
                            sampler=SamplerSettings(temperature=0.0, seed=1))
    events = list(engine.generate(req))
    final = events[-1]
    assert isinstance(final, Finished) and final.error is None
    assert "".join(e.text for e in events if isinstance(e, Token)) == final.text
    assert "Paris" in final.text
    assert final.stats.prompt_tokens == 16  # llama-server's timings reach the turn's stats
    # Same prompt again: llama-server serves it from its cache (cache_prompt).
    again = list(engine.generate(req))[-1]
    assert again.error is None, again.error
    assert again.text == final.text, again.stats
    assert again.stats.cached_tokens > 0 and again.stats.evaluated_tokens < final.stats.evaluated_tokens


def test_many_pieces_are_counted_in_one_request(native_llama_server) -> None:  # noqa: F811
    engine = _engine(native_llama_server)
    pieces = [f"<|im_start|>{'user' if i % 2 else 'assistant'}\nMessage {i}: the tide is {'high' * (i % 3 + 1)}."
              f"<|im_end|>\n" for i in range(40)]
    before = engine.http_requests
    counts = engine.count_tokens_many(pieces)
    assert engine.http_requests - before == 1
    # Each piece's count is the one llama-server gives it alone (pieces meet at special tokens).
    alone = RemoteEngine(Profile(name="alone", api="llamacpp", url=native_llama_server))
    assert counts == [alone.count_tokens(p) for p in pieces]
    # Known pieces cost nothing the next time; a new one costs one request.
    engine.count_tokens_many(pieces + ["<|im_start|>user\nA new one.<|im_end|>\n"])
    assert engine.http_requests - before == 2
