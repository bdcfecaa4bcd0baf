"""The `[ui]` part of settings.toml read straight from the file, for the app's first frame.

The full settings (`tavern.config`, pydantic) load after the first frame; the theme and the
keys are needed before it. Standard library only.
"""

from __future__ import annotations

import tomllib

from tavern.paths import DataHome


def read_ui(home: DataHome) -> tuple[str, dict[str, str]]:
    """`[ui] theme` and `[ui.keys]` as written; anything odd is left for the full settings
    load to report (the first frame then simply uses the default theme)."""
    try:
        data = tomllib.loads(home.settings_file.read_text("utf-8"))
    except (OSError, ValueError):
        return "", {}
    ui = data.get("ui")
    if not isinstance(ui, dict):
        return "", {}
    theme = ui.get("theme")
    if not isinstance(theme, str):
        theme = ""
    keys = ui.get("keys")
    if not isinstance(keys, dict):
        keys = {}
    return theme, {str(k): str(v) for k, v in keys.items() if isinstance(v, str)}
