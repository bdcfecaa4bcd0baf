"""Character cards: read V1/V2/V3 cards from PNG, JSON and CHARX, write PNG/JSON/CHARX, and
keep a SillyTavern-style characters folder (`CardLibrary`).

Callers: the CLI (`tavern import`, `tavern card show`, `tavern export card`), the TUI's
character list, and the session (which turns a `Card` into prompt text). Embedded lorebooks
stay raw in `Card.character_book`; `tavern.lore` converts them.

Importing this package is cheap: Pillow is only imported when an avatar is drawn or converted.
"""

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the type checker sees the real names; at run time they load lazily
    from tavern.cards.formats import (
        read_avatar,
        read_card,
        read_card_bytes,
        write_card_json,
        write_card_png,
        write_charx,
    )
    from tavern.cards.index import CardEntry
    from tavern.cards.library import CardLibrary
    from tavern.cards.model import Card
    from tavern.cards.sniff import detect_kind

# Names load on first use (PEP 562): the app's first frame reads `tavern.cards.index`, which
# must not pull the card parsers (pydantic) in with this package.
_HOME = {
    "read_avatar": "formats",
    "read_card": "formats",
    "read_card_bytes": "formats",
    "write_card_json": "formats",
    "write_card_png": "formats",
    "write_charx": "formats",
    "CardEntry": "index",
    "CardLibrary": "library",
    "Card": "model",
    "detect_kind": "sniff",
}


def __getattr__(name: str) -> object:
    module = _HOME.get(name)
    if module is None:
        raise AttributeError(f"module 'tavern.cards' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"tavern.cards.{module}"), name)
    globals()[name] = value
    return value


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
