"""Personas: who the user is in a chat (a name and a description, SillyTavern's personas).

One JSON file per persona in `<home>/personas/` (`{"name": ..., "description": ...}`), so
they are easy to copy and back up. The persona in use is not stored here: choosing one writes
`[chat] user_name` and `[chat] persona` in settings.toml (`Tavern.use_persona`), which is what
the prompt reads.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tavern.errors import NotFoundError, TavernError


class PersonaError(TavernError):
    title = "Persona"


@dataclass(frozen=True)
class Persona:
    name: str
    description: str = ""


def _stem(name: str) -> str:
    from tavern.store.names import sanitize_file_name

    stem = sanitize_file_name(name.strip(), "")
    if not stem:
        raise PersonaError("a persona needs a name")
    return stem


class PersonaStore:
    """A persona's file is found by the name inside it, not by its file name: the sanitizer
    maps "Anna" and "Anna." (or "Anna?") to one stem, so the second gets "Anna (2).json"."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def _files(self) -> list[tuple[Path, Persona]]:
        out = []
        for path in sorted(self.folder.glob("*.json")) if self.folder.is_dir() else []:
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
                out.append((path, Persona(str(data["name"]), str(data.get("description", "")))))
            except (OSError, ValueError, KeyError, TypeError):
                continue  # a broken file is skipped, never fatal
        return out

    def list(self) -> list[Persona]:
        return sorted((p for _, p in self._files()), key=lambda p: p.name.casefold())

    def get(self, name: str) -> Persona:
        for p in self.list():
            if p.name == name:
                return p
        raise NotFoundError(f"no persona named '{name}'")

    def _path_of(self, name: str) -> Path | None:
        return next((path for path, p in self._files() if p.name == name), None)

    def _free_path(self, name: str) -> Path:
        from tavern.store.names import free_file_name

        # Without case: on macOS and Windows "anna.json" and "Anna.json" are one file.
        taken = {p.name.casefold() for p in self.folder.glob("*.json")} if self.folder.is_dir() else set()
        return self.folder / free_file_name(_stem(name), ".json", lambda n: n.casefold() in taken)

    def save(self, persona: Persona, old_name: str | None = None) -> None:
        from tavern.store.atomic import atomic_write_text, make_dirs

        name = persona.name.strip()
        _stem(name)  # a clear error for a name that cannot be a file name
        body = json.dumps({"name": name, "description": persona.description}, indent=2)
        try:
            target = self._path_of(name) or self._free_path(name)
            make_dirs(self.folder)
            atomic_write_text(target, body + "\n")
            old = self._path_of(old_name) if old_name and old_name != name else None
            if old is not None and old != target:
                old.unlink()
        except OSError as err:
            raise PersonaError(f"cannot save persona '{persona.name}': {err.strerror or err}") from None

    def delete(self, name: str) -> None:
        path = self._path_of(name)
        if path is None:
            raise NotFoundError(f"no persona named '{name}'")
        try:
            path.unlink()
        except FileNotFoundError:
            raise NotFoundError(f"no persona named '{name}'") from None
        except OSError as err:
            raise PersonaError(f"cannot delete persona '{name}': {err.strerror or err}") from None


__all__ = ["Persona", "PersonaStore", "PersonaError"]
