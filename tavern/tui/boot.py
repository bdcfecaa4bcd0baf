"""The app's first frame without the domain's heavy modules.

`tavern` with no command used to open the whole `Tavern` (pydantic settings, the store, the
card parsers, jinja2...) before Textual drew anything: most of a second on a loaded machine.
`Boot` is what the first frame needs instead: the data home, the `[ui]` theme and keys read
straight from settings.toml, and the library listing from the characters folder's index. The
app opens the real `Tavern` in a thread once the library is on screen (`TavernApp.tavern`
waits for it if the user acts first). Standard library only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tavern.cards.index import CardEntry, cached_entries
from tavern.paths import DataHome

if TYPE_CHECKING:
    from tavern.session import Tavern


@dataclass
class Boot:
    home: DataHome
    opener: Callable[[], Tavern]
    """Opens the real Tavern (and takes the home lock); runs in a thread after the first frame."""
    theme: str = ""
    keys: dict[str, str] = field(default_factory=dict)


def first_listing(home: DataHome) -> list[CardEntry] | None:
    """The characters as the index lists them, or None when it is stale (first start, a card
    added behind the app's back): the library then lists once the Tavern is open."""
    return cached_entries(home.characters)
