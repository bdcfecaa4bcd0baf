"""The engine's cache under churn: inserted text costs only its own tokens, saved states bring
another chat back, side sequences never evict the chat. Real SmolLM2, greedy."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tavern.engines.base import SEQ_BACKGROUND, Finished, GenerationRequest, TurnStats
from tavern.engines.local import LocalEngine
from tavern.engines.reuse_plan import align_cuts, plan_align, plan_reuse
from tavern.engines.samplers import SamplerSettings

GREEDY = SamplerSettings(greedy=True)
SYSTEM = (
    "<|im_start|>system\nYou are Mira, the innkeeper of the Rusty Lantern in Saltmere. "
    + "The inn is warm and smells of bread. " * 10
    + "<|im_end|>\n"
)
LORE_TEXT = (
    "The Green Sails is a smuggler ship that docks at night. Its captain, Ilse Varga, pays in silver coins."
)
LORE = f"<|im_start|>system\n{LORE_TEXT}<|im_end|>\n"
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


NL, END = 10, 2  # a line break, and a control token (a message's end)


def _lines(before: int, after: int) -> bool:
    return before == NL or after == END


def test_a_replacement_is_cut_where_lines_start() -> None:
    # "\n The x1..x40 . END" becomes "\n The y1..y40 . END": the plan keeps the shared "The"
    # and "."; the cuts go to the line's start and to the message's end instead.
    head, tail = [7] * 20 + [NL], [END] + [9] * 40
    old = head + [30] + list(range(100, 140)) + [46] + tail
    new = head + [30] + list(range(200, 240)) + [46] + tail
    plan = plan_align(old, new, 16)
    assert plan.prefix == 22 and plan.gaps() == [(22, 62)]  # "The" kept, "." with the tail
    cut = align_cuts(plan, old, new, _lines)
    assert cut.prefix == 21 and cut.gaps() == [(21, 63)]
    assert cut.moves == [(63, 63, len(tail) - 1)]  # (the last token is evaluated for its logits)
    # Only inserted, or a message edited far from any line start: left as planned.
    assert align_cuts(plan_align(head + tail, new, 16), head + tail, new, _lines).gaps() == [(21, 63)]
    edited = head + [30] + list(range(100, 120)) + list(range(300, 310)) + list(range(130, 140)) + [46] + tail
    plan = plan_align(old, edited, 8)
    assert align_cuts(plan, old, edited, _lines) == plan


def test_an_entry_replaced_by_another_is_banked_whole(model_path: Path) -> None:
    """Two entries that begin and end alike ("The harbor", "the tide."): when one takes the
    other's place, the one that lapsed goes to the bank with its first and last words, and
    when it comes back on its own it costs only its message's header and end."""
    bell = "The harbor bell of Saltmere rings at dusk, and then the Lantern opens its doors to the tide."
    master = "The harbor master of Saltmere keeps the tide tables, and he was never late with the tide."
    e = _bank_engine(model_path, 1024)
    try:
        assert e.bank is not None
        turn = _entries_at(e, [bell, master])
        turn((4, 0))
        turn((4, 1))  # the master replaces the bell
        assert any(c.tokens == e.tokenize(bell) for c in e.bank.chunks)
        turn()
        back = turn((4, 0))
        wrapper = len(e.tokenize(_block(bell))) - len(e.tokenize(bell))
        assert back.evaluated_tokens <= wrapper + 1  # + the last token, evaluated for its logits
    finally:
        e.unload()


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


