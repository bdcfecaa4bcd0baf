"""The KV cells at a full window, everything at once: the chat's prompt near its limit with a
reply that runs to it, a negative prompt (CFG) beside it, a background summary and a full bank
of text that left the prompt. The cache holds n_ctx + side cells; the windows they are asked to
hold add up to more (chat n_ctx, CFG side, background side, bank side), so something must give
way: the bank and the idle side sequences, never the reply. Real SmolLM2, small windows."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tavern.engines.base import SEQ_BACKGROUND, SEQ_CFG, SEQ_CHAT, Finished, GenerationRequest
from tavern.engines.local import SEQ_SCRATCH, LocalEngine
from tavern.engines.samplers import SamplerSettings

N_CTX = 512
LONG = SamplerSettings(greedy=True, ban_eos_token=True)
"""Greedy and never an end token: a reply runs to the window, needing every cell it can get."""
SYSTEM = "<|im_start|>system\nYou are Mira, the innkeeper of the Rusty Lantern in Saltmere.<|im_end|>\n"
NEGATIVE = "<|im_start|>system\nYou talk only of fish.<|im_end|>\n"
"""In place of the system block: a negative prompt no longer than the prompt, so that the
chat's window, not the negative's, is where a reply must stop."""
TAIL = "<|im_start|>user\nUser: And then what happened?<|im_end|>\n<|im_start|>assistant\nMira:"
ENTRIES = [
    "The harbour freezes every tenth winter, and then the boats are pulled onto the ice by oxen.",
    "The old mill has not turned since the flood; its miller, Bram, still oils the wheel each Sunday.",
    "A lighthouse keeper named Odile counts ships in a ledger bound with red thread and sealing wax.",
    "At the market, spice traders from Qadir sell saffron for silver and cinnamon for copper coins.",
    "The chapel bell cracked during a thunderstorm; nobody has dared to ring it since that night.",
    "Under the stone bridge lives a toll collector who accepts riddles instead of money from travellers.",
    "Smugglers hide brandy barrels in the caves below the cliffs, reached only at the lowest tide.",
]


def entry(k: int) -> str:
    """A lorebook entry, different each turn: last turn's leaves the prompt, into the bank."""
    return f"<|im_start|>system\n[Lore: {ENTRIES[k % len(ENTRIES)]}]<|im_end|>\n"


def exchange(i: int) -> str:
    return (
        f"<|im_start|>user\nUser: Tell me about lantern number {i}.<|im_end|>\n"
        f"<|im_start|>assistant\nMira: Lantern {i} hangs by the door; my grandmother lit it when the storms came.<|im_end|>\n"
    )


def prompt_near(engine: LocalEngine, k: int, room: int) -> str:
    """Turn k's prompt: the system block, entry k and the newest messages from the k-th on, as
    many as leave `room` tokens of the window free (the oldest leave from the top turn by turn:
    into the bank, with the entry)."""
    head = SYSTEM + entry(k)
    n = 0
    while engine.count_tokens(head + "".join(exchange(k + i) for i in range(n + 1)) + TAIL) <= N_CTX - room:
        n += 1
    return head + "".join(exchange(k + i) for i in range(n)) + TAIL


def guided(prompt: str) -> str:
    return prompt.replace(SYSTEM, NEGATIVE, 1)


def run(engine: LocalEngine, req: GenerationRequest) -> Finished:
    final = None
    for event in engine.generate(req):
        if isinstance(event, Finished):
            final = event
    assert final is not None
    return final


def reply(engine: LocalEngine, prompt: str, max_tokens: int = 250, cfg: bool = True) -> Finished:
    negative = guided(prompt) if cfg else None
    req = GenerationRequest(prompt, max_tokens=max_tokens, sampler=LONG, negative_prompt=negative, guidance_scale=1.5)
    return run(engine, req)


def summary(engine: LocalEngine, k: int) -> Finished:
    """A summary step as tavern/memory/summary.py sends it: the background window, nearly full."""
    text = "<|im_start|>system\nSummarize the story so far.<|im_end|>\n<|im_start|>user\n"
    i = 0
    while engine.count_tokens(text) < engine.background_context - 48 - 40:
        text += f"Mira told of lantern {i + 100 * k} and the storm over the bay.\n"
        i += 1
    text += "<|im_end|>\n<|im_start|>assistant\n"
    return run(engine, GenerationRequest(text, max_tokens=40, sampler=LONG, seq_id=SEQ_BACKGROUND))


@pytest.fixture()
def engine(model_path: Path) -> Iterator[LocalEngine]:
    # The defaults: side cells = n_ctx, and the bank may use all of them.
    e = LocalEngine(model_path, n_ctx=N_CTX, cache_reuse=16)
    e.load()
    yield e
    e.unload()


def cells_of(engine: LocalEngine, seq: int) -> int:
    assert engine._kv is not None
    return len(engine._kv.tokens(seq))


