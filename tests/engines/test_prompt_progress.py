"""Prompt evaluation reported as it happens (`report_progress`): on a CPU a long prompt takes
minutes before the first token, and the user must see that something is being read."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from tavern.engines.base import Finished, GenerationRequest, PromptProgress, Token
from tavern.engines.cell_loader import FIRST_BATCH
from tavern.engines.local import LocalEngine
from tavern.engines.samplers import SamplerSettings
from tavern.engines.turn import REPORT_EVERY

GREEDY = SamplerSettings(greedy=True)


def long_prompt(sentences: int, tag: str = "") -> str:
    story = " ".join(f"Lantern {tag}{i} hangs by the door of the Rusty Lantern inn." for i in range(sentences))
    return f"<|im_start|>system\n{story}<|im_end|>\n<|im_start|>user\nWhich lantern is first?<|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture(scope="module")
def engine(model_path: Path) -> LocalEngine:
    e = LocalEngine(model_path, n_ctx=2048, n_batch=256, side_ctx=0)
    e.load()
    yield e
    e.unload()


def events_of(engine: LocalEngine, prompt: str, cancel: threading.Event | None = None, **kw: object) -> list[object]:
    req = GenerationRequest(prompt=prompt, max_tokens=4, sampler=GREEDY, report_progress=True, **kw)  # type: ignore[arg-type]
    return list(engine.generate(req, cancel))


def test_a_long_prompt_reports_progress_in_order_up_to_total_before_the_first_token(engine: LocalEngine) -> None:
    events = events_of(engine, long_prompt(64))
    final = events[-1]
    assert isinstance(final, Finished) and final.error is None
    total = final.stats.evaluated_tokens
    assert total > 3 * engine.n_batch  # a long prompt, nothing of it cached
    progress = [e for e in events if isinstance(e, PromptProgress)]
    first_token = next(i for i, e in enumerate(events) if type(e) is Token)
    assert all(events.index(p) < first_token for p in progress)  # all of it before the reply
    assert progress[0].done == 0 and progress[0].total == total  # shown before any batch ran
    assert progress[1].done == FIRST_BATCH  # the first batch is short: a rate comes at once
    done = [p.done for p in progress]
    assert done == sorted(done) and len(set(done)) == len(done)
    assert done[-1] == total and all(p.total == total for p in progress)
    assert len(progress) >= 2 + (total - FIRST_BATCH) // engine.n_batch  # once per batch
    assert progress[-1].tokens_per_s > 0 and progress[-1].describe().startswith(f"reading prompt {total}/{total} · ")
    assert progress[0].describe() == f"reading prompt 0/{total}"
    assert final.stats.prompt_tps > 0
    # Progress events carry no text: a consumer that only knows Token shows nothing for them.
    assert "".join(e.text for e in events if isinstance(e, Token)) == final.text


def test_a_cached_prompt_reports_only_what_it_evaluates(engine: LocalEngine) -> None:
    prompt = long_prompt(40, tag="b")
    events_of(engine, prompt)
    again = events_of(engine, prompt + "Lantern")
    final = again[-1]
    assert isinstance(final, Finished)
    progress = [e for e in again if isinstance(e, PromptProgress)]
    assert final.stats.evaluated_tokens < 10
    assert progress[-1].done == progress[-1].total == final.stats.evaluated_tokens


def test_an_edited_prompt_reports_its_one_token_gaps_together(engine: LocalEngine) -> None:
    events_of(engine, long_prompt(40, tag="h"))
    # Every sentence differs in one token: the cache keeps the rest, the edits are tiny gaps.
    events = events_of(engine, long_prompt(40, tag="i"))
    final = events[-1]
    assert isinstance(final, Finished) and final.stats.cached_tokens > final.stats.evaluated_tokens
    done = [e.done for e in events if isinstance(e, PromptProgress)]
    assert done[0] == 0 and done[-1] == final.stats.evaluated_tokens
    assert all(b - a >= REPORT_EVERY for a, b in zip(done[:-2], done[1:-1]))  # not one event per gap


def test_without_report_progress_the_stream_is_unchanged(engine: LocalEngine) -> None:
    req = GenerationRequest(prompt=long_prompt(5, tag="c"), max_tokens=4, sampler=GREEDY)
    events = list(engine.generate(req))
    assert not any(isinstance(e, PromptProgress) for e in events)
    final = events[-1]
    assert isinstance(final, Finished) and final.stats.prompt_tps > 0


def test_a_cancel_while_reading_stops_the_prompt_and_the_engine_stays_usable(engine: LocalEngine) -> None:
    cancel = threading.Event()
    seen: list[PromptProgress] = []
    req = GenerationRequest(prompt=long_prompt(64, tag="d"), max_tokens=4, sampler=GREEDY, report_progress=True)
    final = None
    for event in engine.generate(req, cancel):
        if isinstance(event, PromptProgress):
            seen.append(event)
            if event.done:
                cancel.set()  # Esc after the first batch
        elif isinstance(event, Finished):
            final = event
    assert final is not None and final.stats.stop_reason == "cancelled" and final.text == ""
    assert seen[-1].done < seen[-1].total
    after = events_of(engine, long_prompt(10, tag="e"))
    assert isinstance(after[-1], Finished) and after[-1].error is None and after[-1].text


def test_a_consumer_that_drops_the_stream_mid_prompt_frees_the_engine(engine: LocalEngine) -> None:
    req = GenerationRequest(prompt=long_prompt(64, tag="f"), max_tokens=4, sampler=GREEDY, report_progress=True)
    stream = engine.generate(req)
    assert isinstance(next(stream), PromptProgress)
    stream.close()  # the reading thread stops within a batch; the lock is released
    after = events_of(engine, long_prompt(10, tag="g"))
    assert isinstance(after[-1], Finished) and after[-1].error is None and after[-1].text