def test_inserted_cells_are_exact(model_path: Path) -> None:
    """The inserted text sits at the right positions and saw the right prefix: cutting the chat
    right after it gives the greedy reply of a fresh engine. The bank is off here: cells of any
    other sequence change the rounding of the attention sums (a background job's do too). That
    rounding also depends on the llama.cpp build's kernels (with AMX the first 16 tokens agreed;
    the AVX-512 build CI falls back to on VMs that refuse AMX parts after 9), so the replies are
    compared over their first 6 tokens: where a cell is wrong (the entry without its prefix, at
    another place, or missing) the reply differs by the third token."""
    engine = LocalEngine(model_path, n_ctx=2048, cache_reuse=16, side_ctx=0)
    fresh = LocalEngine(model_path, n_ctx=2048, cache_reuse=16, side_ctx=0)
    ask = "<|im_start|>user\nUser: And who sails her?<|im_end|>\n<|im_start|>assistant\nMira:"
    try:
        engine.load()
        run(engine, chat(8) + TAIL)
        run(engine, chat(8, lore_at=4) + TAIL)
        cut = chat(4) + LORE + ask
        warm = run(engine, cut, max_tokens=6)
        assert warm.stats.evaluated_tokens < 30  # the entry's cells served from the rearranged cache
        fresh.load()
        assert run(fresh, cut, max_tokens=6).text == warm.text
        fresh.unload()
        fresh.load()
        assert run(fresh, chat(4) + ask, max_tokens=6).text != warm.text  # the entry's cells matter
    finally:
        engine.unload()
        fresh.unload()


def test_an_entry_that_fires_again_comes_back_from_the_bank(engine: LocalEngine, model_path: Path) -> None:
    """Fired, lapsed, fired again at another place: its cells come back instead of being
    evaluated (without the bank they are evaluated again)."""
    lore_tokens = len(engine.tokenize(LORE))
    turns = [chat(8, lore_at=3) + TAIL, chat(8) + TAIL, chat(8, lore_at=6) + TAIL]
    with_bank = [run(engine, p).stats for p in turns][-1]
    assert with_bank.banked_tokens >= lore_tokens - 4
    assert with_bank.evaluated_tokens <= 8
    plain = LocalEngine(model_path, n_ctx=2048, cache_reuse=16, side_ctx=1024, bank_cells=0)
    try:
        plain.load()
        without = [run(plain, p).stats for p in turns][-1]
    finally:
        plain.unload()
    assert without.banked_tokens == 0
    assert without.evaluated_tokens >= lore_tokens


def test_a_note_that_moves_down_each_turn_costs_its_seam_only(engine: LocalEngine) -> None:
    """An author's note at depth 2 moves one exchange down per turn: removed above, inserted
    below. The bank hands its cells from one place to the next."""
    note = "<|im_start|>system\n[Author's note: keep the tone warm, mention the weather, and let Mira tease the guest.]<|im_end|>\n"
    costs = []
    for n in range(4, 9):
        parts = [exchange(i) for i in range(n)]
        parts.insert(n - 2, note)
        costs.append(run(engine, SYSTEM + "".join(parts) + TAIL).stats)
    note_tokens = len(engine.tokenize(note))
    later = costs[1:]
    assert all(s.banked_tokens >= note_tokens - 4 for s in later), [s.banked_tokens for s in later]


def test_the_bank_gives_its_cells_back_when_the_cache_is_full(model_path: Path) -> None:
    """The bank lives in spare cells; a job that needs them still runs (the bank is emptied
    first, oldest chunk first), and the chat keeps working after."""
    e = LocalEngine(model_path, n_ctx=1024, cache_reuse=16, side_ctx=256, bank_cells=256)
    try:
        e.load()
        places = ["harbor", "chapel", "mill", "market", "lighthouse", "quay", "cellar", "bridge"]
        colors = ["red", "green", "grey", "blue", "white", "black", "yellow", "brown"]
        big = "<|im_start|>system\n" + " ".join(
            f"The {p} by the {q} is painted {c}." for p in places for q, c in zip(places[::-1], colors) if p != q
        )[:900] + "<|im_end|>\n"
        parts = [exchange(i) for i in range(8)]
        run(e, SYSTEM + "".join(parts[:3]) + big + "".join(parts[3:]) + TAIL)
        slim = chat(17) + TAIL  # the block leaves: one chunk, into the bank
        chat_stats = run(e, slim).stats
        assert e.bank is not None and e.bank.cells > 100
        job = "<|im_start|>user\nSummarize: " + "The storm came and went. " * 40 + "<|im_end|>\n"
        need = chat_stats.prompt_tokens + 8 + e.bank.cells + len(e.tokenize(job)) + 4
        assert need > e.kv_cells, (need, e.kv_cells)  # the bank's cells are in the way
        before = e.bank.cells
        run(e, job, seq=SEQ_BACKGROUND, max_tokens=4)
        assert e.bank.cells < before
        assert run(e, slim + " Yes").stats.evaluated_tokens <= 4
    finally:
        e.unload()


