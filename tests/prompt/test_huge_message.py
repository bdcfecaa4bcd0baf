"""A message far over the context is left out without tokenizing it (issue #26, item 10).

`tavern prompt` on a chat whose newest message is 10 MB took 28 s and 860 MB (long-term memory
off): the assembler tokenized the whole message (about 2 s per MB with llama.cpp) only to find
it cannot fit. A token spells at most `max_token_bytes` bytes, so a text longer than the room
times that is over the room whatever it says: the count is skipped and the prompt is the same.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tavern.prompt.assemble import assemble_prompt
from tavern.prompt.inputs import CardFields, HistoryMessage, PromptInputs
from tavern.prompt.templates import get_format
from tavern.prompt.token_counter import TokenCounter


@pytest.fixture(scope="module")
def vocab(model_path: Path):
    import llama_cpp

    return llama_cpp.Llama(str(model_path), vocab_only=True, verbose=False)


def longest_token(vocab) -> int:
    # What LocalEngine.max_token_bytes computes: the vocabulary's longest piece, plus a margin.
    return max(len(vocab.detokenize([t], special=True)) for t in range(vocab.n_vocab())) + 4


def counter(vocab, seen: list[int], max_token_bytes: int | None = None) -> TokenCounter:
    def count(text: str) -> int:
        seen.append(len(text))  # which texts the tokenizer was given
        return len(vocab.tokenize(text.encode(), add_bos=False, special=True))

    return TokenCounter(count, max_token_bytes=max_token_bytes)


def inputs(huge: str) -> PromptInputs:
    history = [
        HistoryMessage("User", f"message {i} about the harbor", bool(i % 2), index=i) for i in range(6)
    ]
    history.append(HistoryMessage("User", huge, True, index=6))
    card = CardFields(name="Mira", description="Mira keeps the Rusty Lantern inn.")
    return PromptInputs(card, "User", history)


def test_a_huge_newest_message_is_left_out_without_being_tokenized(vocab) -> None:
    huge = "the sea is grey tonight " * 25_000  # 600 KB: far over a 2048-token context
    fmt = get_format("chatml")
    bounded_seen: list[int] = []
    bounded = assemble_prompt(
        inputs(huge), fmt, counter(vocab, bounded_seen, longest_token(vocab)), 2048, 256
    )
    assert max(bounded_seen) < 10_000  # never the huge message, nor a prompt holding it
    exact_seen: list[int] = []
    exact = assemble_prompt(inputs(huge), fmt, counter(vocab, exact_seen), 2048, 256)
    assert max(exact_seen) >= len(huge)  # without the bound it is tokenized...
    assert bounded.text == exact.text  # ...to reach the same prompt
    assert huge not in bounded.text


def test_a_message_that_fits_is_still_counted_and_kept(vocab) -> None:
    fmt = get_format("chatml")
    seen: list[int] = []
    prompt = assemble_prompt(
        inputs("a short last message"), fmt, counter(vocab, seen, longest_token(vocab)), 2048, 256
    )
    assert "a short last message" in prompt.text
    assert "message 0 about the harbor" in prompt.text
