"""Classifier-free guidance on the real engine: a negative prompt changes the reply, runs on its
own sequence beside the chat, and costs no full re-evaluation turn after turn."""

from __future__ import annotations

from pathlib import Path

import pytest

from tavern.engines.base import Finished, GenerationRequest
from tavern.engines.local import LocalEngine
from tavern.engines.samplers import SamplerSettings

GREEDY = SamplerSettings(greedy=True)
SYSTEM = "<|im_start|>system\nYou are Mira, the innkeeper of the Rusty Lantern.<|im_end|>\n"
NEGATIVE = "<|im_start|>system\nTalk about fish and boats.<|im_end|>\n"


def turn(i: int) -> str:
    return f"<|im_start|>user\nUser: Tell me about the sea, part {i}.<|im_end|>\n<|im_start|>assistant\nMira:"


def run(engine: LocalEngine, prompt: str, negative: str | None, scale: float) -> Finished:
    req = GenerationRequest(
        prompt=prompt, max_tokens=24, sampler=GREEDY, negative_prompt=negative, guidance_scale=scale
    )
    final = None
    for ev in engine.generate(req):
        if isinstance(ev, Finished):
            final = ev
    assert final is not None and final.error is None, final and final.error
    return final


@pytest.fixture(scope="module")
def engine(model_path: Path) -> LocalEngine:
    e = LocalEngine(model_path, n_ctx=2048, cache_reuse=16)
    e.load()
    yield e
    e.unload()


def test_a_negative_prompt_changes_the_reply(engine: LocalEngine) -> None:
    prompt = SYSTEM + turn(0)
    plain = run(engine, prompt, None, 1.0)
    guided = run(engine, prompt, SYSTEM + NEGATIVE + turn(0), 3.0)
    assert guided.text != plain.text
    assert guided.stats.cfg_prompt_tokens > plain.stats.prompt_tokens
    # Scale 1 is plain sampling: the negative sequence is not even evaluated.
    same = run(engine, prompt, SYSTEM + NEGATIVE + turn(0), 1.0)
    assert same.stats.cfg_prompt_tokens == 0 and same.stats.cfg_evaluated_tokens == 0


def test_both_sequences_stay_cached_turn_after_turn(engine: LocalEngine) -> None:
    history = ""
    for i in range(4):
        pos = SYSTEM + history + turn(i)
        neg = SYSTEM + history + NEGATIVE + turn(i)
        final = run(engine, pos, neg, 1.5)
        if i:
            new = len(engine.tokenize(turn(i)))
            assert final.stats.evaluated_tokens <= new + 2
            assert final.stats.cfg_evaluated_tokens <= new + len(engine.tokenize(NEGATIVE)) + 2
        history += turn(i) + final.text + "<|im_end|>\n"
    # The chat's cache holds the chat, not the negative prompt.
    assert engine.cached_tokens[: len(engine.tokenize(SYSTEM))] == engine.tokenize(SYSTEM)


def test_cfg_without_side_cells_is_a_clear_error(model_path: Path) -> None:
    e = LocalEngine(model_path, n_ctx=1024, side_ctx=0)
    try:
        req = GenerationRequest(prompt=SYSTEM + turn(0), max_tokens=4, negative_prompt=NEGATIVE, guidance_scale=2)
        final = [ev for ev in e.generate(req) if isinstance(ev, Finished)][0]
        assert final.error and "side_ctx" in final.error
    finally:
        e.unload()