def test_the_bank_keeps_text_that_came_back_over_text_that_left_for_good(model_path: Path) -> None:
    """A full bank evicts the oldest chunk that never came back (old messages leaving the
    window) before an older one that did (a lore entry that flickers)."""
    notes = [
        "<|im_start|>system\nThe Green Sails is a smuggler ship that docks at night; its captain pays in silver.<|im_end|>\n",
        "<|im_start|>system\nThe lighthouse on Gull Point has been dark for a week and nobody says why.<|im_end|>\n",
        "<|im_start|>system\nMira's cat, Admiral, sleeps on the bar and bites anyone who calls him fat.<|im_end|>\n",
    ]
    e = LocalEngine(model_path, n_ctx=2048, cache_reuse=16, side_ctx=1024, bank_cells=70)
    try:
        e.load()
        sizes = [len(e.tokenize(n)) for n in notes]
        assert sum(sizes) > 70 >= sizes[0] + max(sizes[1:])  # two fit, three do not

        def turn(*at: tuple[int, int]) -> TurnStats:
            parts = [exchange(i) for i in range(8)]
            for note, where in sorted(at, key=lambda x: -x[1]):
                parts.insert(where, notes[note])
            return run(e, SYSTEM + "".join(parts) + TAIL).stats

        turn((0, 3))
        turn()  # note 0 leaves: banked
        assert turn((0, 5)).banked_tokens > 0  # and comes back
        turn((1, 2))  # note 0 leaves again (it came back before); note 1 arrives
        turn((2, 4))  # note 1 leaves (never came back); note 2 arrives
        turn()  # note 2 leaves: the bank is full, one chunk must go
        assert turn((0, 6)).banked_tokens >= sizes[0] - 4  # note 0 stayed
    finally:
        e.unload()


def test_the_bank_keeps_a_lore_entry_that_lapsed_at_the_top_over_old_messages(model_path: Path) -> None:
    """An entry anchored at the top of the window lapses, then old messages leave from the top
    and fill the bank. Told that the entry's text may come back (`recurring`, as the session
    says of every lore entry in a prompt), the bank evicts an old message instead; without
    that, the entry looked like an old message and went first."""
    content = "The Green Sails is a smuggler ship that docks at night; its captain pays in silver."
    note = f"<|im_start|>system\n{content}<|im_end|>\n"

    def play(recurring: tuple[str, ...]) -> TurnStats:
        e = LocalEngine(model_path, n_ctx=2048, cache_reuse=16, side_ctx=1024, bank_cells=1)
        try:
            e.load()
            n_note, n_ex = len(e.tokenize(note)), len(e.tokenize(exchange(0)))
            assert e.bank is not None
            e.bank.capacity = n_note + n_ex + 4  # the entry and one message fit, not two messages more

            def turn(first: int, with_note: bool) -> TurnStats:
                parts = [exchange(i) for i in range(first, first + 8)]
                prompt = SYSTEM + (note if with_note else "") + "".join(parts) + TAIL
                req = GenerationRequest(prompt=prompt, max_tokens=4, sampler=GREEDY, recurring=recurring)
                final = [ev for ev in e.generate(req) if isinstance(ev, Finished)][-1]
                assert final.error is None, final.error
                return final.stats

            turn(0, True)
            turn(0, False)  # the entry lapses: it leaves from the top of the window
            turn(1, False)  # the oldest message leaves
            turn(2, False)  # and the next: the bank is full, one chunk must go
            return turn(2, True)  # the entry fires again
        finally:
            e.unload()

    told = play((content,))
    assert told.banked_tokens >= len(content) // 8, told  # a good part of the entry came back
    assert play(()).banked_tokens == 0


