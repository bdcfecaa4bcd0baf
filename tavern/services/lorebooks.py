"""Lorebooks in the data home: list, open, save, create, and find one by the name a card or
chat links it by (SillyTavern links books by name; file names may differ in case)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from tavern.errors import TavernError

if TYPE_CHECKING:
    from tavern.lore import Lorebook


class Lorebooks:
    def __init__(self, folder: Path):
        self.folder = folder

    def find(self, name: str) -> Path | None:
        exact = self.folder / f"{name}.json"
        if exact.is_file():
            return exact
        wanted = name.casefold()
        for path in sorted(self.folder.glob("*.json")):
            if path.stem.casefold() == wanted:
                return path
        return None

    def paths(self) -> list[Path]:
        """The lorebook files, by name."""
        try:
            return sorted((p for p in self.folder.glob("*.json") if p.is_file()), key=lambda p: p.stem.casefold())
        except OSError as err:
            raise TavernError(f"{self.folder}: {err.strerror or err}") from None

    def sizes(self) -> list[tuple[Path, int | None]]:
        """`paths` with each file's size in bytes (None if it vanished meanwhile)."""
        sized: list[tuple[Path, int | None]] = []
        for path in self.paths():
            try:
                sized.append((path, path.stat().st_size))
            except OSError:
                sized.append((path, None))
        return sized

    def read(self, path: Path | str) -> Lorebook:
        from tavern.lore import load_lorebook

        return load_lorebook(Path(path))

    def save(self, book: Lorebook, path: Path | str) -> None:
        """Write a lorebook whole (atomically)."""
        from tavern.lore import save_lorebook

        save_lorebook(book, Path(path))

    def create(self, name: str) -> Path:
        """A new empty lorebook named `name`; returns its file."""
        from tavern.errors import LoreError
        from tavern.lore import Lorebook, save_lorebook
        from tavern.store.names import is_clean_file_name

        name = name.strip()
        if not is_clean_file_name(name):
            raise LoreError(f"'{name}' cannot be a file name")
        path = self.folder / f"{name}.json"
        if path.exists():
            raise LoreError(f"{path}: a lorebook with this name exists")
        save_lorebook(Lorebook(name=name), path)
        return path
