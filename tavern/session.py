"""The application: what the CLI and the TUI both call.

`Tavern` is one data home with its settings, composed of services with one job each: the engine
host (tavern.services.engine_host), the card library and chat store, lorebooks, presets and
formats, personas, long-term memory. Its methods are thin: each hands the call to the service
that owns it, so both fronts do the same thing. `ChatSession` (tavern.chat.session) is one open
chat: its prompt (tavern.chat.prompt_builder) and its replies (tavern.chat.reply).

Data flows one way: store -> assembler -> engine -> stream -> store (and the screen, which only
listens to the events).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tavern.chat.layout import LayoutMemory
from tavern.chat.session import ChatSession
from tavern.config import Settings, load_settings
from tavern.engines.base import Engine
from tavern.errors import TavernError
from tavern.paths import DataHome, bundled_dir, open_home
from tavern.prompt.assemble import TokenCounter
from tavern.services.engine_host import EngineHost
from tavern.services.lorebooks import Lorebooks
from tavern.services.presets import Presets

if TYPE_CHECKING:
    from tavern.cards.model import Card
    from tavern.engines.samplers import SamplerSettings
    from tavern.importing import ImportReport
    from tavern.lore import Lorebook, ScanResult
    from tavern.memory.service import MemoryService
    from tavern.personas import PersonaStore
    from tavern.prompt.story import StoryTemplate
    from tavern.prompt.templates import PromptFormat
    from tavern.store import ChatInfo
    from tavern.store.chatfile import Chat

SEED_MARKER = ".seeded"


class Tavern:
    """One data home, its settings, and the engine. Build with `Tavern.open(...)`."""

    def __init__(self, home: DataHome, settings: Settings):
        from tavern.cards.library import CardLibrary
        from tavern.store import ChatStore

        self.home = home
        self.settings = settings
        self.library = CardLibrary(home.characters)
        self.chats = ChatStore(home.chats)
        self.engines = EngineHost(home.root, home.models, home.presets, lambda: self.settings)
        self.lorebook_files = Lorebooks(home.lorebooks)
        self.presets = Presets(home.presets, home.models)
        self.layouts = LayoutMemory()
        """Each chat's notes anchors and window floor as its last sent turn left them."""
        self._memory: MemoryService | None = None
        self._home_lock: Any = None  # a tavern.store.lock handle, held for the process

    @classmethod
    def open(cls, home: Path | str | None = None, settings: Settings | None = None, **overrides: Any) -> Tavern:
        data_home = open_home(home).ensure()
        if settings is None:
            settings = load_settings(data_home.settings_file)
        if overrides:
            settings = settings.with_overrides(**overrides)
        app = cls(data_home, settings)
        app.seed_bundled()
        return app

    # -- first start -------------------------------------------------------------------------

    def seed_bundled(self) -> None:
        """Copy the bundled characters and lorebooks in, once: a character the user deletes
        must not come back on the next start."""
        from tavern.store.atomic import atomic_write_text, copy_file

        marker = self.home.root / SEED_MARKER
        if marker.exists():
            return
        cards = bundled_dir("cards")
        for png in sorted(cards.glob("*.png")) if cards.is_dir() else []:
            try:
                self.library.import_file(png)
            except TavernError:
                continue  # a broken bundled file must not stop the app from starting
        books = bundled_dir("lorebooks")
        for book in sorted(books.glob("*.json")) if books.is_dir() else []:
            target = self.home.lorebooks / book.name
            if not target.exists():
                copy_file(book, target)
        if not self.home.settings_file.exists():
            from tavern.config import DEFAULT_SETTINGS_TOML

            atomic_write_text(self.home.settings_file, DEFAULT_SETTINGS_TOML)
        atomic_write_text(marker, datetime.now().isoformat())

    # -- the engine (tavern.services.engine_host) ----------------------------------------------

    def load_engine(self) -> Engine:
        """The engine the next reply uses, loaded or connected now if it is not."""
        return self.engines.load()

    def use_engine(self, engine: Engine) -> None:
        """Use an engine built elsewhere (tests and benchmarks share one model)."""
        self.engines.adopt(engine)

    @property
    def engine_loaded(self) -> bool:
        return self.engines.loaded

    @property
    def backend_name(self) -> str:
        return self.engines.backend_name

    @property
    def backend_override(self) -> str | None:
        return self.engines.backend_override

    @backend_override.setter
    def backend_override(self, name: str | None) -> None:
        self.engines.backend_override = name

    @property
    def load_warnings(self) -> list[str]:
        return self.engines.load_warnings

    @property
    def load_notes(self) -> list[str]:
        return self.engines.load_notes

    def take_notices(self) -> list[str]:
        return self.engines.take_notices()

    def use_chat_backend(self, card: Card, chat: Chat) -> None:
        """Follow the chat's or the character's backend choice (see tavern.backends)."""
        from tavern.backends import chosen_backend

        self.engines.backend_context = chosen_backend(card, chat)

    def prompt_format(self) -> PromptFormat:
        return self.engines.prompt_format()

    @property
    def format_reason(self) -> str:
        return self.engines.format_reason

    def context_preset(self) -> StoryTemplate:
        return self.engines.context_preset()

    def counter(self) -> TokenCounter:
        return self.engines.counter()

    # -- memory ----------------------------------------------------------------------------------

    @property
    def memory(self) -> MemoryService | None:
        """Long-term memory (tavern.memory.service), or None when [memory] enabled = false."""
        if self._memory is None and self.settings.memory.enabled:
            from tavern.memory.service import MemoryService

            self._memory = MemoryService(self.settings.memory, self.home.memory)
        return self._memory

    def close(self, timeout: float = 10.0) -> None:
        """Before the process exits: stop long-term memory's background worker, waiting at most
        `timeout` seconds (see MemoryService.close). The engine is left to the interpreter: a
        reply the app did not finish may still hold it, and waiting for it would hang the exit."""
        if self._memory is not None:
            self._memory.close(timeout)

    # -- samplers, formats, models (tavern.services.presets) -------------------------------------

    def sampler_preset(self, name: str) -> SamplerSettings:
        return self.presets.sampler_preset(name)

    def sampler_settings(self, seed: int | None = None, temperature: float | None = None) -> SamplerSettings:
        return self.presets.sampler_settings(self.settings.generation, seed, temperature)

    def available_presets(self) -> list[str]:
        return self.presets.names()

    def available_formats(self) -> list[str]:
        return self.presets.formats()

    def available_models(self) -> list[str]:
        return self.presets.models()

    # -- characters and chats --------------------------------------------------------------------

    def character(self, name: str) -> tuple[str, Card]:
        """(key, Card) for a key, a name or a unique prefix; NotFoundError otherwise."""
        key = self.library.resolve(name)
        return key, self.library.get(key)

    def open_chat(
        self,
        character: str,
        new: bool = False,
        chat_name: str | None = None,
        greeting_index: int = 0,
        read_only: bool = False,
    ) -> ChatSession:
        """A chat to talk in. `read_only` (previews, exports, scans) never writes: no repair, no
        recovered reply appended, and a character without a chat gets an unsaved draft of a new
        one, so it can run beside a Tavern that is streaming into the same chat."""
        key, card = self.character(character)
        if read_only:
            from tavern.store import ChatStore

            store = ChatStore(self.home.chats, read_only=True)
            chat = store.open(key, chat_name) if chat_name else store.latest(key)
            if chat is None:
                chat = self.new_chat(key, card, greeting_index, draft=True)
            return self.session_for(key, card, chat)
        chat = None
        if chat_name:
            chat = self.chats.open(key, chat_name)
        elif not new:
            chat = self.chats.latest(key)
        if chat is None:
            chat = self.new_chat(key, card, greeting_index)
        self.use_chat_backend(card, chat)
        if chat.recovered_reply is not None:
            # A reply was being written when Tavern stopped: keep it, as a cancelled one is kept.
            recovered = chat.recovered_reply
            chat.discard_reply()
            chat.append(recovered)
        session = self.session_for(key, card, chat)
        if self.memory is not None:
            self.memory.attach(session.link)  # indexes the chat in the background, hears its edits
        return session

    def session_for(self, key: str, card: Card, chat: Chat) -> ChatSession:
        """A session on an open chat, with the layout its last sent turn left in this process."""
        return ChatSession(self, key, card, chat, self.layouts.get(chat.path), warnings=list(chat.warnings))

    def new_chat(self, key: str, card: Card, greeting_index: int = 0, draft: bool = False) -> Chat:
        from tavern.prompt.macros import MacroContext, substitute
        from tavern.store import ChatMessage

        user = self.settings.chat.user_name
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
            return self.chats.draft(key, card.name, user, greeting=greeting)
        return self.chats.create(key, card.name, user, greeting=greeting)

    def lock_home(self) -> None:
        """One writer per data home: a second Tavern that would write chats is refused."""
        from tavern.store.lock import acquire_home_lock

        if self._home_lock is None:
            self._home_lock = acquire_home_lock(self.home.root)

    def list_chats(self, character: str) -> list[ChatInfo]:
        """The character's chats (ChatInfo), most recently changed first."""
        return self.chats.list_chats(self.library.resolve(character))

    def rename_chat(self, character: str, chat_name: str, new_name: str) -> str:
        """Rename a chat; returns its new name."""
        key = self.library.resolve(character)
        chat = self.chats.open(key, chat_name)
        self.chats.rename(chat, new_name)
        return chat.name

    def delete_chat(self, character: str, chat_name: str) -> Path:
        """Move a chat to the trash; returns where it went."""
        key = self.library.resolve(character)
        return self.chats.delete(self.chats.open(key, chat_name))

    def export_chat(self, character: str, chat_name: str, to: Path | str) -> Path:
        """Write a chat as .jsonl (SillyTavern's file), .md or .txt, by the target's suffix."""
        key = self.library.resolve(character)
        chat = self.chats.open(key, chat_name)
        to = Path(to).expanduser()
        writers: dict[str, Callable[[Chat, Path], object]] = {
            ".jsonl": self.chats.export_jsonl, ".md": self.chats.export_markdown, ".txt": self.chats.export_text,
        }
        writer = writers.get(to.suffix.lower())
        if writer is None:
            raise TavernError(f"{to}: export to a .jsonl, .md or .txt file")
        writer(chat, to)
        return to

    def save_character(self, key: str | None, card: Card) -> str:
        """Write a card: under `key` (an edit, the picture kept), or as a new character under a
        free key made from its name. Returns the key."""
        from tavern.cards.library import key_for_name
        from tavern.errors import CardError

        if not card.name.strip():
            raise CardError("a character needs a name")
        if key is None:
            base = key_for_name(card.name)
            taken = {e.key.casefold() for e in self.library.list()}
            key, n = base, 1
            while key.casefold() in taken:
                key, n = f"{base}_{n}", n + 1
        self.library.save(key, card)
        return key

    def import_files(
        self, paths: list[Path | str], progress: Callable[[int, int], None] | None = None,
        character: str | None = None,
    ) -> ImportReport:
        """Import cards, lorebooks, chats and presets (a folder: the files in it), never
        overwriting one of the same name; one report item per file (tavern.importing)."""
        from tavern.importing import import_paths

        return import_paths(
            self.home, paths, library=self.library, chats=self.chats, character=character, progress=progress
        )

    # -- lorebooks (tavern.services.lorebooks) ---------------------------------------------------

    def lore_settings(self) -> Any:
        """The [lore] settings: the scan takes the settings model itself (one definition)."""
        return self.settings.lore

    def scan_lore_text(self, books: list[tuple[str, Lorebook]], text: str) -> ScanResult:
        """`tavern lore scan --text`: one message of yours scanned as a turn would scan it (the
        [lore] settings, the model's tokenizer for the budget), without a chat."""
        from tavern.lore import ScanMessage, scan_lore

        return scan_lore(
            books,
            [ScanMessage(self.settings.chat.user_name, text, True)],
            self.settings.lore,
            context_size=self.load_engine().context_size,
            count_tokens=self.counter(),
            chat_length=1,
            rng_seed=0,
        )

    def find_lorebook(self, name: str) -> Path | None:
        """A lorebook file in the data home by its name (SillyTavern links books by name)."""
        return self.lorebook_files.find(name)

    def list_lorebooks(self) -> list[Path]:
        return self.lorebook_files.paths()

    def lorebook_sizes(self) -> list[tuple[Path, int | None]]:
        return self.lorebook_files.sizes()

    def open_lorebook(self, path: Path | str) -> Lorebook:
        return self.lorebook_files.open(path)

    def save_lorebook(self, book: Lorebook, path: Path | str) -> None:
        self.lorebook_files.save(book, path)

    def create_lorebook(self, name: str) -> Path:
        return self.lorebook_files.create(name)

    # -- settings and personas -------------------------------------------------------------------

    def update_settings(self, changes: dict[str, Any]) -> bool:
        """Write `changes` (dotted keys) to settings.toml and use them from now on. Returns True
        when the model must be loaded again (path, context, RoPE...): the engine is unloaded
        here and loads on next use."""
        from tavern.settings_file import write_settings

        old = self.settings
        self.settings = write_settings(self.home.settings_file, old, changes)
        return self.engines.settings_changed(old.model, self.settings.model)

    @property
    def personas(self) -> PersonaStore:
        from tavern.personas import PersonaStore

        return PersonaStore(self.home.root / "personas")

    def use_persona(self, name: str) -> None:
        """Speak as a saved persona: its name and description go to [chat] in settings.toml."""
        persona = self.personas.get(name)
        self.update_settings({"chat.user_name": persona.name, "chat.persona": persona.description})


__all__ = ["ChatSession", "Tavern"]
