"""`ChatMeta`: typed access to a chat's `chat_metadata`, the one place its key names live.

SillyTavern keeps per-chat state in the first line of the chat file: the author's note
(`note_*`), classifier-free guidance (`cfg_*`), World Info timers (`timedWorldInfo`), macro
variables (`variables`), the chat's own lorebook (`world_info`). Tavern adds a few keys of its
own (`tavern_backend`, `tavern_summary`, `tavern_summary_meta`). Every reader and writer goes
through this class, so a key is spelled once and a malformed value (a string where a number
belongs, hand-edited or from another tool) reads as the default instead of raising.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

BACKEND_KEY = "tavern_backend"
SUMMARY_TEXT_KEY = "tavern_summary"
SUMMARY_META_KEY = "tavern_summary_meta"

NOTE_ROLES = {0: "system", 1: "user", 2: "assistant"}
"""SillyTavern's extension_prompt_roles, as the author's note stores them."""


class _Header(Protocol):
    chat_metadata: dict[str, object]


class _Chat(Protocol):
    @property
    def header(self) -> _Header: ...

    def update_metadata(self, values: Mapping[str, object]) -> None: ...


@dataclass(frozen=True)
class NoteMeta:
    """The author's note as SillyTavern stores it."""

    text: str = ""
    depth: int = 4
    interval: int = 1
    role: int = 0

    @property
    def role_name(self) -> str:
        return NOTE_ROLES.get(self.role, "system")


@dataclass(frozen=True)
class CfgMeta:
    """The chat's CFG keys; None where the chat sets nothing (the card or settings decide)."""

    guidance_scale: float | None = None
    negative_prompt: str | None = None
    insertion_depth: int | None = None


def _int(value: object, default: int) -> int:
    if not isinstance(value, str | int | float):
        return default  # null, a list, an object: what int() refuses with TypeError
    try:
        return int(value)
    except (ValueError, OverflowError):  # OverflowError: Infinity, which JSON readers accept
        return default


class ChatMeta:
    def __init__(self, chat: _Chat):
        self._chat = chat

    @property
    def raw(self) -> dict[str, object]:
        return self._chat.header.chat_metadata

    # -- author's note ------------------------------------------------------------------------

    @property
    def note(self) -> NoteMeta:
        m = self.raw
        return NoteMeta(
            text=str(m.get("note_prompt", "") or ""),
            depth=_int(m.get("note_depth", 4), 4),
            interval=_int(m.get("note_interval", 1), 1),
            role=_int(m.get("note_role", 0), 0),
        )

    def set_note(self, note: NoteMeta) -> None:
        self._chat.update_metadata(
            {"note_prompt": note.text, "note_depth": note.depth, "note_interval": note.interval,
             "note_role": note.role}
        )

    # -- classifier-free guidance ------------------------------------------------------------

    @property
    def cfg(self) -> CfgMeta:
        m = self.raw
        scale: float | None = None
        depth: int | None = None
        raw_scale, raw_depth = m.get("cfg_guidance_scale"), m.get("cfg_prompt_insertion_depth")
        # Anything but a finite number or a numeric string reads as unset (float() and int()
        # refuse it, or overflow on Infinity and a 400-digit integer).
        with contextlib.suppress(ValueError, OverflowError):
            if isinstance(raw_scale, str | int | float) and raw_scale != "":
                scale = float(raw_scale)
                scale = scale if math.isfinite(scale) else None
        with contextlib.suppress(ValueError, OverflowError):
            if isinstance(raw_depth, str | int | float) and raw_depth != "":
                depth = int(raw_depth)
        negative = str(m["cfg_negative_prompt"]) if m.get("cfg_negative_prompt") else None
        return CfgMeta(scale, negative, depth)

    def set_cfg(self, scale: float | None = None, negative: str | None = None) -> None:
        changes: dict[str, object] = {}
        if scale is not None:
            changes["cfg_guidance_scale"] = scale
        if negative is not None:
            changes["cfg_negative_prompt"] = negative
        if changes:
            self._chat.update_metadata(changes)

    # -- state that turns carry forward --------------------------------------------------------

    @property
    def timed_world_info(self) -> dict[str, object] | None:
        value = self.raw.get("timedWorldInfo")
        return value if isinstance(value, dict) else None

    def variables(self) -> dict[str, object]:
        """A deep copy of the chat's macro variables: a prompt built and never sent must not
        change them."""
        value = self.raw.get("variables")
        return copy.deepcopy(value) if isinstance(value, dict) else {}

    def turn_changes(
        self, timed_state: Mapping[str, object] | None, variables: Mapping[str, object]
    ) -> dict[str, object]:
        """The metadata a sent turn changes: World Info timers and variables that differ."""
        changes: dict[str, object] = {}
        if timed_state is not None and timed_state != self.raw.get("timedWorldInfo"):
            changes["timedWorldInfo"] = timed_state
        if variables != (self.raw.get("variables") or {}):
            changes["variables"] = variables
        return changes

    def update(self, changes: Mapping[str, object]) -> None:
        if changes:
            self._chat.update_metadata(changes)

    # -- links -------------------------------------------------------------------------------

    @property
    def world_info(self) -> str:
        """The chat's own lorebook (SillyTavern's chat lore), by name; "" = none."""
        return str(self.raw.get("world_info") or "")

    @property
    def backend(self) -> str:
        """The remote profile this chat uses ("" = inherit from the character or settings)."""
        return str(self.raw.get(BACKEND_KEY) or "")

    def set_backend(self, name: str) -> None:
        self._chat.update_metadata({BACKEND_KEY: name})

    # -- the rolling summary -------------------------------------------------------------------

    @property
    def summary_text(self) -> str:
        return str(self.raw.get(SUMMARY_TEXT_KEY, "") or "")

    @property
    def summary_state(self) -> dict[str, object]:
        value = self.raw.get(SUMMARY_META_KEY)
        return dict(value) if isinstance(value, dict) else {}

    @property
    def summary_for_prompt(self) -> str:
        """The summary text the prompt gets ("" when switched off)."""
        return "" if self.summary_state.get("off") else self.summary_text
