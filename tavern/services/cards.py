"""`Cards`: the characters of the data home as the fronts use them.

The card library (tavern.cards.library) lists, reads, renames, duplicates, trashes and restores
card files; this adds what the application asks of it: a character found by a key, a name or a
unique prefix, and a card saved from the editor (an edit keeps its key and picture, a new
character gets a free key made from its name).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tavern.errors import CardError

if TYPE_CHECKING:
    from tavern.cards.library import CardLibrary
    from tavern.cards.model import Card


class Cards:
    def __init__(self, library: CardLibrary) -> None:
        self.library = library

    def find(self, name: str) -> tuple[str, Card]:
        """(key, Card) for a key, a name or a unique prefix; NotFoundError otherwise."""
        key = self.library.resolve(name)
        return key, self.library.get(key)

    def save(self, key: str | None, card: Card) -> str:
        """Write a card: under `key` (an edit, the picture kept), or as a new character under a
        free key made from its name. Returns the key."""
        from tavern.cards.library import key_for_name

        if not card.name.strip():
            raise CardError("a character needs a name")
        if key is None:
            base = key_for_name(card.name)
            taken = {e.key.casefold() for e in self.library.list()}
            key, n = base, 1
            while key.casefold() in taken:
                key, n = f"{base}_{n}", n + 1
        self.library.save(key, card)
        return key
