"""The project's exceptions.

Every error a user can cause (a bad file, a missing model, a full disk) is a TavernError whose
message is one line that names the thing and the problem; the CLI prints it without a
traceback and the TUI shows it as a notification.
"""

from __future__ import annotations


def json_kind(value: object) -> str:
    """How a parsed JSON value's type is named in a one-line error ("is a list, not a string")."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


class TavernError(Exception):
    """Base of every expected failure. `str(err)` is the one line shown to the user."""

    title = "Error"


class ConfigError(TavernError):
    title = "Settings"


class DataHomeError(TavernError):
    title = "Data home"


class CardError(TavernError):
    title = "Character card"


class LoreError(TavernError):
    title = "Lorebook"


class ChatStoreError(TavernError):
    title = "Chat store"


class TemplateError(TavernError):
    title = "Prompt template"


class PresetError(TavernError):
    title = "Preset"


class EngineError(TavernError):
    title = "Engine"


class ModelLoadError(EngineError):
    title = "Model"


class NotFoundError(TavernError):
    title = "Not found"


class MemoryError_(TavernError):
    """Long-term memory (Chroma, the embedding model) is unavailable or refused a request."""

    title = "Memory"
