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
    # Nothing was cut from the rewrite, so what streamed after the restart is the reply kept.
    assert "in_reply" not in record and "dropped_chars" not in record
    streamed = "".join(e.text for e in events[events.index(restarts[0]) + 1 : -1])
    assert streamed == final.text


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


def test_the_retry_keeps_the_negative_prompt_in_step_with_the_reply(engine) -> None:
    """With a negative prompt (CFG) the retry's first token goes to both sequences: the rest of
    the reply is what guidance writes after that token, not a mix of two positions."""
    from tavern.config import LoopSettings
    from tavern.engines.samplers import SamplerSettings
    from tavern.loop_guard import stronger_sampler

    system = "<|im_start|>system\nWrite Mira's next reply. Mira is a barkeep in a harbour town.<|im_end|>\n"
    turn = "<|im_start|>user\nWhat is the news in town tonight?<|im_end|>\n<|im_start|>assistant\n"
    negative = "<|im_start|>system\nMira talks about fish and boats.<|im_end|>\n" + turn
    request = GenerationRequest(
        prompt=system + turn, max_tokens=32, sampler=SamplerSettings(greedy=True), add_bos=False,
        negative_prompt=negative, guidance_scale=2.0,
    )
    first = [e for e in engine.generate(request) if isinstance(e, Finished)][0]
    assert first.error is None and first.stats.cfg_prompt_tokens
    events = list(guarded_generate(engine, request, threading.Event(), LoopSettings(), earlier=[first.text]))
    final = events[-1]
    assert final.error is None and final.stats.loop["action"] == "regenerated"
    restart = next(i for i, e in enumerate(events) if isinstance(e, Restart))
    head = events[restart + 1].text  # the retry's first token, drawn with the opening banned
    assert final.text.startswith(head) and head.strip()
    # The same continuation asked for directly: both prompts carry the first token.
    direct = GenerationRequest(
        prompt=request.prompt + head, max_tokens=31, add_bos=False,
        sampler=stronger_sampler(request.sampler, LoopSettings()),
        negative_prompt=negative + head, guidance_scale=2.0,
    )
    expected = [e for e in engine.generate(direct) if isinstance(e, Finished)][0].text
    rest = final.text[len(head) :]
    assert rest.strip() and expected.startswith(rest)  # equal, or trimmed by the run-on check


def test_the_retry_opens_with_another_word_even_after_an_asterisk(engine) -> None:
    """The reply opened "*leans in on a comms device*" like the last one; "*" is not the word,
    so the ban holds past it: the retry's first word is another one ("*smiles*")."""
    from tavern.config import LoopSettings
    from tavern.engines.samplers import SamplerSettings

    prompt = (
        "<|im_start|>system\nWrite Mira's next reply. Mira is a barkeep in a harbour town. "
        "Write her actions between asterisks.<|im_end|>\n<|im_start|>user\nHello!<|im_end|>\n"
        "<|im_start|>assistant\n*smiles warmly* Welcome to the Rusty Lantern, stranger!<|im_end|>\n"
        "<|im_start|>user\nWhat is the news in town tonight?<|im_end|>\n<|im_start|>assistant\n"
    )
    request = GenerationRequest(prompt=prompt, max_tokens=16, sampler=SamplerSettings(greedy=True), add_bos=False)
    # The reply as the guarded call will first write it: from a warm cache (the prompt already
    # in the cells). A cold first call decodes the prompt in one batch, and on some llama.cpp
    # builds (no AMX) that batch's rounding gives another greedy reply than the warm one.
    list(engine.generate(request))
    previous = [e for e in engine.generate(request) if isinstance(e, Finished)][0].text
    assert previous.startswith("*")  # the case this test is about: the opening starts with a lead
    events = list(guarded_generate(engine, request, threading.Event(), LoopSettings(), earlier=[previous]))
    final = events[-1]
    assert final.stats.loop["action"] == "regenerated"
    assert words(final.text)[:1] != words(previous)[:1]
    assert not final.stats.loop["still_repeats"]
