"""Where the model's own token runs go back into a prompt (tavern/engines/own_tokens.py).

The tokenizer here is one token per byte (plus 1000 for BOS): the placement rules do not depend
on the vocabulary, and the engine checks the result against the real tokenizer (see
tests/engines/test_kv_reuse.py for the real model)."""

from __future__ import annotations

from tavern.engines.own_tokens import OwnTokens


def by_byte(text: str, bos: bool) -> list[int]:
    return ([1000] if bos else []) + list(text.encode("utf-8"))


def runs(*replies: list[str]) -> OwnTokens:
    """Each reply as its pieces; token ids 500+ so that they differ from the bytes' ids."""
    own = OwnTokens()
    next_id = 500
    for pieces in replies:
        ids = list(range(next_id, next_id + len(pieces)))
        next_id += len(pieces)
        own.add(ids, [p.encode("utf-8") for p in pieces])
    return own


def test_a_quoted_reply_gets_the_tokens_it_was_written_in() -> None:
    own = runs([" *gr", "inches*", " Fine", "."])
    prompt = "Mira: *grinches* Fine.<|im_end|>"
    assert own.splice(prompt, by_byte, True) == (
        by_byte("Mira:", True) + [500, 501, 502, 503] + by_byte("<|im_end|>", False)
    )


def test_an_edited_reply_keeps_the_start_that_is_still_the_models() -> None:
    # The app cut the reply after "Fine" (a stop string, an incomplete sentence trimmed).
    own = runs([" *gr", "inches*", " Fine", " then", "."])
    assert own.splice("Mira: *grinches* Fine<|im_end|>", by_byte, False) == (
        by_byte("Mira:", False) + [500, 501, 502] + by_byte("<|im_end|>", False)
    )
    # ...or stripped the newlines the model began with.
    own = runs(["\n\n", "*gr", "inches*", " Fine"])
    assert own.splice("Mira: *grinches* Fine", by_byte, False) == by_byte("Mira: ", False) + [501, 502, 503]


def test_a_reply_keeps_its_own_run_when_a_newer_one_begins_the_same_way() -> None:
    # A greedy model starts many replies alike: the newer run must not claim the start of the
    # older reply (the rest would go back to the tokenizer, and its cells would not match).
    own = runs([" *smiles*", " Ah, well", ", the harbor", "."], [" *smiles*", " Ah, well", ", rain"])
    prompt = "A: *smiles* Ah, well, the harbor.\nB: *smiles* Ah, well, rain"
    assert own.splice(prompt, by_byte, False) == (
        by_byte("A:", False) + [500, 501, 502, 503] + by_byte("\nB:", False) + [504, 505, 506]
    )


def test_a_run_ends_on_a_whole_character() -> None:
    # "é" is two bytes, which the model wrote as two tokens.
    own = OwnTokens()
    own.add([7, 8, 9, 10], [b" the little caf", b"\xc3", b"\xa9", b" is open"])
    assert own.splice("Mira: the little caf\u00e9 was shut", by_byte, False) == (
        by_byte("Mira:", False) + [7, 8, 9] + by_byte(" was shut", False)
    )
    # The prompt has another character after the same first byte: the match may not end
    # between its two bytes.
    own = OwnTokens()
    own.add([7, 8, 9], [b" the little cafe", b" au", b"\xc3"])
    assert own.splice("Mira: the little cafe au\u00e8", by_byte, False) == (
        by_byte("Mira:", False) + [7, 8] + by_byte("\u00e8", False)
    )


def test_text_the_model_did_not_write_is_left_to_the_tokenizer() -> None:
    own = runs([" *gr", "inches*"])
    assert own.splice("Mira: *smiles*", by_byte, False) is None
    assert OwnTokens().splice("anything", by_byte, False) is None
    # Too short to be searched for: it would be found by chance.
    own = runs([" a", "b"])
    assert len(own) == 0


def test_it_keeps_the_newest_runs() -> None:
    own = OwnTokens(limit=2)
    for i in range(3):
        own.add([i, i + 10], [f" reply{i}".encode(), b" said"])
    assert len(own) == 2
    assert own.splice("X: reply0 said", by_byte, False) is None
    assert own.splice("X: reply2 said", by_byte, False) == by_byte("X:", False) + [2, 12]


def test_a_lore_entry_the_reply_copied_keeps_the_tokenizers_tokens() -> None:
    # The bank knows the entry by its plain tokens: only the reply itself is spliced.
    entry = "The Kestrel is a light cargo skyship."
    own = runs([" The Kest", "rel is a light", " cargo skyship", ",", " said Mira", "."])
    prompt = f"system: {entry}\nMira: The Kestrel is a light cargo skyship, said Mira."
    cut = prompt.index("\nMira:") + len("\nMira:")
    spliced = own.splice(prompt, by_byte, False, avoid=[entry])
    assert spliced == by_byte(prompt[:cut], False) + list(range(500, 506))
    # (Without being told, the entry's first 37 bytes would get the reply's tokens.)
    assert own.splice(prompt, by_byte, False)[7:10] == [500, 501, 502]


def test_a_reply_quoted_in_small_part_is_taken_for_chance() -> None:
    own = runs([" The harbor", " is quiet", " tonight, and the boats", " are all in."])  # 55 bytes
    assert own.splice("Mira: The harbor is quiet. Yes.", by_byte, False) is None  # 20 bytes of it
    prompt = "Mira: The harbor is quiet tonight, and the boats were out."  # 43 bytes: the reply, cut
    spliced = own.splice(prompt, by_byte, False)
    assert spliced == by_byte("Mira:", False) + [500, 501, 502] + by_byte(" were out.", False)
