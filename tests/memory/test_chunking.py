"""Chunking and collection names (no model needed)."""

from __future__ import annotations

import re

from tavern.memory.chunking import MAX_CHARS, MessageRef, chunk_message, message_key, split_text
from tavern.memory.vector import collection_name

VALID = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9._-]{1,510}[a-zA-Z0-9]$")


def test_long_messages_split_at_sentences_within_the_limit() -> None:
    text = " ".join(f"Sentence number {i} says something about the harbour." for i in range(100))
    pieces = split_text(text)
    assert len(pieces) > 1
    assert all(len(p) <= MAX_CHARS for p in pieces)
    assert all(p.endswith(".") for p in pieces)
    assert " ".join(pieces) == text


def test_chunks_carry_the_speaker_and_a_stable_key() -> None:
    ref = MessageRef(7, "Mira", "Short line.")
    (chunk,) = chunk_message(message_key("Mira", "Short line."), ref)
    assert chunk.text == "Mira: Short line." and chunk.index == 7
    assert message_key("Mira", "Short line.") == message_key("Mira", "Short line.")
    assert message_key("Mira", "Short line.") != message_key("User", "Short line.")


def test_collection_names_are_valid_for_any_chat_name() -> None:
    names = ["Mira/Mira - 2026-11-28@22h32m29s", "Ærø/x", "é", "日本語/チャット", "a" * 600, "x"]
    made = [collection_name(n) for n in names]
    assert all(VALID.match(m) for m in made)
    assert len(set(made)) == len(made)
