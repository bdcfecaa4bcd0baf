"""`Chats`: the chat files of the data home, by character.

A new chat starts with the card's greeting (its alternate greetings become swipes of the first
message, as in SillyTavern); `choose` picks the file `Tavern.open_chat` opens (a named one, the
latest, or a new one); opening one by name and the chat list's rename, trash and export take
a character by key, name or prefix. The files themselves are tavern.store's (`store`, a `ChatStore`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from tavern.errors import TavernError

if TYPE_CHECKING:
    from tavern.cards.library import CardLibrary
    from tavern.cards.model import Card
    from tavern.store import ChatInfo, ChatStore
    from tavern.store.chatfile import Chat


class Chats:
    def __init__(self, store: ChatStore, library: CardLibrary, user_name: Callable[[], str]) -> None:
        self.store = store
        self._library = library
        self._user_name = user_name

    def new(self, key: str, card: Card, greeting_index: int = 0, draft: bool = False) -> Chat:
        """A new chat with the character, written now (or, as a `draft`, only once it changes)."""
        from tavern.prompt.macros import MacroContext, substitute
        from tavern.store import ChatMessage

        user = self._user_name()
        greetings = [card.first_mes, *card.alternate_greetings]
        greeting = None
        if any(g.strip() for g in greetings):
            ctx = MacroContext(char=card.name, user=user)
            texts = [substitute(g, ctx) for g in greetings if g.strip()]
            idx = min(greeting_index, len(texts) - 1)
            greeting = ChatMessage(name=card.name, is_user=False, mes=texts[idx])
            if len(texts) > 1:  # SillyTavern offers alternate greetings as swipes of the first message
                greeting.swipes = texts
                greeting.swipe_id = idx
        if draft:
            return self.store.draft(key, card.name, user, greeting=greeting)
        return self.store.create(key, card.name, user, greeting=greeting)

    def choose(
        self, key: str, card: Card, chat_name: str | None = None, new: bool = False, greeting_index: int = 0,
    ) -> Chat:
        """The chat named `chat_name`, else the latest one (unless `new`), else a new one."""
        chat = None
        if chat_name:
            chat = self.store.open(key, chat_name)
        elif not new:
            chat = self.store.latest(key)
        if chat is None:
            chat = self.new(key, card, greeting_index)
        return chat

    def peek(self, key: str, card: Card, chat_name: str | None = None, greeting_index: int = 0) -> Chat:
        """`choose` that never writes: no repair, no recovered reply appended, and a character
        without a chat gets an unsaved draft of a new one."""
        from tavern.store import ChatStore

        store = ChatStore(self.store.root, read_only=True)
        chat = store.open(key, chat_name) if chat_name else store.latest(key)
        return chat if chat is not None else self.new(key, card, greeting_index, draft=True)

    def open(self, character: str, chat_name: str) -> Chat:
        """A chat of the character (a key, a name or a unique prefix) by its name."""
        return self.store.open(self._library.resolve(character), chat_name)

    def list(self, character: str) -> list[ChatInfo]:
        """The character's chats (ChatInfo), most recently changed first."""
        return self.store.list_chats(self._library.resolve(character))

    def rename(self, character: str, chat_name: str, new_name: str) -> str:
        """Rename a chat; returns its new name."""
        chat = self.open(character, chat_name)
        self.store.rename(chat, new_name)
        return chat.name

    def delete(self, character: str, chat_name: str) -> Path:
        """Move a chat to the trash; returns where it went."""
        return self.store.delete(self.open(character, chat_name))

    def export(self, character: str, chat_name: str, to: Path | str) -> Path:
        """Write a chat as .jsonl (SillyTavern's file), .md or .txt, by the target's suffix."""
        chat = self.open(character, chat_name)
        to = Path(to).expanduser()
        writers: dict[str, Callable[[Chat, Path], object]] = {
            ".jsonl": self.store.export_jsonl, ".md": self.store.export_markdown, ".txt": self.store.export_text,
        }
        writer = writers.get(to.suffix.lower())
        if writer is None:
            raise TavernError(f"{to}: export to a .jsonl, .md or .txt file")
        writer(chat, to)
        return to
