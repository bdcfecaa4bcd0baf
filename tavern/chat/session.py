"""`ChatSession`: one open chat with one character, as the CLI and the TUI use it.

`send`, `regenerate`, `continue_reply` and `impersonate` return iterators of engine events
(token deltas, then `Finished`) and save the chat themselves (tavern.chat.reply), so the CLI and
the TUI save alike; the prompt comes from tavern.chat.prompt_builder. The user's message is
written durably before generation starts, so a crash or an engine failure never loses it.
Editing, branches, the author's note and CFG are small services on the chat store.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING

from tavern.chat.host import PromptHost
from tavern.chat.layout import ChatLayout
from tavern.chat.memory_link import SessionLink
from tavern.chat.prompt_builder import Books, PromptBuilder
from tavern.chat.reply import Event, ReplyWriter, now_date
from tavern.errors import TavernError
from tavern.prompt.assemble import AssembledPrompt
from tavern.prompt.inputs import HistoryMessage
from tavern.store.metadata import NoteMeta

if TYPE_CHECKING:
    from tavern.cards.model import Card
    from tavern.lore import ScanResult
    from tavern.store import ChatStore
    from tavern.store.chatfile import Chat


class ChatSession:
    """`host` is the application around the chat (tavern.session.Tavern), seen only as the
    prompt needs it (tavern.chat.host); `store` holds the chat's file (branches, renames)."""

    def __init__(
        self, host: PromptHost, store: ChatStore, key: str, card: Card, chat: Chat,
        layout: ChatLayout | None = None, warnings: list[str] | None = None,
    ):
        self._host = host
        self._store = store
        self.key = key
        self.card = card
        self.chat = chat
        self.warnings = list(warnings or [])
        self.prompts = PromptBuilder(host, key, card, chat, layout or ChatLayout())
        self._writer = ReplyWriter(self.prompts)

    @property
    def user_name(self) -> str:
        return self._host.settings.chat.user_name

    # -- the prompt (tavern.chat.prompt_builder) ---------------------------------------------------

    @property
    def last_prompt(self) -> AssembledPrompt | None:
        last = self.prompts.last
        return last.prompt if last is not None else None

    @property
    def last_lore(self) -> ScanResult | None:
        last = self.prompts.last
        return last.lore if last is not None else None

    @property
    def last_negative(self) -> str | None:
        """The CFG negative prompt of the last prompt built (the inspector shows it)."""
        last = self.prompts.last
        return last.negative if last is not None else None

    @property
    def link(self) -> SessionLink:
        """This chat as long-term memory sees it (tavern.memory.ports)."""
        return self.prompts.link

    @property
    def layout(self) -> ChatLayout:
        return self.prompts.layout

    def history(self, limit: int | None = None, upto: int | None = None) -> list[HistoryMessage]:
        return self.prompts.history(limit, upto)

    def build_prompt(self, mode: str = "normal", upto: int | None = None, explain: bool = False) -> AssembledPrompt:
        """The prompt for the next reply; `upto` leaves later messages out (a new swipe).
        `explain` records why each lorebook entry stayed out (for the inspector; slower on
        big books). A preview: nothing it computes is kept for the next turn."""
        return self.prompts.build(mode, upto, explain).prompt

    def cfg(self) -> tuple[float, str, int]:
        return self.prompts.cfg()

    def set_cfg(self, scale: float | None = None, negative: str | None = None) -> None:
        """Write the chat's CFG under SillyTavern's own chat-metadata keys."""
        self.prompts.meta.set_cfg(scale, negative)

    def scan_lore(self, books: Books | None = None, explain: bool = True) -> ScanResult | None:
        return self.prompts.scan_lore(books, explain)

    def lorebooks(self) -> Books:
        return self.prompts.lorebooks()

    # -- turns -----------------------------------------------------------------------------------

    def send(self, text: str, cancel: threading.Event | None = None) -> Iterator[Event]:
        from tavern.store import ChatMessage

        if not text.strip():
            raise TavernError("empty message: type something to send")
        self.chat.append(ChatMessage(name=self.user_name, is_user=True, mes=text, send_date=now_date()))
        yield from self._memory_turn(self._writer.reply("normal", cancel))

    def regenerate(self, cancel: threading.Event | None = None) -> Iterator[Event]:
        """A new swipe for the last character message (or a new reply if the user spoke last)."""
        mode = "swipe" if len(self.chat) and not self.chat[-1].is_user else "normal"
        yield from self._memory_turn(self._writer.reply(mode, cancel))

    def continue_reply(self, cancel: threading.Event | None = None) -> Iterator[Event]:
        yield from self._memory_turn(self._writer.reply("continue", cancel))

    def impersonate(self, cancel: threading.Event | None = None) -> Iterator[Event]:
        """Write the user's next message; the text is returned, not saved (the user edits it)."""
        yield from self._memory_turn(self._writer.reply("impersonate", cancel))

    def _memory_turn(self, events: Iterator[Event]) -> Iterator[Event]:
        """A reply with memory's background work paused (CPU contention); the summary of what
        left the window is scheduled after it."""
        memory = self._host.memory
        if memory is None:
            yield from events
            return
        try:
            with memory.turn():
                yield from events
        finally:  # also when the consumer stops at Finished and drops the generator (the TUI does)
            if self.last_prompt is not None:
                memory.schedule_summary(self.link, self.last_prompt.first_message_index)

    # -- swipes, editing any message, branches -------------------------------------------------------

    def select_swipe(self, delta: int) -> bool:
        """Show the previous (-1) or next (+1) stored swipe of the last reply. False when there is
        none that way: past the last one, SillyTavern writes a new swipe (`regenerate`)."""
        if not len(self.chat) or self.chat[-1].is_user:
            return False
        msg = self.chat[-1]
        swipes = msg.swipes or [msg.mes]
        i = (msg.swipe_id or 0) + delta
        if not 0 <= i < len(swipes):
            return False
        msg.select_swipe(i)
        self.chat.replace(len(self.chat) - 1, msg)
        return True

    def delete_last(self) -> None:
        if len(self.chat):
            self.chat.delete(len(self.chat) - 1)

    def edit_message(self, index: int, text: str) -> None:
        """Replace the text of message `index` (the swipe on show, for a reply with swipes)."""
        msg = self.chat[index]
        msg.mes = text
        if msg.swipes is not None and msg.swipe_id is not None and 0 <= msg.swipe_id < len(msg.swipes):
            msg.swipes[msg.swipe_id] = text
        self.chat.replace(index, msg)

    def delete_message(self, index: int) -> None:
        self.chat.delete(index)

    def set_hidden(self, index: int, hidden: bool) -> None:
        """Hide a message from the prompt (SillyTavern's /hide: is_system), or show it again."""
        msg = self.chat[index]
        if msg.is_system != hidden:
            msg.is_system = hidden
            self.chat.replace(index, msg)

    def branch_at(self, index: int) -> ChatSession:
        """A new chat holding messages 0..index, linked to this one; returns its session."""
        child = self._store.branch(self.chat, index)
        layout = self.layout.for_branch()
        self._host.layouts.remember(child.path, layout)
        return ChatSession(self._host, self._store, self.key, self.card, child, layout, list(child.warnings))

    def checkpoint_at(self, index: int, label: str = "") -> str:
        """A named checkpoint (a linked branch that stays in the list); returns its chat name."""
        child = self._store.checkpoint(self.chat, index, label)
        self._host.layouts.remember(child.path, self.layout.for_branch())
        return child.name

    def rename(self, new_name: str) -> str:
        """Rename this chat's file (the open chat keeps working); returns the new name."""
        self._store.rename(self.chat, new_name)
        return self.chat.name

    def search(self, text: str, limit: int = 200) -> list[tuple[int, str]]:
        """(index, text) of messages containing `text` (any case), newest first."""
        needle = text.casefold().strip()
        if not needle:
            return []
        found = []
        for i in range(len(self.chat) - 1, -1, -1):
            mes = self.chat[i].mes
            if needle in mes.casefold():
                found.append((i, mes))
                if len(found) >= limit:
                    break
        return found

    # -- the author's note -------------------------------------------------------------------------

    def author_note(self) -> dict[str, int | str]:
        """The chat's author's note as SillyTavern stores it in chat_metadata."""
        n = self.prompts.meta.note
        return {"note_prompt": n.text, "note_depth": n.depth, "note_interval": n.interval, "note_role": n.role}

    def set_author_note(self, text: str, depth: int = 4, interval: int = 1, role: int = 0) -> None:
        if depth < 0 or interval < 0 or role not in (0, 1, 2):
            raise TavernError("author's note: depth and interval must be 0 or more, role 0, 1 or 2")
        self.prompts.meta.set_note(NoteMeta(text, depth, interval, role))