def test_entries_that_left_together_come_back_one_at_a_time(engine: LocalEngine) -> None:
    """Two entries side by side lapse in the same turn (one removed span, one banked chunk).
    The first fires again, then the second: each comes back from the bank. The rest of a
    chunk stays banked when part of it is taken (it used to be dropped with it)."""
    first = "<|im_start|>system\nThe Green Sails is a smuggler ship that docks at night.<|im_end|>\n"
    second = "<|im_start|>system\nThe lighthouse on Gull Point has been dark for a week.<|im_end|>\n"

    def turn(*notes: str) -> TurnStats:
        parts = [exchange(i) for i in range(8)]
        parts.insert(5, "".join(notes))
        return run(engine, SYSTEM + "".join(parts) + TAIL).stats

    turn(first, second)
    turn()  # both lapse: one chunk
    assert turn(first).banked_tokens >= len(engine.tokenize(first)) - 4
    back = turn(first, second)
    assert back.banked_tokens >= len(engine.tokenize(second)) - 4, back


def test_align_keeps_a_short_message_between_a_removal_and_an_insertion() -> None:
    """A message shorter than `min_chunk`, between an entry that lapsed (removed above it) and
    one that fired (inserted below it), keeps its cells: it continues the kept text before it.
    Only the new entry is left to evaluate."""
    head, lapsed, message = list(range(40)), list(range(100, 120)), list(range(200, 212))
    tail, new_entry = list(range(300, 350)), list(range(500, 510))
    cache = head + lapsed + message + tail
    prompt = head + message + new_entry + tail + [999]
    plan = plan_align(cache, prompt, min_chunk=16)
    assert plan.gaps() == [(52, 62)]  # the new entry only
    assert plan.n_past == 40 + 12 + 50
    # And leading into kept text: the message is right before the tail, the entry before it.
    prompt = head + new_entry + message + tail + [999]
    assert plan_align(cache, prompt, min_chunk=16).gaps() == [(40, 50)]


def test_align_keeps_a_message_between_two_insertions() -> None:
    """An old message with a block inserted on each side of it (an @depth entry that moved one
    message down, an entry that fired again at its old place) touches no kept piece; it is
    shorter than `min_chunk`, but it is the same message between the same neighbours: kept."""
    head, moved, message = list(range(40)), list(range(100, 120)), list(range(200, 220))
    tail, back, again = list(range(300, 350)), list(range(500, 510)), list(range(600, 610))
    cache = head + moved + message + tail
    prompt = head + back + message + again + tail + [999]
    plan = plan_align(cache, prompt, min_chunk=32)
    assert plan.gaps() == [(40, 50), (70, 80)]  # the two blocks only
    assert plan.n_past == 40 + 20 + 50
    # A shorter run between them is more likely a coincidence: evaluated.
    prompt = head + back + message[:12] + again + tail + [999]
    assert plan_align(cache, prompt, min_chunk=32).gaps() == [(40, 72)]


def _bank_engine(model_path: Path, cells: int) -> LocalEngine:
    """The default chunk size (32 tokens) and a bank of `cells` cells."""
    e = LocalEngine(model_path, n_ctx=2048, cache_reuse=32, side_ctx=1024, bank_cells=1)
    e.load()
    assert e.bank is not None
    e.bank.capacity = cells
    return e


def _send(e: LocalEngine, prompt: str, recurring: tuple[str, ...] = ()) -> TurnStats:
    req = GenerationRequest(prompt=prompt, max_tokens=4, sampler=GREEDY, recurring=recurring)
    final = [ev for ev in e.generate(req) if isinstance(ev, Finished)][-1]
    assert final.error is None, final.error
    return final.stats


WEATHER = "[Weather: a thick sea fog has rolled in over Saltmere; the Lantern's light is all one can see.]"
"""An entry shorter than the engine's 32-token chunks, in its block."""


def _block(text: str) -> str:
    return f"<|im_start|>system\n{text}<|im_end|>\n"