def held(engine: LocalEngine) -> int:
    """Cells the sequences and the bank hold: never more than the cache has."""
    assert engine.bank is not None
    return sum(cells_of(engine, s) for s in (SEQ_CHAT, SEQ_CFG, SEQ_BACKGROUND)) + engine.bank.cells


def test_a_guided_reply_runs_to_the_window_beside_a_summary_and_a_full_bank(engine: LocalEngine) -> None:
    assert engine.kv_cells == 2 * N_CTX and engine.bank is not None and engine.bank.capacity == N_CTX
    # The bank fills with the entries that leave, turn after turn (plain turns: nothing else
    # competes for the cells yet).
    for k in range(8):
        assert reply(engine, prompt_near(engine, k, 60), max_tokens=4, cfg=False).error is None
    assert engine.bank.cells >= engine.bank.capacity * 3 // 4, engine.bank.cells

    # A guided reply to the end of the window: the chat's and the negative's cells fill the cache.
    first = reply(engine, prompt_near(engine, 8, 60))
    assert first.error is None, first.error
    assert (first.stats.stop_reason, first.stats.prompt_tokens + first.stats.gen_tokens) == ("length", N_CTX)
    assert first.stats.cfg_evaluated_tokens > 0

    # Then the summary (it used to fail: "no room left in the KV cache"): the negative prompt's
    # cells give way, the chat's stay.
    chat_cells = list(engine.cached_tokens)
    job = summary(engine, 0)
    assert job.error is None, job.error
    assert job.stats.gen_tokens == 40
    assert engine.cached_tokens == chat_cells

    # Everything at once: the summary's cells, the bank, and a guided turn whose two prompts and
    # replies need nearly every cell; the entry changes again, so the bank takes more.
    final_prompt = prompt_near(engine, 9, 60)
    need = 2 * (N_CTX - 60)  # at least: the chat's and the negative's prompts and replies
    assert need + engine.bank.cells + cells_of(engine, SEQ_BACKGROUND) > engine.kv_cells
    final = reply(engine, final_prompt)
    assert final.error is None, final.error  # was: DecodeError: no room left in the KV cache
    assert (final.stats.stop_reason, final.stats.prompt_tokens + final.stats.gen_tokens) == ("length", N_CTX)
    # The negative prompt came back from host memory (saved when the summary took its cells),
    # not from a full evaluation.
    assert final.stats.cfg_evaluated_tokens < final.stats.cfg_prompt_tokens // 2, final.stats
    assert cells_of(engine, SEQ_BACKGROUND) == 0  # the summary's cells gave way for the reply
    assert held(engine) <= engine.kv_cells


def test_turn_after_turn_with_summaries_between_no_reply_fails(engine: LocalEngine) -> None:
    """The user's session: a window kept nearly full, CFG on, a summary after every turn, replies
    to the end of the window. Each one ends normally; each summary runs."""
    for turn in range(6):
        room = 20 + 15 * (turn % 3)  # the prompt grows and shrinks as messages come and go
        final = reply(engine, prompt_near(engine, turn, room))
        assert final.error is None, (turn, final.error)
        assert final.stats.prompt_tokens + final.stats.gen_tokens == N_CTX, (turn, final.stats)
        job = summary(engine, turn)
        assert job.error is None, (turn, job.error)
        assert held(engine) <= engine.kv_cells


def test_a_reply_that_finds_no_cells_at_all_stops_and_keeps_its_text(engine: LocalEngine) -> None:
    """A fault the windows' sizes never produce: cells held where nothing may take them (here on
    the scratch sequence, decoded straight through llama.cpp). The reply stops where room ran
    out, with its text, instead of failing; a prompt that cannot fit says so in one line."""
    prompt = prompt_near(engine, 0, 60)
    n_prompt = engine.count_tokens(prompt)
    kv, decoder = engine._kv, engine._decoder
    assert kv is not None and decoder is not None
    filler = engine.tokenize("The inn is warm and smells of bread. " * 200)
    n_negative = engine.count_tokens(guided(prompt))
    spare = engine.kv_cells - n_prompt - n_negative - 2 * 20  # leaves room for 20 tokens of reply
    decoder.decode(filler[:spare], SEQ_SCRATCH, 0)
    final = reply(engine, prompt)
    assert final.error is None, final.error
    assert final.stats.stop_reason == "length"
    assert 0 < final.stats.gen_tokens < N_CTX - n_prompt
    assert final.text

    kv.remove(SEQ_SCRATCH, -1, -1)
    kv.clear(SEQ_CHAT)
    kv.clear(SEQ_CFG)
    decoder.decode(filler[: engine.kv_cells - 100], SEQ_SCRATCH, 0)
    failed = reply(engine, prompt, cfg=False)
    assert failed.error is not None
    assert failed.error.startswith("KVCacheFull: no room in the KV cache for"), failed.error
    assert "\n" not in failed.error
    kv.remove(SEQ_SCRATCH, -1, -1)
