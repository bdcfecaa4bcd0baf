"""Where a chat's prompt put things last turn, kept so the next turn keeps the KV cache valid.

`note_anchors`: where each notes unit (a lore entry, the summary, a recalled message) sat in the
last prompt that was sent (see tavern.prompt.assemble); `window_floor`: the oldest message of
that prompt. `LayoutMemory` keeps them per chat file for the process: a chat opened again (the
user talked to another character meanwhile) builds the prompt its saved KV state holds, not a
fresh layout.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class ChatLayout:
    note_anchors: dict[str, tuple[int, str]] = field(default_factory=dict)
    window_floor: int | None = None

    def for_branch(self) -> ChatLayout:
        """A branch starts with these notes anchors, so its first prompt places the lore where
        the parent's cells in the engine have it (anchors past the branch point are ignored:
        those units go before the newest message). Not the window floor: a branch from far back
        has room for older messages, and gets them."""
        return ChatLayout(dict(self.note_anchors), None)


class LayoutMemory:
    def __init__(self) -> None:
        self._by_path: dict[str, ChatLayout] = {}

    def get(self, path: Path) -> ChatLayout:
        """A copy of the layout the chat at `path` last sent (an empty one if none)."""
        found = self._by_path.get(str(path))
        return ChatLayout(dict(found.note_anchors), found.window_floor) if found else ChatLayout()

    def remember(self, path: Path, layout: ChatLayout) -> None:
        self._by_path[str(path)] = ChatLayout(dict(layout.note_anchors), layout.window_floor)
