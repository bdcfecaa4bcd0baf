"""`SettingsStore`: the settings in use and the settings.toml they were read from.

`update` writes changed keys to the file (tavern.settings_file keeps the user's comments) and
uses them from now on; whoever holds the engine hears of the model settings changing, since a
new context size or RoPE means loading the model again.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

from tavern.config import ModelSettings, Settings


class SettingsStore:
    def __init__(
        self, path: Path, current: Settings, model_changed: Callable[[ModelSettings, ModelSettings], bool]
    ) -> None:
        self.path = path
        self.current = current
        self._model_changed = model_changed

    def update(self, changes: Mapping[str, object]) -> bool:
        """Write `changes` (dotted keys; None clears an optional one) and use them from now on.
        Returns True when the model must be loaded again (path, context, RoPE...)."""
        from tavern.settings_file import write_settings

        old = self.current
        self.current = write_settings(self.path, old, changes)
        return self._model_changed(old.model, self.current.model)