def test_a_short_entry_comes_back_from_the_bank(model_path: Path) -> None:
    """A weather line is shorter than `cache_reuse` tokens, which other text needs to be banked
    and served; told that it may come back, the bank keeps and serves it from 16 tokens."""

    def play(recurring: tuple[str, ...]) -> TurnStats:
        e = _bank_engine(model_path, 1024)
        try:
            parts = [exchange(i) for i in range(8)]
            assert 16 < len(e.tokenize(WEATHER)) and len(e.tokenize(_block(WEATHER))) < 32

            def with_at(i: int) -> str:
                return SYSTEM + "".join(parts[:i] + [_block(WEATHER)] + parts[i:]) + TAIL

            _send(e, with_at(5), recurring)
            _send(e, SYSTEM + "".join(parts) + TAIL, recurring)  # it lapses
            return _send(e, with_at(6), recurring)  # and fires again, one message further down
        finally:
            e.unload()

    told = play((WEATHER,))
    assert told.banked_tokens >= len(WEATHER) // 8, told
    assert play(()).banked_tokens == 0


def test_an_entry_leaving_with_old_messages_is_banked_without_them(model_path: Path) -> None:
    """The notes at the top of the window lapse as the oldest messages leave: one removed span,
    larger than the bank. The entry in it is banked on its own (the messages are gone for
    good) and comes back when it fires again; before, the whole span was let go."""
    e = _bank_engine(model_path, 0)
    try:
        note = _block(LORE_TEXT)
        e.bank.capacity = len(e.tokenize(note)) + 8  # the entry fits, the span does not
        told = (LORE_TEXT,)
        _send(e, SYSTEM + note + "".join(exchange(i) for i in range(8)) + TAIL, told)
        _send(e, SYSTEM + "".join(exchange(i) for i in range(2, 8)) + TAIL, told)
        again = _send(e, SYSTEM + note + "".join(exchange(i) for i in range(2, 8)) + TAIL, told)
        assert again.banked_tokens >= len(e.tokenize(LORE_TEXT)) - 4, again
    finally:
        e.unload()


DECK = "<|im_start|>system\nYou are Captain Varga of the skyship Kestrel. " + "The deck creaks. " * 60 + "<|im_end|>\n"
"""Another character's chat: it shares nothing with Mira's but the template."""

ENTRIES = [
    "The Green Sails is a smuggler ship that docks at night; its captain pays in silver coins.",
    "The lighthouse on Gull Point has been dark for a week, and nobody will say who broke it.",
    "Old Brask brews the ale up the hill and sells the good barrels only to the Lantern.",
]


def _entries_at(e: LocalEngine, texts: list[str]) -> Callable[..., TurnStats]:
    """A turn of an 8-exchange chat with the given entries, each `(before exchange i, which)`."""
    parts = [exchange(i) for i in range(8)]

    def turn(*at: tuple[int, int]) -> TurnStats:
        chat = list(parts)
        for i, which in sorted(at, reverse=True):
            chat.insert(i, _block(texts[which]))
        return _send(e, SYSTEM + "".join(chat) + TAIL, tuple(texts))

    return turn


def test_a_full_bank_keeps_what_the_prompt_brings_back(model_path: Path) -> None:
    """Room for two entries. Two lapse; then a third lapses in the turn the older of the two
    fires again. The bank makes room for the third with the entry nobody asked for, not with
    the one coming back (the oldest, which it used to let go first)."""
    texts = ENTRIES
    e = _bank_engine(model_path, 0)
    try:
        e.bank.capacity = 2 * max(len(e.tokenize(_block(t))) for t in texts) + 8
        turn = _entries_at(e, texts)
        turn((2, 0), (4, 1), (6, 2))
        turn((6, 2))  # the first two lapse (first the one higher up)
        back = turn((2, 0))  # the third lapses as the first fires again
        assert back.banked_tokens >= len(e.tokenize(texts[0])) - 4, back
    finally:
        e.unload()


