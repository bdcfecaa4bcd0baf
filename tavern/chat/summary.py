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
        text, int(meta.get("start", 0)), int(meta.get("end", 0)), bool(meta.get("off")), str(meta.get("edited", ""))
    )


def save(session: ChatSession, text: str) -> SummaryState:
    summary.set_text(session.chat, text)
    return read(session)


def set_enabled(session: ChatSession, enabled: bool) -> SummaryState:
    summary.set_off(session.chat, not enabled)
    return read(session)


def regenerate(session: ChatSession) -> SummaryState:
    """Write the summary again, from the first message up to the prompt window (blocking: the
    app runs it in a worker)."""
    window_start = max(0, session.build_prompt().first_message_index)
    if window_start == 0:
        raise TavernError("nothing has left the prompt window yet: no summary to write")
    summary.regenerate(session.link, session.app.settings.memory, window_start)
    return read(session)
