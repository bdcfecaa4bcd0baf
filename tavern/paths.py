"""Where Tavern keeps its data: the one module that computes a directory.

The data home is `$TAVERN_HOME` when set, else the platform's user data directory
(platformdirs). Everything the user owns lives below it:

    settings.toml   characters/   chats/   lorebooks/   presets/   models/
    memory/         backups/      trash/   .lock

New folders there are 0700 and new files 0600 (`tavern.store.atomic`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from tavern.errors import DataHomeError

SUBDIRS = ("characters", "chats", "lorebooks", "presets", "models", "memory", "backups", "trash")


def default_home() -> Path:
    env = os.environ.get("TAVERN_HOME")
    if env:
        return Path(env).expanduser()
    import platformdirs  # small, but only needed when no TAVERN_HOME is set

    return Path(platformdirs.user_data_dir("tavern", appauthor=False))


def cache_root() -> Path:
    """Where Tavern keeps what it can rebuild (saved KV states, a probe's verdict): never the
    data home, which holds only what the user owns. `$TAVERN_CACHE` when set (tests), else the
    platform's user cache directory."""
    env = os.environ.get("TAVERN_CACHE")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("tavern", appauthor=False))


@dataclass(frozen=True)
class DataHome:
    root: Path

    @property
    def settings_file(self) -> Path:
        return self.root / "settings.toml"

    @property
    def characters(self) -> Path:
        return self.root / "characters"

    @property
    def chats(self) -> Path:
        return self.root / "chats"

    @property
    def lorebooks(self) -> Path:
        return self.root / "lorebooks"

    @property
    def presets(self) -> Path:
        return self.root / "presets"

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def memory(self) -> Path:
        return self.root / "memory"

    @property
    def backups(self) -> Path:
        return self.root / "backups"

    @property
    def trash(self) -> Path:
        return self.root / "trash"

    def ensure(self) -> DataHome:
        """Create the folders; a home we cannot write to is one clear error, not a traceback.

        A new home and its folders are the user's own (0700), as SillyTavern's docs advise for
        shared hosts: chats and cards are private. An existing home keeps its permissions."""
        from tavern.store.atomic import atomic_write_bytes, make_dirs

        try:
            for name in SUBDIRS:
                make_dirs(self.root / name)
            # Probed the way every real write goes (a temp file renamed into place).
            probe = self.root / ".write-test"
            atomic_write_bytes(probe, b"", durable=False)
            probe.unlink()
        except OSError as err:
            reason = err.strerror or str(err)
            raise DataHomeError(
                f"data home {self.root} is not writable: {reason} (set TAVERN_HOME to another folder)"
            ) from None
        return self


def open_home(path: Path | str | None = None) -> DataHome:
    return DataHome(Path(path).expanduser() if path else default_home())


def repo_root() -> Path:
    """The folder holding the bundled `cards/`, `lorebooks/`, `prompt_templates/`, `presets/`.

    In a source checkout or an editable install that is the repository; in a wheel the
    bundled folders are installed as package data under `tavern/_bundled/`.
    """
    here = Path(__file__).resolve().parent
    bundled = here / "_bundled"
    if bundled.is_dir():
        return bundled
    return here.parent


def bundled_dir(name: str) -> Path:
    return repo_root() / name