def test_a_chat_tells_the_engine_which_text_may_come_back(tmp_path: Path, engine: LocalEngine) -> None:
    """The session's request names the lorebook entries in its prompt (`recurring`), and the
    engine's bank learns them: the entries that fired, not the chat's messages."""
    from tavern.session import Tavern

    app = Tavern.open(tmp_path / "home", **{"model.n_ctx": 2048, "generation.max_tokens": 4})
    app.use_engine(engine)
    seen: list[GenerationRequest] = []
    generate = engine.generate

    def spy(request: GenerationRequest, cancel=None):
        seen.append(request)
        yield from generate(request, cancel)

    engine.generate = spy  # type: ignore[method-assign]
    session = app.open_chat("Mira", new=True)
    message = "Tell me about the Kestrel skyship and its captain Ilse Varga."
    for _ in session.send(message):
        pass
    fired = [e.content for e in session.last_lore.activated]
    assert any("Kestrel" in text for text in fired)
    assert set(fired) <= set(seen[-1].recurring)
    assert not any(message in text for text in seen[-1].recurring)
    assert engine.bank is not None and engine.bank._expected  # the bank was told


@pytest.mark.parametrize("meanwhile", ["", "another character", "a branch"])
def test_an_entry_that_fires_again_goes_back_to_its_place(
    tmp_path: Path, engine: LocalEngine, meanwhile: str
) -> None:
    """On the embedded engine (its bank keeps removed text) a lore entry that lapsed and fires
    again goes back before the message it sat before, where its banked cells fit, instead of
    into a new block before the newest message. Also when the user talked to someone else
    meanwhile (the chat opened again builds the prompt its saved KV state holds), or goes on in
    a branch from the last message (it starts with its parent's layout)."""
    from tavern.session import Tavern

    # Greedy: a sampled reply that names the harbormaster would keep his entry from lapsing.
    settings = {"model.n_ctx": 2048, "generation.max_tokens": 4, "generation.preset": "Deterministic"}
    app = Tavern.open(tmp_path / "home", **settings)
    app.use_engine(engine)
    assert engine.keeps_removed_text
    session = app.open_chat("Mira", new=True)
    first = "The harbormaster Dunstan Reeve looked at me strangely today."
    neutral = "Thanks, I will have some bread and a cup of tea."
    lines = [first, neutral, neutral, neutral, "Is the harbormaster still angry?"]
    for i, line in enumerate(lines):
        for _ in session.send(line):
            pass
        text = session.last_prompt.text
        fired = "Dunstan Reeve is Saltmere's harbormaster" in text
        if i == len(lines) - 2:
            assert not fired  # it lapsed
            if meanwhile == "another character":
                for _ in app.open_chat("Captain Ilse Varga", new=True).send("Where are we headed?"):
                    pass
                session = app.open_chat("Mira")
            elif meanwhile == "a branch":
                session = session.branch_at(len(session.chat) - 1)
    assert fired
    entry = text.index("Dunstan Reeve is Saltmere's harbormaster")
    assert entry < text.index(first) < text.index(lines[-1])  # before the first message again


def test_the_bank_keeps_its_text_however_long_the_chat(model_path: Path) -> None:
    """Each chunk banked takes the next position, so a long chat runs through the bank's
    positions. When they run out, the chunks are moved together: an entry that lapsed long
    ago still comes back from the bank (the bank used to empty itself there)."""
    texts = ENTRIES[:2]
    e = _bank_engine(model_path, 0)
    try:
        e.bank.capacity = 2 * max(len(e.tokenize(_block(t))) for t in texts) + 8
        turn = _entries_at(e, texts)
        turn((2, 0), (5, 1))
        turn((5, 1))  # the first entry lapses
        went_back = False  # the bank's next position went back: its positions ran out
        for _ in range(40):  # the second lapses and comes back until they do
            before = e.bank._next
            turn()
            turn((5, 1))
            went_back = e.bank._next < before
            if went_back:
                break
        assert went_back, "the bank's positions never ran out"
        import llama_cpp  # this test may: it reads the cells' positions

        kv, bank = e._kv, e.bank  # its cells sit where its chunks say, from the start again
        assert llama_cpp.llama_memory_seq_pos_min(kv._mem, bank.seq) == bank.base
        assert llama_cpp.llama_memory_seq_pos_max(kv._mem, bank.seq) == bank.base + bank.cells - 1
        back = turn((2, 0), (5, 1))
        assert back.banked_tokens >= len(e.tokenize(texts[0])) - 4, back
    finally:
        e.unload()


