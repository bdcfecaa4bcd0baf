"""A card's embedded lorebook is converted once, not every turn (issue #26, item 10).

The scan compiles a book into an index cached per book object: a world file read through
`load_lorebook_cached` kept its index across turns (2.4 ms a scan for 10,000 entries), but the
prompt path converted the card's `character_book` afresh each turn, so a 100,000-entry card
book cost a new conversion and index every scan (about 19 s and 700 MB more each turn, with
up to four dead copies kept by the index cache).
"""

from __future__ import annotations

import gc

from tavern.lore import (
    LoreSettings,
    ScanMessage,
    lorebook_from_character_book,
    lorebook_from_character_book_cached,
    scan_lore,
)
from tavern.lore.gcpause import paused_gc
from tavern.lore.index import index_for


def character_book(n: int) -> dict:
    return {
        "name": "Card book",
        "entries": [
            {
                "keys": [f"place{i}"],
                "enabled": True,
                "content": f"Place {i} is by the sea.",
                "id": i,
                "insertion_order": i,
            }
            for i in range(n)
        ],
    }


def scan(book) -> list[int]:
    messages = [ScanMessage("User", "We sail to place3 and then place7.")]
    result = scan_lore([("character", book)], messages, LoreSettings(), 8192, lambda s: len(s) // 4)
    return sorted(a.uid for a in result.activated)


def test_the_same_character_book_gives_the_same_lorebook_and_index() -> None:
    raw = character_book(50)
    first = lorebook_from_character_book_cached(raw, "Mira")
    again = lorebook_from_character_book_cached(raw, "Mira")
    assert again is first
    settings = LoreSettings()
    assert index_for([("character", again)], settings) is index_for([("character", first)], settings)
    assert scan(again) == scan(lorebook_from_character_book(raw, "Mira")) == [3, 7]


def test_another_book_or_name_is_converted_again() -> None:
    raw = character_book(5)
    book = lorebook_from_character_book_cached(raw, "Mira")
    assert lorebook_from_character_book_cached(character_book(5), "Mira") is not book
    renamed = lorebook_from_character_book_cached(raw, "Ilse")
    assert renamed is not book and renamed.name == "Ilse"


def test_the_collector_pause_restores_the_collector() -> None:
    assert gc.isenabled()
    with paused_gc():
        assert not gc.isenabled()
    assert gc.isenabled()
    gc.disable()
    try:
        with paused_gc():
            pass
        assert not gc.isenabled()  # it was off: it stays off
    finally:
        gc.enable()
