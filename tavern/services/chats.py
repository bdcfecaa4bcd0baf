"""`Chats`: the chat files of the data home, by character.

A new chat starts with the card's greeting (its alternate greetings become swipes of the first
message, as in SillyTavern); `choose` picks the file `Tavern.open_chat` opens (a named one, the
one opened last, or a new one); opening one by name and the chat list's rename, trash and export
take a character by key, name or prefix. The files themselves are tavern.store's (`store`, a
`ChatStore`); which chat was opened last and each chat's unsent text are `state`'s
(tavern.services.chat_state, a file of the data home: opening a chat changes no chat or card).
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
        from tavern.services.chat_state import FILE_NAME, ChatState

        self.store = store
        self._library = library
        self._user_name = user_name
        self.state = ChatState(store.home / FILE_NAME, read_only=store.read_only)

    def new(self, key: str, card: Card, greeting_index: int = 0, draft: bool = False) -> Chat:
        """A new chat with the character, written now (or, as a `draft`, only once it changes)."""
        from tavern.prompt.macro_context import MacroContext
        from tavern.prompt.macros import substitute
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
        """The chat named `chat_name`, else the one opened last (unless `new`; SillyTavern's
        choice: the latest changed one may be a branch left behind), else a new one. The choice
        is remembered as the character's last opened chat."""
        chat = None
        if chat_name:
            chat = self.store.open(key, chat_name)
        elif not new:
            last = self._last_opened(key, card)
            chat = self.store.open(key, last) if last else self.store.latest(key)
        if chat is None:
            chat = self.new(key, card, greeting_index)
        try:
            self.state.opened(key, chat.name)
        except TavernError as err:
            chat.warnings.append(f"could not remember the last opened chat: {err}")
        return chat

    def remember_opened(self, key: str, chat_name: str) -> None:
        """`chat_name` is now open (a branch, a chat picked from the list): Enter in the library
        and `tavern chat` without `--chat` come back to it. Raises ChatStoreError."""
        self.state.opened(key, chat_name)

    def _last_opened(self, key: str, card: Card) -> str | None:
        """The character's last opened chat if it still exists: Tavern's record, else the
        card's SillyTavern `chat` field (a card and chats brought over from SillyTavern)."""
        folder = self.store.folder(key)
        from_card = card.root_extra.get("chat")
        for name in (self.state.last_opened(key), from_card if isinstance(from_card, str) else None):
            if not name:
                continue
            name = name.removesuffix(".jsonl")
            if Path(name).name == name and not name.startswith(".") and (folder / f"{name}.jsonl").is_file():
                return name
        return None

    def peek(self, key: str, card: Card, chat_name: str | None = None, greeting_index: int = 0) -> Chat:
        """`choose` that never writes: no repair, no recovered reply appended, and a character
        without a chat gets an unsaved draft of a new one."""
        from tavern.store import ChatStore

        store = ChatStore(self.store.root, read_only=True)
        name = chat_name or self._last_opened(key, card)
        chat = store.open(key, name) if name else store.latest(key)
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
        old = chat.name
        self.store.rename(chat, new_name)
        try:
            self.state.renamed(chat.character_key, old, chat.name)
        except TavernError:
            pass  # the rename is done; only the record of the last opened chat may be stale
        return chat.name

    def delete(self, character: str, chat_name: str) -> Path:
        """Move a chat to the trash; returns where it went."""
        chat = self.open(character, chat_name)
        name = chat.name
        trashed = self.store.delete(chat)
        try:
            self.state.forget(chat.character_key, name)
        except TavernError:
            pass  # the chat is in the trash; a stale record falls back to the latest chat
        return trashed

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
