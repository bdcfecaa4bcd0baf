"""The assembler: exact prompts within the budget, counted with the model's own tokenizer."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tavern.prompt.assemble import (
    AuthorNote,
    CardFields,
    HistoryMessage,
    PromptInputs,
    TokenCounter,
    assemble_prompt,
)
from tavern.prompt.templates import get_format

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
    assert {"system prompt", "card", "history"} <= set(slots) or {"card", "history"} <= set(slots)
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


def _lore(text: str):
    return SimpleNamespace(by_position=lambda: {0: text}, activated=[1], rejected=[], broken=[])


def test_unchanged_lore_stays_put_and_changed_lore_moves_to_the_newest_message(count: TokenCounter) -> None:
    fmt = get_format("chatml")
    h = chat(8, 2)
    p1 = assemble_prompt(
        PromptInputs(CARD, "User", h, lore=_lore("The harbor is foggy.")), fmt, count, 4096, 100
    )
    assert p1.notes_anchor == (7, "The harbor is foggy.")
    h2 = h + chat(10, 2)[8:]
    p2 = assemble_prompt(
        PromptInputs(CARD, "User", h2, lore=_lore("The harbor is foggy."), notes_anchor=p1.notes_anchor),
        fmt,
        count,
        4096,
        100,
    )
    assert p2.text.startswith(
        p1.text[: p1.text.index("message 7")]
    )  # the earlier prompt is a prefix: cache-friendly
    p3 = assemble_prompt(
        PromptInputs(CARD, "User", h2, lore=_lore("A storm is coming."), notes_anchor=p2.notes_anchor),
        fmt,
        count,
        4096,
        100,
    )
    assert p3.notes_anchor == (9, "A storm is coming.")
    assert p3.text.index("A storm is coming.") > p3.text.index("message 8")


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
