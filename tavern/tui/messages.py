"""Messages the TUI's workers post to the UI thread (past tense, as things that happened)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual.message import Message

if TYPE_CHECKING:
    from tavern.engines.base import TurnStats


class EngineLoaded(Message):
    def __init__(self, model: str, seconds: float) -> None:
        super().__init__()
        self.model = model
        self.seconds = seconds


class EngineFailed(Message):
    def __init__(self, error: str) -> None:
        super().__init__()
        self.error = error


class ReplyDelta(Message):
    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text


class ReplyFinished(Message):
    def __init__(self, text: str, stats: TurnStats, error: str | None, mode: str) -> None:
        super().__init__()
        self.text = text
        self.stats = stats
        self.error = error
        self.mode = mode


class ReplyFailed(Message):
    def __init__(self, error: str, draft: str) -> None:
        super().__init__()
        self.error = error
        self.draft = draft
