"""The characters folder's listing cache (`.tavern-index.json`), readable without the card
parsers: the app's first frame lists the library from here before pydantic and Pillow load.

`CardLibrary.list()` keeps the index fresh; `cached_entries()` only reads it, and answers None
when any card changed since (the caller then lists through `CardLibrary`). Standard library
only: importing this module costs well under a millisecond.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

INDEX_NAME = ".tavern-index.json"
INDEX_VERSION = 1


@dataclass
class CardEntry:
    """One character as listed: enough to show a list without reading the cards."""

    key: str
    name: str
    tags: list[str] = field(default_factory=list)
    creator: str = ""
    path: Path = field(default_factory=Path)
    error: str | None = None  # the file is not a readable card; `name` is then the key


def load_index(root: Path) -> dict[str, object]:
    """The index's rows by file name, as stored (a row that is not an object is stale); {}
    when there is no readable index of this version."""
    try:
        raw = json.loads((root / INDEX_NAME).read_text("utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(raw, dict) or raw.get("version") != INDEX_VERSION:
        return {}
    entries = raw.get("entries")
    return entries if isinstance(entries, dict) else {}


def entry_for(root: Path, filename: str, row: Mapping[str, object]) -> CardEntry:
    """The listing of `filename` from its index row."""
    key = filename[:-4]
    path = root / filename
    if row.get("error") is not None:
        return CardEntry(key=key, name=key, path=path, error=str(row["error"]))
    tags = row.get("tags")
    return CardEntry(
        key=key,
        name=str(row.get("name") or key),
        tags=[str(t) for t in tags] if isinstance(tags, list) else [],
        creator=str(row.get("creator") or ""),
        path=path,
    )


def card_files(root: Path) -> list[tuple[str, str, list[int]]]:
    """(file name, full path, [mtime_ns, size]) of every PNG card in the folder."""
    found = []
    with os.scandir(root) as it:
        for de in it:
            if not de.name.endswith(".png") or de.name.startswith("."):
                continue
            try:
                if not de.is_file():
                    continue
                st = de.stat()
            except OSError:
                continue
            found.append((de.name, de.path, [st.st_mtime_ns, st.st_size]))
    return found


def cached_entries(root: Path) -> list[CardEntry] | None:
    """The library's listing from the index alone, sorted as `CardLibrary.list()` sorts it;
    None when the folder is missing or any card is new or changed since the index was written."""
    if not root.is_dir():
        return None
    index = load_index(root)
    entries = []
    try:
        files = card_files(root)
    except OSError:
        return None
    for name, _path, sig in files:
        row = index.get(name)
        if not isinstance(row, dict) or row.get("sig") != sig:
            return None
        entries.append(entry_for(root, name, row))
    entries.sort(key=lambda e: (e.name.casefold(), e.key))
    return entries
