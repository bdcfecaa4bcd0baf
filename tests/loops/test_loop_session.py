"""Loop countermeasures on the real engine: a run-on is stopped and trimmed, and a reply that
repeats the last one is written again without its opening."""

from __future__ import annotations

import threading

import pytest

from tavern.engines.base import Finished, GenerationRequest
from tavern.loop_guard import Restart, guarded_generate
from tavern.loops import words

@pytest.fixture(scope="module")
def engine():
    from tavern.engines.local import LocalEngine
    from tavern.engines.models import default_model_path

    eng = LocalEngine(default_model_path(), n_ctx=2048)
    eng.load()
    yield eng
    eng.unload()


def test_a_reply_that_repeats_the_last_one_is_written_again_without_its_opening(engine) -> None:
    from tavern.config import LoopSettings
    from tavern.engines.samplers import SamplerSettings

    prompt = (
        "<|im_start|>system\nWrite Mira's next reply. Mira is a barkeep in a harbour town.<|im_end|>\n"
        "<|im_start|>user\nWhat is the news in town tonight?<|im_end|>\n<|im_start|>assistant\n"
    )
    request = GenerationRequest(prompt=prompt, max_tokens=48, sampler=SamplerSettings(greedy=True), add_bos=False)
    # Greedy decoding writes the same reply every time: make that reply the last one.
    previous = [e for e in engine.generate(request) if isinstance(e, Finished)][0].text
    assert len(words(previous)) >= 8
    events = list(guarded_generate(engine, request, threading.Event(), LoopSettings(), earlier=[previous]))
    final = events[-1]
    assert isinstance(final, Finished)
    restarts = [e for e in events if isinstance(e, Restart)]
    assert len(restarts) == 1  # the screen is told that the text so far is replaced
    record = final.stats.loop
    assert record["action"] == "regenerated" and "opening" in record["across"]["reasons"]
    assert record["message"].startswith("loop: reply repeated the last ones")
    assert words(final.text)[:1] != words(previous)[:1]  # the repeated opening is gone
    assert final.text.strip()
    streamed = "".join(e.text for e in events[events.index(restarts[0]) + 1 : -1])
    assert streamed == final.text or final.text.startswith(streamed)


def test_a_run_on_is_stopped_within_a_token_and_trimmed(engine) -> None:
    from tavern.config import LoopSettings
    from tavern.engines.samplers import SamplerSettings

    prompt = "He was a blacksmith, and he made swords. " * 4
    request = GenerationRequest(prompt=prompt, max_tokens=64, sampler=SamplerSettings(greedy=True))
    events = list(guarded_generate(engine, request, threading.Event(), LoopSettings()))
    final = events[-1]
    assert final.stats.stop_reason == "loop" and final.stats.gen_tokens < 64
    assert final.stats.loop["action"] == "trimmed"
    streamed = "".join(e.text for e in events[:-1])
    assert len(final.text) < len(streamed) and streamed.startswith(final.text)


def test_turning_loops_off_passes_the_engine_through(engine) -> None:
    from tavern.config import LoopSettings
    from tavern.engines.samplers import SamplerSettings

    request = GenerationRequest(prompt="la la la la la la la la la la la la", max_tokens=24, sampler=SamplerSettings(greedy=True))
    off = list(guarded_generate(engine, request, threading.Event(), LoopSettings(enabled=False), earlier=["x"]))
    assert off[-1].stats.loop is None and off[-1].stats.stop_reason != "loop"