def test_another_chat_does_not_push_a_lapsed_entry_out_of_the_bank(model_path: Path) -> None:
    """An entry lapses in one chat (banked); the user opens another chat, whose prompt replaces
    the first one's cells (saved in host memory), and comes back, where the entry fires again.
    The first chat's cells that the other prompt does not want stay out of the bank (its saved
    state holds them), so the lapsed entry is still there: it used to be pushed out by them."""
    texts = ENTRIES[:2]
    e = _bank_engine(model_path, 0)
    try:
        e.bank.capacity = max(len(e.tokenize(_block(t))) for t in texts) + 8  # one entry
        mira = _entries_at(e, texts)
        mira((2, 0), (5, 1))
        mira((5, 1))  # the first entry lapses
        _send(e, DECK + TAIL)  # another character's chat
        back = mira((2, 0), (5, 1))
        assert back.restored_state, back  # the first chat's cells came back from host memory
        assert back.banked_tokens >= len(e.tokenize(texts[0])) - 4, back
    finally:
        e.unload()


def test_an_entry_both_chats_share_comes_back_from_the_chat_left(model_path: Path) -> None:
    """Two characters share the world's lorebook. An entry lapses in one chat, fires in the
    other (its banked cells move there), and fires again when the user comes back: the chat
    left behind gives those cells to the bank before its state is replaced, instead of the
    entry being evaluated again."""
    e = _bank_engine(model_path, 1024)
    try:
        parts = [exchange(i) for i in range(8)]
        mira = SYSTEM + "".join(parts)
        _send(e, SYSTEM + "".join(parts[:2]) + LORE + "".join(parts[2:]) + TAIL, (LORE_TEXT,))
        _send(e, mira + TAIL, (LORE_TEXT,))  # it lapses
        there = _send(e, DECK + LORE + parts[0] + TAIL, (LORE_TEXT,))  # another character
        assert there.banked_tokens >= len(e.tokenize(LORE_TEXT)) - 4, there
        back = _send(e, SYSTEM + "".join(parts[:2]) + LORE + "".join(parts[2:]) + TAIL, (LORE_TEXT,))
        assert back.restored_state, back  # the first chat's cells came back from host memory
        assert back.banked_tokens >= len(e.tokenize(LORE_TEXT)) - 4, back
    finally:
        e.unload()


def test_a_reply_keeps_the_tokens_the_model_wrote_it_in(engine: LocalEngine) -> None:
    """A model may write text in other tokens than its tokenizer gives for it. The next prompt
    quotes the reply, and its cells must still serve it: only the new text is evaluated."""
    a = engine.tokenize("a")
    assert len(a) == 1 and engine.tokenize("a" * 20) != a * 20  # else this proves nothing
    forced = SamplerSettings(greedy=True, logit_bias={a[0]: 100.0})
    prompt = SYSTEM + TAIL
    req = GenerationRequest(prompt=prompt, max_tokens=20, sampler=forced)
    reply = [ev for ev in engine.generate(req) if isinstance(ev, Finished)][-1].text
    assert reply == "a" * 20
    turn = "<|im_end|>\n<|im_start|>user\nUser: And then?<|im_end|>\n<|im_start|>assistant\nMira:"
    prompt += reply + turn
    stats = run(engine, prompt, max_tokens=1).stats
    assert stats.evaluated_tokens == len(engine.tokenize(turn))
    # A turn later the reply still has its cells; so does one the app cut short (a stop string).
    again = " Fine.<|im_end|>\n<|im_start|>user\nUser: Sure?<|im_end|>\n<|im_start|>assistant\nMira:"
    assert run(engine, prompt + again, max_tokens=1).stats.evaluated_tokens == len(engine.tokenize(again))
    turn = "<|im_end|>\n<|im_start|>user\nUser: Why?<|im_end|>\n<|im_start|>assistant\nMira:"
    cut = SYSTEM + TAIL + "a" * 17 + turn
    assert run(engine, cut, max_tokens=1).stats.evaluated_tokens == len(engine.tokenize(turn))
