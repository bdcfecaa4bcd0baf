"""The first start of a data home: the bundled characters and lorebooks copied in, and a
commented settings.toml written, once. `Tavern.open` calls `seed_bundled`."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from tavern.errors import TavernError
from tavern.paths import DataHome, bundled_dir

if TYPE_CHECKING:
    from tavern.cards.library import CardLibrary

SEED_MARKER = ".seeded"


def seed_bundled(home: DataHome, library: CardLibrary) -> None:
    """Copy the bundled characters and lorebooks in, once: a character the user deletes must
    not come back on the next start."""
    from tavern.store.atomic import atomic_write_text, copy_file

    marker = home.root / SEED_MARKER
    if marker.exists():
        return
    cards = bundled_dir("cards")
    for png in sorted(cards.glob("*.png")) if cards.is_dir() else []:
        try:
            library.import_file(png)
        except TavernError:
            continue  # a broken bundled file must not stop the app from starting
    books = bundled_dir("lorebooks")
    for book in sorted(books.glob("*.json")) if books.is_dir() else []:
        target = home.lorebooks / book.name
        if not target.exists():
            copy_file(book, target)
    if not home.settings_file.exists():
        from tavern.config import DEFAULT_SETTINGS_TOML

        atomic_write_text(home.settings_file, DEFAULT_SETTINGS_TOML)
    atomic_write_text(marker, datetime.now().isoformat())
