"""Character cards: read V1/V2/V3 cards from PNG, JSON and CHARX, write PNG/JSON/CHARX, and
keep a SillyTavern-style characters folder (`CardLibrary`).

Callers: the CLI (`tavern import`, `tavern card show`, `tavern export card`), the TUI's
character list, and the session (which turns a `Card` into prompt text). Embedded lorebooks
stay raw in `Card.character_book`; `tavern.lore` converts them.

Importing this package is cheap: Pillow is only imported when an avatar is drawn or converted.
"""

from tavern.cards.formats import (
    read_avatar,
    read_card,
    read_card_bytes,
    write_card_json,
    write_card_png,
    write_charx,
)
from tavern.cards.library import CardEntry, CardLibrary
from tavern.cards.model import Card
from tavern.cards.sniff import detect_kind

__all__ = [
    "Card",
    "CardEntry",
    "CardLibrary",
    "detect_kind",
    "read_avatar",
    "read_card",
    "read_card_bytes",
    "write_card_json",
    "write_card_png",
    "write_charx",
]
