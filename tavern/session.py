"""The application: what the CLI and the TUI both call.

`Tavern` is one data home with its settings, composed of services with one job each, which the
fronts reach as its attributes: `engines` (tavern.services.engine_host), `cards`
(tavern.services.cards), `chats` (tavern.services.chats), `lorebooks`, `presets`, `personas`
(tavern.personas), `settings_store` (tavern.services.settings) and long-term `memory`. Its own
methods are the calls that take more than one service: opening a chat (the character, the chat
file, the backend it chose, memory), changing the settings (the file, then the engine), using a
persona, importing files. `ChatSession` (tavern.chat.session) is one open chat: its prompt
(tavern.chat.prompt_builder) and its replies (tavern.chat.reply).

Data flows one way: store -> assembler -> engine -> stream -> store (and the screen, which only
listens to the events).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from tavern.chat.layout import LayoutMemory
from tavern.chat.session import ChatSession
from tavern.config import LoreSettingsModel, Settings, load_settings
from tavern.engines.base import Engine
from tavern.paths import DataHome, open_home
from tavern.personas import PersonaStore
from tavern.prompt.token_counter import TokenCounter
from tavern.services.cards import Cards
from tavern.services.chats import Chats
from tavern.services.engine_host import EngineHost
from tavern.services.lorebooks import Lorebooks
from tavern.services.presets import Presets
from tavern.services.settings import SettingsStore

if TYPE_CHECKING:
    from tavern.cards.model import Card
    from tavern.engines.samplers import SamplerSettings
    from tavern.importing import ImportReport
    from tavern.lore import Lorebook, ScanResult
    from tavern.memory.service import MemoryService
    from tavern.prompt.st_presets import StoryTemplate
    from tavern.prompt.templates import PromptFormat
    from tavern.store.chatfile import Chat
    from tavern.store.lock import HomeLock


class Tavern:
    """One data home, its settings, and the engine. Build with `Tavern.open(...)`."""

    def __init__(self, home: DataHome, settings: Settings):
        from tavern.cards.library import CardLibrary
        from tavern.store import ChatStore

        self.home = home
        self.engines = EngineHost(home.root, home.models, home.presets, lambda: self.settings)
        self.settings_store = SettingsStore(home.settings_file, settings, self.engines.settings_changed)
        self.cards = Cards(CardLibrary(home.characters))
        self.chats = Chats(ChatStore(home.chats), self.cards.library, lambda: self.settings.chat.user_name)
        self.lorebooks = Lorebooks(home.lorebooks)
        self.presets = Presets(home.presets, home.models)
        self.personas = PersonaStore(home.root / "personas")
        self.layouts = LayoutMemory()
        """Each chat's notes anchors and window floor as its last sent turn left them."""
        self._memory: MemoryService | None = None
        self._home_lock: HomeLock | None = None  # held for the process

    @classmethod
    def open(cls, home: Path | str | None = None, settings: Settings | None = None, **overrides: object) -> Tavern:
        from tavern.services.first_start import seed_bundled

        data_home = open_home(home).ensure()
        if settings is None:
            settings = load_settings(data_home.settings_file)
        if overrides:
            settings = settings.with_overrides(**overrides)
        app = cls(data_home, settings)
        seed_bundled(data_home, app.cards.library)
        return app

    @property
    def settings(self) -> Settings:
        """The settings in use (settings.toml with the command line's overrides)."""
        return self.settings_store.current

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
        """Before the process exits: stop long-term memory's background worker and write the
        embedded engine's live chat state to the user cache (so the next start is warm), each
        waiting at most `timeout` seconds. The engine itself is left to the interpreter: a reply
        the app did not finish may still hold it, and waiting for it would hang the exit."""
        if self._memory is not None:
            self._memory.close(timeout)
        self.engines.close(timeout)

    # -- samplers (tavern.services.presets with [generation]) ------------------------------------

    def sampler_settings(self, seed: int | None = None, temperature: float | None = None) -> SamplerSettings:
        return self.presets.sampler_settings(self.settings.generation, seed, temperature)

    # -- characters and chats (tavern.services.cards, tavern.services.chats) ---------------------

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
        key, card = self.cards.find(character)
        if read_only:
            return self._session(key, card, self.chats.peek(key, card, chat_name, greeting_index))
        chat = self.chats.choose(key, card, chat_name, new, greeting_index)
        self.use_chat_backend(card, chat)
        if chat.recovered_reply is not None:
            # A reply was being written when Tavern stopped: keep it, as a cancelled one is kept.
            recovered = chat.recovered_reply
            chat.discard_reply()
            chat.append(recovered)
        session = self._session(key, card, chat)
        if self.memory is not None:
            self.memory.attach(session.link)  # indexes the chat in the background, hears its edits
        return session

    def _session(self, key: str, card: Card, chat: Chat) -> ChatSession:
        """A session on an open chat, with the layout its last sent turn left in this process."""
        return ChatSession(
            self, self.chats.store, key, card, chat, self.layouts.get(chat.path), warnings=list(chat.warnings)
        )

    def lock_home(self) -> None:
        """One writer per data home: a second Tavern that would write chats is refused."""
        from tavern.store.lock import acquire_home_lock

        if self._home_lock is None:
            self._home_lock = acquire_home_lock(self.home.root)

    def import_files(
        self, paths: list[Path | str], progress: Callable[[int, int], None] | None = None,
        character: str | None = None,
    ) -> ImportReport:
        """Import cards, lorebooks, chats and presets (a folder: the files in it), never
        overwriting one of the same name; one report item per file (tavern.importing)."""
        from tavern.importing import import_paths

        return import_paths(
            self.home, paths, library=self.cards.library, chats=self.chats.store, character=character,
            progress=progress,
        )

    # -- lorebooks (tavern.services.lorebooks) ---------------------------------------------------

    def lore_settings(self) -> LoreSettingsModel:
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

    # -- settings and personas -------------------------------------------------------------------

    def update_settings(self, changes: Mapping[str, object]) -> bool:
        """Write `changes` (dotted keys) to settings.toml and use them from now on. Returns True
        when the model must be loaded again (path, context, RoPE...): the engine is unloaded
        here and loads on next use."""
        return self.settings_store.update(changes)

    def use_persona(self, name: str) -> None:
        """Speak as a saved persona: its name and description go to [chat] in settings.toml."""
        persona = self.personas.get(name)
        self.update_settings({"chat.user_name": persona.name, "chat.persona": persona.description})


__all__ = ["ChatSession", "Tavern"]
