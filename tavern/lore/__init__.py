"""Lorebooks (SillyTavern's World Info): the model, file conversion and the activation scan.

Callers: the prompt assembler (`scan_lore` every turn, `ScanResult.by_position()`), the card
code (`lorebook_from_character_book` / `lorebook_to_character_book`), the CLI
(`tavern lore scan`, through `tavern.lore.report`) and the TUI. Importing this package is
cheap (stdlib plus the small `regex` package).

Modules: `model` (entries and books), `convert` (world JSON files), `card_book` (a card's
`character_book`), `fields` (lenient field reading for both), `keys` (one key: text or
regex), `index` (books compiled for scanning), `matching` (the scan text and key matching),
`rules` (the rules for one entry), `scan` (the scan's loop, budget and result), `timed`
(sticky, cooldown, delay), `report` (the scan as text or JSON).
"""

from tavern.lore.card_book import (
    lorebook_from_character_book,
    lorebook_from_character_book_cached,
    lorebook_to_character_book,
)
from tavern.lore.convert import (
    load_lorebook,
    load_lorebook_cached,
    lorebook_from_dict,
    lorebook_to_world_dict,
    save_lorebook,
)
from tavern.lore.keys import split_keys
from tavern.lore.model import Lorebook, LoreEntry, parse_decorators
from tavern.lore.scan import (
    ActivatedEntry,
    BrokenEntry,
    LoreSettings,
    Rejection,
    ScanMessage,
    ScanResult,
    scan_lore,
)

__all__ = [
    "ActivatedEntry",
    "BrokenEntry",
    "LoreEntry",
    "LoreSettings",
    "Lorebook",
    "Rejection",
    "ScanMessage",
    "ScanResult",
    "load_lorebook",
    "load_lorebook_cached",
    "lorebook_from_character_book",
    "lorebook_from_character_book_cached",
    "lorebook_from_dict",
    "lorebook_to_character_book",
    "lorebook_to_world_dict",
    "parse_decorators",
    "save_lorebook",
    "scan_lore",
    "split_keys",
]
