"""The assembler: exact prompts within the budget, counted with the model's own tokenizer."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tavern.prompt.assemble import assemble_prompt
from tavern.prompt.inputs import AuthorNote, CardFields, HistoryMessage, PromptInputs
from tavern.prompt.templates import get_format
from tavern.prompt.token_counter import TokenCounter

FORMATS = ["chatml", "llama3", "llama2", "mistral-v3", "gemma", "alpaca", "phi3"]


@pytest.fixture(scope="module")
def count(model_path: Path) -> TokenCounter:
    import llama_cpp

    vocab = llama_cpp.Llama(str(model_path), vocab_only=True, verbose=False)
    return TokenCounter(lambda t: len(vocab.tokenize(t.encode(), add_bos=False, special=True)))


CARD = CardFields(
    name="Mira",
    description="Mira keeps the Rusty Lantern inn.",
    personality="warm",
    scenario="A rainy night.",
    mes_example="<START>\n{{user}}: Hi\n{{char}}: Hello!\n<START>\n{{user}}: News?\n{{char}}: Green sails.",
)


def chat(n: int, words: int = 12) -> list[HistoryMessage]:
    return [
        HistoryMessage(
            "User" if i % 2 else "Mira", f"message {i} " + "lorem ipsum " * words, bool(i % 2), index=i
        )
        for i in range(n)
    ]


def test_history_is_filled_newest_first_and_the_budget_holds(count: TokenCounter) -> None:
    history = chat(200)
    p = assemble_prompt(PromptInputs(CARD, "User", history), get_format("chatml"), count, 1024, 200)
    assert count(p.text) == p.prompt_tokens <= 1024 - 200
    assert "message 199 " in p.text  # the newest message is in
    assert "message 0 " not in p.text  # the oldest could not fit
    first = p.first_message_index
    assert all(f"message {i} " in p.text for i in range(first, 200))  # a contiguous tail
    assert any("oldest message" in d for d in p.dropped)
    slots = {s.slot: s.tokens for s in p.slots}
    # Every part of these inputs is counted in its own slot (no system prompt was given).
    assert set(slots) == {"card", "examples", "history", "format"} and all(slots.values())
    assert sum(slots.values()) == p.prompt_tokens  # every token accounted for


def test_same_inputs_give_a_byte_identical_prompt(count: TokenCounter) -> None:
    inputs = PromptInputs(CARD, "User", chat(50), system_prompt="Be Mira.")
    a = assemble_prompt(inputs, get_format("llama3"), count, 2048, 256).text
    b = assemble_prompt(inputs, get_format("llama3"), count, 2048, 256).text
    assert a == b


def test_trimming_is_stable_one_more_message_drops_at_most_a_few_old_ones(count: TokenCounter) -> None:
    fmt = get_format("chatml")
    history = chat(120)
    a = assemble_prompt(PromptInputs(CARD, "User", history), fmt, count, 1024, 128)
    b = assemble_prompt(PromptInputs(CARD, "User", chat(121)), fmt, count, 1024, 128)
    assert 0 <= b.first_message_index - a.first_message_index <= 2


def test_examples_are_dropped_whole_last_first(count: TokenCounter) -> None:
    card = CardFields("Mira", mes_example="<START>\nA: one\n<START>\nB: two " + "x " * 300)
    p = assemble_prompt(PromptInputs(card, "User", chat(2)), get_format("chatml"), count, 700, 100)
    assert "A: one" in p.text and "B: two" not in p.text
    assert any("example block 2" in d for d in p.dropped)


def test_depth_injections_land_at_their_depth(count: TokenCounter) -> None:
    note = AuthorNote(text="[Mira is tired tonight]", depth=2)
    p = assemble_prompt(
        PromptInputs(CARD, "User", chat(6, 2), author_note=note), get_format("chatml"), count, 4096, 100
    )
    contents = [m["content"] for m in p.messages]
    i = contents.index("[Mira is tired tonight]")
    assert contents[i + 1].startswith("Mira: message 4") and contents[i - 1].startswith("User: message 3")


def _entry(uid: int, text: str, order: int = 100, position: int = 0) -> SimpleNamespace:
    return SimpleNamespace(book="Saltmere", uid=uid, content=text, position=position, order=order)


def _lore(*entries: SimpleNamespace) -> SimpleNamespace:
    return SimpleNamespace(by_position=lambda: {}, activated=list(entries), rejected=[], broken=[])


FOG = _entry(1, "The harbor is foggy.")
STORM = _entry(2, "A storm is coming.")


def _turn(count: TokenCounter, history, lore, anchors=None, ctx: int = 4096, return_lapsed: bool = True):
    inputs = PromptInputs(CARD, "User", history, lore=lore, note_anchors=anchors, return_lapsed=return_lapsed)
    return assemble_prompt(inputs, get_format("chatml"), count, ctx, 100)


def test_lore_entries_stay_put_and_new_ones_go_before_the_newest_message(count: TokenCounter) -> None:
    h = chat(8, 2)
    p1 = _turn(count, h, _lore(FOG))
    assert p1.note_anchors == {"lore:Saltmere:1": (7, "The harbor is foggy.")}
    assert p1.text.index("The harbor is foggy.") < p1.text.index("message 7")
    # Two messages later a second entry fires: the first stays where it was (the earlier prompt
    # is a prefix of the new one, up to the new entry), the new one goes before the newest message.
    h2 = chat(10, 2)
    p2 = _turn(count, h2, _lore(FOG, STORM), p1.note_anchors)
    assert p2.text.startswith(p1.text[: p1.text.index("message 7")])
    assert p2.note_anchors["lore:Saltmere:1"][0] == 7
    assert p2.note_anchors["lore:Saltmere:2"][0] == 9
    assert p2.text.index("message 8") < p2.text.index("A storm is coming.") < p2.text.index("message 9")
    # The first lapses: it is gone from the prompt; the second keeps its place.
    p3 = _turn(count, chat(12, 2), _lore(STORM), p2.note_anchors)
    assert "foggy" not in p3.text
    assert p3.note_anchors["lore:Saltmere:2"] == (9, "A storm is coming.")
    # A changed text is a new unit: it moves next to the newest message.
    changed = _entry(2, "The storm has passed.")
    p4 = _turn(count, chat(14, 2), _lore(changed), p3.note_anchors)
    assert p4.note_anchors["lore:Saltmere:2"][0] == 13
    # The first fires again: back before message 7, where it was (the engine's bank kept its
    # cells with those very edges), not in a new block before the newest message.
    p5 = _turn(count, chat(16, 2), _lore(FOG, changed), p4.note_anchors)
    assert _before(p5.text, "The harbor is foggy.") == 7
    assert p5.note_anchors["lore:Saltmere:1"] == (7, "The harbor is foggy.")
    # Once that message has left the window, it goes to the top, as if it had stayed: with the
    # units whose message left the window, before the oldest message kept.
    p6 = _turn(count, chat(200, 12)[:150], _lore(STORM), p5.note_anchors, ctx=1024)
    assert "foggy" not in p6.text and p6.first_message_index > 7
    p7 = _turn(count, chat(200, 12)[:152], _lore(FOG, STORM), p6.note_anchors, ctx=1024)
    assert p7.note_anchors["lore:Saltmere:1"][0] == 7
    assert _before(p7.text, "The harbor is foggy.") == p7.first_message_index
    # For an engine that would evaluate everything after it again (llama-server), an entry
    # that fires again is new: before the newest message, as SillyTavern's users get it.
    q3 = _turn(count, chat(12, 2), _lore(STORM), p2.note_anchors, return_lapsed=False)
    assert q3.note_anchors == {"lore:Saltmere:2": (9, "A storm is coming.")}
    q4 = _turn(count, chat(14, 2), _lore(FOG, STORM), q3.note_anchors, return_lapsed=False)
    assert _before(q4.text, "The harbor is foggy.") == 13


def test_notes_whose_anchor_left_the_window_sit_before_the_oldest_message(count: TokenCounter) -> None:
    long_chat = chat(200, 12)
    p1 = _turn(count, long_chat[:100], _lore(FOG), ctx=1024)
    assert p1.note_anchors["lore:Saltmere:1"][0] == 99
    p2 = _turn(count, long_chat, _lore(FOG, STORM), p1.note_anchors, ctx=1024)
    assert p2.first_message_index > 99  # message 99 has left the window
    oldest = f"message {p2.first_message_index} "
    assert p2.text.index("The harbor is foggy.") < p2.text.index(oldest)
    assert p2.note_anchors["lore:Saltmere:1"][0] == 99  # kept: the cells stay where they were
    assert count(p2.text) <= 1024 - 100


def _depth_lore(text: str, depth: int = 2) -> SimpleNamespace:
    return SimpleNamespace(by_position=lambda: {4: [(depth, 0, text)]}, activated=[], rejected=[], broken=[])


def _depth_turn(count: TokenCounter, n: int, lore, anchors, drift: int):
    inputs = PromptInputs(CARD, "User", chat(n, 2), lore=lore, note_anchors=anchors, depth_lore_drift=drift)
    return assemble_prompt(inputs, get_format("chatml"), count, 4096, 100)


def _before(text: str, needle: str) -> int:
    """The chat index of the message that follows `needle` in the prompt."""
    rest = text[text.index(needle) :]
    return int(rest.split("message ", 1)[1].split(" ", 1)[0])


def test_depth_lore_moves_every_turn_by_default_and_stays_put_in_the_cache_aware_mode(count: TokenCounter) -> None:
    bell = _depth_lore("The bell rings under the water.")
    # SillyTavern's rule: two messages from the end, so it moves with every new pair.
    anchors: dict = {}
    for n in (8, 10, 12):
        p = _depth_turn(count, n, bell, anchors, drift=0)
        assert _before(p.text, "The bell rings") == n - 2
        anchors = p.note_anchors
    # Cache-aware (drift 4): it stays before message 6 while it has drifted at most 4 messages
    # past its depth, so the earlier prompt stays a prefix of the next one up to the new messages.
    anchors, texts = {}, []
    for n in (8, 10, 12, 14):
        p = _depth_turn(count, n, bell, anchors, drift=4)
        texts.append(p.text)
        anchors = p.note_anchors
        assert _before(p.text, "The bell rings") == (6 if n < 14 else 12), n
    assert texts[1].startswith(texts[0][: texts[0].index("message 7")])
    # A changed block is new: back at its depth at once.
    p = _depth_turn(count, 16, _depth_lore("The bell is silent."), anchors, drift=4)
    assert _before(p.text, "The bell is silent.") == 14


def test_continue_and_impersonate(count: TokenCounter) -> None:
    fmt = get_format("chatml")
    h = chat(3, 2)
    cont = assemble_prompt(PromptInputs(CARD, "User", h, mode="continue"), fmt, count, 4096, 100)
    assert cont.text.endswith("Mira: message 2 lorem ipsum lorem ipsum ")
    imp = assemble_prompt(
        PromptInputs(
            CARD, "User", h[:2] + [HistoryMessage("Mira", "Hi", False, index=2)], mode="impersonate"
        ),
        fmt,
        count,
        4096,
        100,
    )
    assert imp.text.endswith("<|im_start|>user\nUser:")
    assert "\nMira:" in imp.stop


def test_a_card_bigger_than_the_budget_is_reported(count: TokenCounter) -> None:
    card = CardFields("Mira", description="very long " * 600)
    p = assemble_prompt(PromptInputs(card, "User", chat(4)), get_format("chatml"), count, 1024, 200)
    assert p.warnings and "no room for history" in p.warnings[0]


texts = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=120
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    fmt_id=st.sampled_from(FORMATS),
    description=texts,
    messages=st.lists(st.tuples(st.booleans(), texts), max_size=40),
    n_ctx=st.integers(300, 1500),
    reserve=st.integers(16, 200),
    mode=st.sampled_from(["normal", "continue", "impersonate"]),
)
def test_the_budget_always_holds(count, fmt_id, description, messages, n_ctx, reserve, mode) -> None:
    history = [HistoryMessage("User" if u else "Mira", t, u, index=i) for i, (u, t) in enumerate(messages)]
    card = CardFields("Mira", description=description, mes_example="<START>\n{{char}}: " + description)
    p = assemble_prompt(
        PromptInputs(card, "User", history, mode=mode), get_format(fmt_id), count, n_ctx, reserve
    )
    if not p.warnings:  # a fixed part over budget is reported instead (nothing left to trim)
        assert count(p.text) <= n_ctx - reserve
    assert p.prompt_tokens == count(p.text)


def test_a_message_that_left_the_window_stays_out_when_the_notes_shrink(count: TokenCounter) -> None:
    long_chat = chat(120, 12)
    big = _entry(3, "The harbor is foggy. " * 60)
    with_lore = _turn(count, long_chat, _lore(big), ctx=1024)
    without = _turn(count, long_chat, _lore(), ctx=1024)
    assert without.first_message_index < with_lore.first_message_index  # SillyTavern refills
    inputs = PromptInputs(CARD, "User", long_chat, lore=_lore(), window_floor=with_lore.first_message_index)
    kept = assemble_prompt(inputs, get_format("chatml"), count, 1024, 100)
    assert kept.first_message_index == with_lore.first_message_index


def test_the_window_refills_when_the_newest_messages_are_deleted(count: TokenCounter) -> None:
    """The window had slid to message 100 of 120; the user deletes the last 30 messages. The
    chat's newest message is now older than the window's start: the prompt still holds the
    chat up to it, as many messages as fit (it used to hold none)."""
    long_chat = chat(120, 12)
    slid = _turn(count, long_chat, _lore(), ctx=1024)
    assert slid.first_message_index > 90
    shorter = long_chat[:90]
    inputs = PromptInputs(CARD, "User", shorter, lore=_lore(), window_floor=slid.first_message_index)
    p = assemble_prompt(inputs, get_format("chatml"), count, 1024, 100)
    fresh = assemble_prompt(PromptInputs(CARD, "User", shorter, lore=_lore()), get_format("chatml"), count, 1024, 100)
    assert shorter[-1].text in p.text
    assert p.first_message_index == fresh.first_message_index < 89


def test_pinned_examples_do_not_come_and_go_with_the_lore(count: TokenCounter) -> None:
    h = chat(30, 12)
    small = _turn(count, h, _lore(), ctx=400)
    big = _turn(count, h, _lore(_entry(4, "A storm is coming. " * 40)), ctx=400)
    assert small.text.count("<START>") == big.text.count("<START>") > 0


def test_the_system_block_is_sillytavern_s_default_story_string(count: TokenCounter) -> None:
    """SillyTavern's default system prompt ("Neutral - Chat") and its story string, which joins
    system prompt, description, personality and scenario with single newlines."""
    from tavern.config import PromptSettings
    from tavern.prompt.macro_context import MacroContext
    from tavern.prompt.macros import substitute

    ctx = MacroContext(char="Mira", user="User")
    inputs = PromptInputs(
        CardFields(name="Mira", description="Mira keeps the Rusty Lantern inn.", personality="warm", scenario="A rainy night."),
        "User",
        chat(2, 2),
        system_prompt=PromptSettings().system_prompt,
        macro=lambda t: substitute(t, ctx),
        layout="sillytavern",
    )
    p = assemble_prompt(inputs, get_format("chatml"), count, 4096, 100)
    assert p.messages[0]["content"] == (
        "Write Mira's next reply in a fictional chat between Mira and User.\n"
        "Mira keeps the Rusty Lantern inn.\n"
        "Mira's personality: warm\n"
        "Scenario: A rainy night."
    )
