"""The embedded engine on the real SmolLM2 model: streaming, stats, cache reuse, cancel, errors."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from tavern.engines.base import Finished, GenerationRequest, Token
from tavern.engines.local import LocalEngine
from tavern.engines.reuse_plan import plan_reuse
from tavern.engines.samplers import SamplerSettings
from tavern.errors import ModelLoadError

GREEDY = SamplerSettings(greedy=True)
SYSTEM = (
    "<|im_start|>system\nYou are Mira, the innkeeper of the Rusty Lantern. "
    + "The inn is warm. " * 30
    + "<|im_end|>\n"
)


def turn(i: int) -> str:
    return f"<|im_start|>user\nUser: Tell me a story about lantern number {i}.<|im_end|>\n"


@pytest.fixture(scope="module")
def engine(model_path: Path) -> LocalEngine:
    e = LocalEngine(model_path, n_ctx=1024, cache_reuse=16)
    e.load()
    yield e
    e.unload()


def run(
    engine: LocalEngine, prompt: str, cancel: threading.Event | None = None, **kw
) -> tuple[list[str], Finished]:
    tokens: list[str] = []
    final = None
    req = GenerationRequest(
        prompt=prompt, sampler=kw.pop("sampler", GREEDY), max_tokens=kw.pop("max_tokens", 16), **kw
    )
    for ev in engine.generate(req, cancel):
        if isinstance(ev, Token):
            tokens.append(ev.text)
        else:
            final = ev
    assert final is not None
    return tokens, final


def test_streams_a_reply_with_stats(engine: LocalEngine) -> None:
    tokens, final = run(engine, SYSTEM + turn(0) + "<|im_start|>assistant\n")
    assert final.error is None
    assert final.text.strip()
    assert "".join(tokens) == final.text  # the stream adds up to the reply
    assert len(tokens) > 1  # streamed, not one lump
    s = final.stats
    assert s.prompt_tokens == s.cached_tokens + s.evaluated_tokens
    assert s.gen_tokens > 0 and s.gen_tps > 0 and s.ttft_ms > 0


def test_next_turn_reuses_the_prefix(engine: LocalEngine) -> None:
    first = SYSTEM + turn(1) + "<|im_start|>assistant\n"
    _, a = run(engine, first)
    second = first + a.text + "<|im_end|>\n" + turn(2) + "<|im_start|>assistant\n"
    _, b = run(engine, second)
    assert b.stats.cached_tokens >= a.stats.prompt_tokens - 2
    assert b.stats.evaluated_tokens < 40


def test_dropping_old_messages_shifts_the_cache_instead_of_reevaluating(engine: LocalEngine) -> None:
    turns = [
        turn(i) + f"<|im_start|>assistant\nStory {i} is about a lantern.<|im_end|>\n" for i in range(10, 16)
    ]
    full = SYSTEM + "".join(turns) + turn(99) + "<|im_start|>assistant\n"
    run(engine, full)
    window = SYSTEM + "".join(turns[2:]) + turn(99) + "<|im_start|>assistant\n"  # two oldest left
    _, final = run(engine, window)
    s = final.stats
    assert s.shifted_tokens > 0
    assert s.evaluated_tokens <= 2  # only the logits of the last token are recomputed
    assert final.text.strip()


def test_cancel_stops_within_a_token(engine: LocalEngine) -> None:
    cancel = threading.Event()
    req = GenerationRequest(
        prompt=SYSTEM + turn(3) + "<|im_start|>assistant\n", sampler=GREEDY, max_tokens=200
    )
    seen = 0
    final = None
    for ev in engine.generate(req, cancel):
        if isinstance(ev, Token):
            seen += 1
            cancel.set()
        else:
            final = ev
    assert final is not None and final.stats.stop_reason == "cancelled"
    assert final.stats.gen_tokens <= 2
    # The engine stays usable and its cache valid after a cancel.
    _, again = run(engine, SYSTEM + turn(3) + "<|im_start|>assistant\n")
    assert again.error is None and again.stats.cached_tokens > 0


def test_stop_string_ends_the_reply_and_is_not_shown(engine: LocalEngine) -> None:
    prompt = "Count: one, two, three, four, five, six, seven, eight, nine, ten. Again: one, two,"
    tokens, final = run(engine, prompt, stop=["five"], max_tokens=30)
    assert "five" not in final.text and "five" not in "".join(tokens)
    assert final.stats.stop_reason == "stop"


def test_prompt_longer_than_context_is_an_error_not_a_crash(engine: LocalEngine) -> None:
    _, final = run(engine, "word " * 3000)
    assert final.error and "context" in final.error


def test_missing_and_corrupt_models_fail_with_one_line(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="not found"):
        LocalEngine(tmp_path / "nope.gguf").load()
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"this is not a model")
    with pytest.raises(ModelLoadError, match="not a GGUF"):
        LocalEngine(bad).load()
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(b"GGUF" + b"\x03\x00\x00\x00" + b"\x00" * 40)
    with pytest.raises(ModelLoadError) as err:
        LocalEngine(truncated).load()
    assert "\n" not in str(err.value)


def test_plan_reuse_finds_the_chunk_after_a_deleted_span() -> None:
    cache = list(range(100))
    prompt = cache[:10] + cache[40:] + [500, 501]
    plan = plan_reuse(cache, prompt, min_chunk=16)
    assert plan.prefix == 10
    assert plan.moves == [(40, 10, 60)]
    assert plan.n_past == 70
    # An insertion stops the walk: what follows is evaluated.
    inserted = cache[:10] + [900] * 5 + cache[10:]
    assert plan_reuse(cache, inserted, 16).n_past == 10
    # Short coincidental matches are not worth a shift.
    assert plan_reuse(cache, cache[:10] + cache[50:55] + [7] * 20, 16).moves == []
