"""The engine's cache under churn: inserted text costs only its own tokens, saved states bring
another chat back, side sequences never evict the chat. Real SmolLM2, greedy."""

from __future__ import annotations

from pathlib import Path

import pytest

from tavern.engines.base import SEQ_BACKGROUND, Finished, GenerationRequest
from tavern.engines.local import LocalEngine
from tavern.engines.lowlevel import plan_align, plan_reuse
from tavern.engines.samplers import SamplerSettings

GREEDY = SamplerSettings(greedy=True)
SYSTEM = (
    "<|im_start|>system\nYou are Mira, the innkeeper of the Rusty Lantern in Saltmere. "
    + "The inn is warm and smells of bread. " * 10
    + "<|im_end|>\n"
)
LORE = (
    "<|im_start|>system\nThe Green Sails is a smuggler ship that docks at night. "
    "Its captain, Ilse Varga, pays in silver coins.<|im_end|>\n"
)
TAIL = "<|im_start|>user\nUser: What about the ship?<|im_end|>\n<|im_start|>assistant\nMira:"


def exchange(i: int) -> str:
    return (
        f"<|im_start|>user\nUser: Tell me about lantern number {i}, please.<|im_end|>\n"
        f"<|im_start|>assistant\nMira: Lantern {i} hangs by the door; my grandmother lit it when "
        f"the storms came.<|im_end|>\n"
    )


def chat(n: int, lore_at: int | None = None) -> str:
    parts = [exchange(i) for i in range(n)]
    if lore_at is not None:
        parts.insert(lore_at, LORE)
    return SYSTEM + "".join(parts)


def run(engine: LocalEngine, prompt: str, max_tokens: int = 8, seq: int = 0) -> Finished:
    final = None
    req = GenerationRequest(prompt=prompt, max_tokens=max_tokens, sampler=GREEDY, seq_id=seq)
    for ev in engine.generate(req):
        if isinstance(ev, Finished):
            final = ev
    assert final is not None and final.error is None, final and final.error
    return final


@pytest.fixture()
def engine(model_path: Path) -> LocalEngine:
    e = LocalEngine(model_path, n_ctx=2048, cache_reuse=16, side_ctx=1024, cache_ram_mib=256)
    e.load()
    yield e
    e.unload()


def test_align_keeps_text_on_both_sides_of_an_insertion() -> None:
    cache = list(range(200))
    prompt = cache[:50] + [900 + i for i in range(30)] + cache[50:] + [7]
    # llama-server's walk stops at the insertion; the alignment keeps what follows it.
    assert plan_reuse(cache, prompt, 16).n_past == 50
    plan = plan_align(cache, prompt, 16)
    assert plan.n_past == 200
    assert plan.moves == [(50, 80, 150)]
    assert plan.gaps() == [(50, 80)]


def test_align_handles_a_removal_and_an_insertion_together() -> None:
    cache = list(range(300))
    prompt = cache[:20] + cache[60:150] + [999] * 10 + cache[150:300] + [5, 6]
    plan = plan_align(cache, prompt, 16)
    assert plan.n_past == 20 + 90 + 150
    assert plan.gaps() == [(110, 120)]


def test_align_ignores_short_coincidences_and_stays_bounded_on_repetition() -> None:
    cache = list(range(100))
    assert plan_align(cache, cache[:10] + cache[50:55] + [7] * 20, 16).moves == []
    looped = [1, 2, 3, 4] * 500
    plan = plan_align(looped, [9] + looped, 16)  # every run matches everywhere: capped, not quadratic
    assert plan.n_past >= 1000


def test_an_inserted_entry_costs_its_own_tokens(engine: LocalEngine) -> None:
    run(engine, chat(8) + TAIL)
    with_lore = chat(8, lore_at=4) + TAIL
    s = run(engine, with_lore).stats
    lore_tokens = len(engine.tokenize(LORE))
    assert s.evaluated_tokens <= lore_tokens + 2
    assert s.cached_tokens >= s.prompt_tokens - lore_tokens - 2
    # The walk llama-server uses would have re-evaluated everything after the entry.
    walk = plan_reuse(engine.tokenize(chat(8) + TAIL), engine.tokenize(with_lore), 16)
    assert s.prompt_tokens - walk.n_past > 4 * s.evaluated_tokens


def test_inserted_cells_are_exact(engine: LocalEngine, model_path: Path) -> None:
    """The inserted text sits at the right positions and saw the right prefix: cutting the chat
    right after it gives the same greedy reply as a fresh engine."""
    run(engine, chat(8) + TAIL)
    run(engine, chat(8, lore_at=4) + TAIL)
    cut = chat(4) + LORE + TAIL
    warm = run(engine, cut, max_tokens=16)
    assert warm.stats.evaluated_tokens < 30  # served from the rearranged cache
    fresh = LocalEngine(model_path, n_ctx=2048, cache_reuse=16, side_ctx=0)
    try:
        assert run(fresh, cut, max_tokens=16).text == warm.text
    finally:
        fresh.unload()


def test_a_saved_state_brings_the_other_chat_back(engine: LocalEngine) -> None:
    mira = chat(8) + TAIL
    other = "<|im_start|>system\nYou are Captain Ilse Varga. " + "The sea is grey. " * 60 + "<|im_end|>\n" + TAIL
    run(engine, mira)
    run(engine, other)  # most of Mira's cache is thrown away: it is saved first
    assert len(engine.states) == 1
    back = run(engine, mira + " The").stats
    assert back.restored_state
    assert back.evaluated_tokens <= 4
    assert back.saved_states >= 1 and back.saved_state_mib > 0


def test_a_background_job_does_not_evict_the_chat(engine: LocalEngine) -> None:
    run(engine, chat(8) + TAIL)
    summary = run(engine, "<|im_start|>user\nSummarize: " + exchange(1) * 3 + "<|im_end|>\n", seq=SEQ_BACKGROUND)
    assert summary.stats.cached_tokens == 0
    after = run(engine, chat(8) + TAIL + " Yes").stats
    assert after.evaluated_tokens <= 4
    assert not after.restored_state


def test_without_side_cells_a_background_job_borrows_the_chat_and_gives_it_back(model_path: Path) -> None:
    e = LocalEngine(model_path, n_ctx=2048, cache_reuse=16, side_ctx=0, cache_ram_mib=256)
    try:
        run(e, chat(8) + TAIL)
        run(e, "<|im_start|>user\nSummarize: " + "The storm came. " * 80 + "<|im_end|>\n", seq=SEQ_BACKGROUND)
        after = run(e, chat(8) + TAIL + " Yes").stats
        assert after.restored_state
        assert after.evaluated_tokens <= 4
    finally:
        e.unload()


def test_a_borrowed_chat_comes_back_after_its_window_slid(model_path: Path) -> None:
    """The chat's saved state shares only the system block at the start of the next prompt
    (the oldest exchange left the window), while the summary that borrowed the sequence holds
    some of the same messages: the saved state must still win, by its chunks, not its prefix."""
    e = LocalEngine(model_path, n_ctx=2048, cache_reuse=16, side_ctx=0, cache_ram_mib=256)
    try:
        run(e, chat(8) + TAIL)
        job = "<|im_start|>user\nSummarize:\n" + "".join(exchange(i) for i in range(1, 6)) + "<|im_end|>\n"
        run(e, job, seq=SEQ_BACKGROUND)
        slid = SYSTEM + "".join(exchange(i) for i in range(1, 8)) + TAIL
        after = run(e, slid).stats
        assert after.restored_state
        assert after.evaluated_tokens <= 8
    finally:
        e.unload()
