"""The rolling summary of one chat as the app edits it: read, save an edited text, switch it
off or on, write it again. A thin service over `tavern.memory.summary` for the TUI's summary
editor (the CLI's `tavern memory summary` does the same through `summary` directly).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from tavern.errors import TavernError
from tavern.memory import summary

if TYPE_CHECKING:
    from tavern.chat.session import ChatSession
    from tavern.config import MemorySettings


@dataclass
class SummaryState:
    text: str
    start: int
    end: int
    """Messages [start, end) are covered; end 0: nothing summarized yet."""
    off: bool
    edited: str = ""

    def describe(self) -> str:
        covers = f"covers messages {self.start}–{self.end - 1}" if self.end else "covers nothing yet"
        return covers + (" · off: not in the prompt" if self.off else "") + (" · edited" if self.edited else "")


def read(session: ChatSession) -> SummaryState:
    meta = summary.summary_meta(session.chat)
    text = str(session.chat.header.chat_metadata.get(summary.TEXT_KEY, "") or "")
    return SummaryState(
        text, _whole(meta.get("start", 0)), _whole(meta.get("end", 0)), bool(meta.get("off")),
        str(meta.get("edited", "")),
    )


def _whole(value: object) -> int:
    """A covered-range bound from the chat's metadata; a hand-edited one that is not a number
    reads as 0 (nothing covered) rather than failing the editor."""
    if not isinstance(value, str | int | float):
        return 0
    try:
        return int(value)
    except (ValueError, OverflowError):
        return 0


def save(session: ChatSession, text: str) -> SummaryState:
    summary.set_text(session.chat, text)
    return read(session)


def set_enabled(session: ChatSession, enabled: bool) -> SummaryState:
    summary.set_off(session.chat, not enabled)
    return read(session)


def regenerate(session: ChatSession, settings: MemorySettings) -> SummaryState:
    """Write the summary again, from the first message up to the prompt window, with the
    [memory] settings (blocking: the app runs it in a worker)."""
    window_start = max(0, session.build_prompt().first_message_index)
    if window_start == 0:
        raise TavernError("nothing has left the prompt window yet: no summary to write")
    summary.regenerate(session.link, settings, window_start)
    return read(session)
