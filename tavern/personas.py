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


def _file_name(name: str) -> str:
    from tavern.store.dates import sanitize_file_name

    stem = sanitize_file_name(name.strip(), "")
    if not stem:
        raise PersonaError("a persona needs a name")
    return stem + ".json"


class PersonaStore:
    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def list(self) -> list[Persona]:
        out = []
        for path in sorted(self.folder.glob("*.json")) if self.folder.is_dir() else []:
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
                out.append(Persona(str(data["name"]), str(data.get("description", ""))))
            except (OSError, ValueError, KeyError, TypeError):
                continue  # a broken file is skipped, never fatal
        return sorted(out, key=lambda p: p.name.casefold())

    def get(self, name: str) -> Persona:
        for p in self.list():
            if p.name == name:
                return p
        raise NotFoundError(f"no persona named '{name}'")

    def save(self, persona: Persona, old_name: str | None = None) -> None:
        from tavern.store.atomic import atomic_write_text

        target = self.folder / _file_name(persona.name)
        body = json.dumps({"name": persona.name.strip(), "description": persona.description}, indent=2)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            atomic_write_text(target, body + "\n")
            if old_name and old_name != persona.name:
                old = self.folder / _file_name(old_name)
                if old != target and old.exists():
                    old.unlink()
        except OSError as err:
            raise PersonaError(f"cannot save persona '{persona.name}': {err.strerror or err}") from None

    def delete(self, name: str) -> None:
        path = self.folder / _file_name(name)
        try:
            path.unlink()
        except FileNotFoundError:
            raise NotFoundError(f"no persona named '{name}'") from None
        except OSError as err:
            raise PersonaError(f"cannot delete persona '{name}': {err.strerror or err}") from None


__all__ = ["Persona", "PersonaStore", "PersonaError"]
