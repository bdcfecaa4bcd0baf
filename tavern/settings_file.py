"""Writing settings.toml: the one place that changes the user's settings file.

`write_settings(path, current, changes)` takes dotted keys (`{"model.n_ctx": 8192}`), checks
them with the same pydantic model that reads the file (a bad value is a ConfigError naming
the key, and the file is not touched), then edits the TOML document in place with tomlkit so
the user's comments and order survive, and writes it atomically. Caller: `SettingsStore.update`
(tavern.services.settings), for the TUI's settings, persona and model screens and the CLI.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from tavern.config import Settings
from tavern.errors import ConfigError


def write_settings(path: Path, current: Settings, changes: Mapping[str, object]) -> Settings:
    """Apply `changes` (dotted keys; None clears an optional key) and return the new Settings."""
    import tomlkit

    data = current.model_dump()
    for dotted, value in changes.items():
        section, _, key = dotted.partition(".")
        if section not in data or not key or key not in data[section]:
            raise ConfigError(f"settings: no such setting '{dotted}'")
        data[section][key] = value
    try:
        new = Settings.model_validate(data)
    except Exception as err:  # pydantic's ValidationError: name the key, one line
        errors = getattr(err, "errors", None)
        if callable(errors):
            first = errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise ConfigError(f"settings: {where}: {first['msg']}") from None
        raise ConfigError(f"settings: {err}") from None
    try:
        text = path.read_text(encoding="utf-8") if path.exists() else ""
        doc = tomlkit.parse(text)
    except Exception as err:
        raise ConfigError(f"{path}: cannot read it to save the change: {err}") from None
    dumped = new.model_dump()
    for dotted in changes:
        section, _, key = dotted.partition(".")
        table = doc.get(section)
        if table is None:
            table = tomlkit.table()
            doc[section] = table
        value = dumped[section][key]
        if value is None:
            if key in table:
                del table[key]
        else:
            table[key] = value
    from tavern.store.atomic import atomic_write_text

    try:
        atomic_write_text(path, tomlkit.dumps(doc))
    except OSError as err:
        raise ConfigError(f"{path}: cannot write: {err.strerror or err}") from None
    return new


__all__ = ["write_settings"]
