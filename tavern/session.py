"""The service layer: what the CLI and the TUI both call.

`Tavern` owns the data home, the settings, the card library, the chat store and the one engine
of the process (loaded lazily). `ChatSession` is one open chat with one character: `send`,
`regenerate`, `continue_reply` and `impersonate` return iterators of engine events (token
deltas, then `Finished`) and save the chat themselves, so the CLI and the TUI save alike.

Data flows one way: store -> assembler -> engine -> stream -> store (and the screen, which only
listens to the events). The user's message is written durably before generation starts, so a
crash or an engine failure never loses it; the reply is appended once it is complete (or
cancelled: the partial reply is kept, as SillyTavern does).
"""

from __future__ import annotations

import contextlib
import copy
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from tavern.config import Settings, load_settings
from tavern.engines.base import Finished, GenerationRequest, Token
from tavern.errors import TavernError
from tavern.memory.summary import summary_for_prompt
from tavern.loop_guard import Restart
from tavern.paths import DataHome, bundled_dir, open_home
from tavern.prompt.assemble import (
    AssembledPrompt,
    AuthorNote,
    CardFields,
    HistoryMessage,
    PromptInputs,
    TokenCounter,
    assemble_prompt,
)

SEED_MARKER = ".seeded"


class Tavern:
    """One data home, its settings, and the engine. Build with `Tavern.open(...)`."""

    def __init__(self, home: DataHome, settings: Settings, engine: Any = None):
        from tavern.cards.library import CardLibrary
        from tavern.store import ChatStore

        self.home = home
        self.settings = settings
        self.library = CardLibrary(home.characters)
        self.chats = ChatStore(home.chats)
        self._engine = engine
        self._engine_lock = threading.Lock()
        self._format: Any = None
        self._context_preset: Any = None
        self._format_reason = ""
        self._counter: TokenCounter | None = None
        self.load_warnings: list[str] = []
        self.load_notes: list[str] = []
        """One-line facts about the last load (what fitted on the GPU), shown once."""
        self._home_lock: Any = None
        self.cpu_probe_command: list[str] | None = None  # tests inject a child that crashes
        self.backend_override: str | None = None
        """A profile chosen for this process (`--backend`); beats chat, character and settings."""
        self._backend_ctx: str = ""
        self._engine_backend: str = ""
        self._memory: Any = None
        self._layouts: dict[str, tuple[dict[str, tuple[int, str]], int | None]] = {}
        """Each chat's notes anchors and window floor (see ChatSession) as its last sent turn
        left them, by chat file: a chat opened again in this process (the user talked to another
        character meanwhile) builds the prompt its saved KV state holds, not a fresh layout."""

    @classmethod
    def open(
        cls, home: Path | str | None = None, settings: Settings | None = None, **overrides: Any
    ) -> Tavern:
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
                shutil.copyfile(book, target)
        if not self.home.settings_file.exists():
            from tavern.config import DEFAULT_SETTINGS_TOML

            self.home.settings_file.write_text(DEFAULT_SETTINGS_TOML, encoding="utf-8")
        marker.write_text(datetime.now().isoformat(), encoding="utf-8")

    # -- engine ------------------------------------------------------------------------------

    def model_path(self) -> Path:
        from tavern.engines.models import resolve_model

        return resolve_model(self.settings.model.path or None, self.home.models)

    @property
    def engine(self) -> Any:
        """The process's one engine, loaded on first use (raises ModelLoadError cleanly)."""
        with self._engine_lock:
            wanted = self.backend_name
            if self._engine is not None and wanted != self._engine_backend:
                self._drop_engine()
            if self._engine is None and wanted:
                from tavern.engines.remote.factory import open_remote

                self._engine = open_remote(self.home.root, wanted, self.settings.model.n_ctx)
                self._engine_backend = wanted
            elif self._engine is None:
                from tavern.engines.cpu_probe import check_build
                from tavern.engines.local import LocalEngine

                # Once per llama.cpp build: a CPU that lies about AMX kills a child, not us.
                check_build(self.home.root, self.model_path(), self.cpu_probe_command)
                engine = LocalEngine(self.model_path(), **self._load_plan())
                engine.load()
                # Free VRAM was unknown, so the engine found out by trying: say what fitted.
                self.load_notes = [engine.offload.note] if engine.offload is not None else []
                self._engine = engine
            elif hasattr(self._engine, "loaded") and not self._engine.loaded:
                self._engine.load()
            return self._engine

    @property
    def backend_name(self) -> str:
        """The remote profile in use: --backend, else the chat's, the character's, the settings'
        ("" = the embedded engine, which a chat or character may also pick as "embedded")."""
        name = self.backend_override or self._backend_ctx or self.settings.model.backend
        return "" if name == "embedded" else name

    def take_notices(self) -> list[str]:
        """What the engine asked to tell the user, once (a setting a backend cannot take, CFG
        unavailable there); never loads an engine."""
        notices = getattr(self._engine, "notices", None)
        if not notices:
            return []
        out = list(notices)
        notices.clear()
        return out

    def use_chat_backend(self, card: Any, chat: Any) -> None:
        """Follow the chat's or the character's backend choice (see tavern.backends)."""
        from tavern.engines.remote.factory import chosen_backend

        self._backend_ctx = chosen_backend(card, chat)

    def _drop_engine(self) -> None:
        # Only a remote engine is closed here; the embedded one may be shared with callers.
        if self._engine_backend and self._engine is not None:
            self._engine.unload()
        self._engine, self._engine_backend = None, ""
        self._format = self._counter = None

    def _load_plan(self) -> dict[str, Any]:
        """Context, RoPE and GPU layers from the settings and the model file's metadata."""
        from tavern.engines.gguf_info import detect_free_vram, plan_load, read_gguf
        from tavern.engines.gpu import offload_supported

        m = self.settings.model
        info = read_gguf(self.model_path())
        gpu_layers = m.n_gpu_layers
        if gpu_layers != 0 and not offload_supported():  # a CPU-only build, whatever the GPU
            gpu_layers = 0
        plan = plan_load(
            info,
            n_ctx=m.n_ctx,
            rope_freq_base=m.rope_freq_base or None,
            rope_alpha=m.rope_alpha or None,
            gpu_layers=gpu_layers,
            free_vram=detect_free_vram() if gpu_layers != 0 else None,
            gpu_backend=gpu_layers != 0,
        )
        self.load_warnings = list(plan.warnings)
        return dict(
            n_ctx=plan.n_ctx,
            n_threads=m.n_threads,
            n_gpu_layers=plan.n_gpu_layers,
            gpu_step_down=plan.gpu_step_down,
            n_batch=m.n_batch,
            flash_attn=m.flash_attn,
            type_k=m.type_k,
            type_v=m.type_v,
            rope_freq_base=plan.rope_freq_base or 0.0,
            cache_reuse=m.cache_reuse,
            insert_reuse=m.insert_reuse,
            side_ctx=m.side_ctx,
            cache_ram_mib=m.cache_ram_mib,
            bank_cells=m.bank_cells,
        )

    @property
    def memory(self) -> Any:
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

    @property
    def engine_loaded(self) -> bool:
        return self._engine is not None and getattr(self._engine, "loaded", True)

    def prompt_format(self) -> Any:
        if self._format is None:
            from tavern.prompt.templates import select_format

            engine = self.engine
            meta = engine.metadata()
            wanted = getattr(getattr(engine, "profile", None), "format", "") or self.settings.model.format or None
            imported = self.home.presets / "instruct" / f"{wanted}.json" if wanted else None
            if imported is not None and imported.is_file():
                # A SillyTavern instruct preset the user imported: a format like the bundled ones.
                from tavern.prompt.st_presets import load_st_preset

                _kind, fmt = load_st_preset(imported)
                self._format, self._format_reason = fmt, f"instruct preset {imported.name} (settings)"
            else:
                self._format, self._format_reason = select_format(
                    engine.model_name, meta.get("tokenizer.chat_template"), wanted
                )
        return self._format

    def context_preset(self) -> Any:
        """The sillytavern layout's story string preset (tavern.prompt.story)."""
        if self._context_preset is None:
            from tavern.prompt.story import load_context_preset

            self._context_preset = load_context_preset(self.home.presets, self.settings.prompt.context_preset)
        return self._context_preset

    @property
    def format_reason(self) -> str:
        return self._format_reason

    def counter(self) -> TokenCounter:
        if self._counter is None:
            engine = self.engine
            self._counter = TokenCounter(engine.count_tokens, count_many=getattr(engine, "count_tokens_many", None))
        return self._counter

    def sampler_preset(self, name: str) -> Any:
        """A sampler preset by name: the data home's presets/NAME.json, else a bundled one."""
        from tavern.engines.presets import load_preset

        user = self.home.presets / f"{name}.json"
        return load_preset(user if user.is_file() else name)

    def sampler_settings(self, seed: int | None = None, temperature: float | None = None) -> Any:
        g = self.settings.generation
        settings = self.sampler_preset(g.preset)
        overrides = {}
        seed = seed if seed is not None else g.seed
        temperature = temperature if temperature is not None else g.temperature
        if seed is not None:
            overrides["seed"] = seed
        if temperature is not None:
            overrides["temperature"] = temperature
        return settings.with_overrides(**overrides) if overrides else settings

    # -- characters and chats --------------------------------------------------------------------

    def character(self, name: str) -> tuple[str, Any]:
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
            return self._session(key, card, chat)
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
        session = self._session(key, card, chat)
        if self.memory is not None:
            self.memory.attach(session)  # indexes the chat in the background, hears its edits
        return session

    def _session(self, key: str, card: Any, chat: Any) -> ChatSession:
        anchors, floor = self._layouts.get(str(chat.path), ({}, None))
        return ChatSession(
            self, key, card, chat, note_anchors=dict(anchors), window_floor=floor, warnings=list(chat.warnings)
        )

    def lore_settings(self) -> Any:
        """The [lore] settings: the scan takes the settings model itself (one definition)."""
        return self.settings.lore

    def scan_lore_text(self, books: list[tuple[str, Any]], text: str) -> Any:
        """`tavern lore scan --text`: one message of yours scanned as a turn would scan it (the
        [lore] settings, the model's tokenizer for the budget), without a chat."""
        from tavern.lore import ScanMessage, scan_lore

        return scan_lore(
            books,
            [ScanMessage(self.settings.chat.user_name, text, True)],
            self.lore_settings(),
            context_size=self.engine.context_size,
            count_tokens=self.counter(),
            chat_length=1,
            rng_seed=0,
        )

    def find_lorebook(self, name: str) -> Path | None:
        """A lorebook file in the data home by its name (SillyTavern links books by name; file
        names may differ in case)."""
        folder = self.home.lorebooks
        exact = folder / f"{name}.json"
        if exact.is_file():
            return exact
        wanted = name.casefold()
        for path in sorted(folder.glob("*.json")):
            if path.stem.casefold() == wanted:
                return path
        return None

    def lock_home(self) -> None:
        """One writer per data home: a second Tavern that would write chats is refused."""
        from tavern.store.lock import acquire_home_lock

        if self._home_lock is None:
            self._home_lock = acquire_home_lock(self.home.root)

    def new_chat(self, key: str, card: Any, greeting_index: int = 0, draft: bool = False) -> Any:
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

    # -- services for the app and the CLI: chat list, settings, personas ------------------------
    # (Thin: the store, settings_file and personas modules do the work; the TUI calls only these.)

    def list_chats(self, character: str) -> list[Any]:
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
        writers = {".jsonl": self.chats.export_jsonl, ".md": self.chats.export_markdown,
                   ".txt": self.chats.export_text}
        writer = writers.get(to.suffix.lower())
        if writer is None:
            raise TavernError(f"{to}: export to a .jsonl, .md or .txt file")
        writer(chat, to)
        return to

    def save_character(self, key: str | None, card: Any) -> str:
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

    CARD_SUFFIXES = (".png", ".json", ".charx")

    def import_cards(
        self, paths: list[Path | str], progress: Any = None
    ) -> tuple[list[str], list[str]]:
        """Import card files (a folder: every card in it). Returns (new keys, one error line
        per file that failed); `progress(done, total)` is called after each file."""
        files: list[Path] = []
        for p in paths:
            p = Path(p).expanduser()
            if p.is_dir():
                files += sorted(f for f in p.iterdir() if f.suffix.lower() in self.CARD_SUFFIXES)
            else:
                files.append(p)
        keys, errors = [], []
        for i, f in enumerate(files, 1):
            try:
                keys.append(self.library.import_file(f))
            except TavernError as err:
                errors.append(str(err))
            except OSError as err:
                errors.append(f"{f}: {err.strerror or err}")
            if progress is not None:
                progress(i, len(files))
        if not files:
            errors.append(f"no card files found in {', '.join(str(p) for p in paths)}")
        return keys, errors

    def list_lorebooks(self) -> list[Path]:
        """The lorebook files of the data home, by name."""
        folder = self.home.lorebooks
        try:
            return sorted((p for p in folder.glob("*.json") if p.is_file()), key=lambda p: p.stem.casefold())
        except OSError as err:
            raise TavernError(f"{folder}: {err.strerror or err}") from None

    def lorebook_sizes(self) -> list[tuple[Path, int | None]]:
        """`list_lorebooks` with each file's size in bytes (None if it vanished meanwhile)."""
        sized: list[tuple[Path, int | None]] = []
        for path in self.list_lorebooks():
            try:
                sized.append((path, path.stat().st_size))
            except OSError:
                sized.append((path, None))
        return sized

    def open_lorebook(self, path: Path | str) -> Any:
        from tavern.lore import load_lorebook

        return load_lorebook(Path(path))

    def save_lorebook(self, book: Any, path: Path | str) -> None:
        """Write a lorebook whole (atomically)."""
        from tavern.lore import save_lorebook

        save_lorebook(book, Path(path))

    def create_lorebook(self, name: str) -> Path:
        """A new empty lorebook named `name` in the data home; returns its file."""
        import re

        from tavern.errors import LoreError
        from tavern.lore import Lorebook, save_lorebook

        name = name.strip()
        if not name or name.startswith(".") or re.search(r'[/\\?<>:*|"\x00-\x1f]', name):
            raise LoreError(f"'{name}' cannot be a file name")
        path = self.home.lorebooks / f"{name}.json"
        if path.exists():
            raise LoreError(f"{path}: a lorebook with this name exists")
        save_lorebook(Lorebook(name=name), path)
        return path

    RELOAD_KEYS = ("path", "n_ctx", "n_gpu_layers", "n_threads", "n_batch", "flash_attn", "type_k",
                   "type_v", "rope_freq_base", "rope_alpha", "cache_reuse", "insert_reuse", "side_ctx",
                   "cache_ram_mib", "bank_cells")

    def update_settings(self, changes: dict[str, Any]) -> bool:
        """Write `changes` (dotted keys) to settings.toml and use them from now on. Returns True
        when the model must be loaded again (path, context, RoPE...): the engine is unloaded
        here and loads on next use."""
        from tavern.settings_file import write_settings

        old = self.settings
        self.settings = write_settings(self.home.settings_file, old, changes)
        m_old, m_new = old.model, self.settings.model
        reload = any(getattr(m_old, k) != getattr(m_new, k) for k in self.RELOAD_KEYS)
        if reload or m_old.format != m_new.format:
            self._format = None
        if reload:
            with self._engine_lock:
                if self._engine is not None and hasattr(self._engine, "unload"):
                    self._engine.unload()
                self._engine = None
                self._counter = None
        return reload

    @property
    def personas(self) -> Any:
        from tavern.personas import PersonaStore

        return PersonaStore(self.home.root / "personas")

    def use_persona(self, name: str) -> None:
        """Speak as a saved persona: its name and description go to [chat] in settings.toml."""
        persona = self.personas.get(name)
        self.update_settings({"chat.user_name": persona.name, "chat.persona": persona.description})

    def available_presets(self) -> list[str]:
        from tavern.engines.presets import list_presets

        return list_presets(self.home.presets)

    def available_formats(self) -> list[str]:
        from tavern.prompt.templates import load_bundled_formats

        names = sorted(load_bundled_formats())
        imported = self.home.presets / "instruct"
        names += sorted(p.stem for p in imported.glob("*.json")) if imported.is_dir() else []
        return names

    def available_models(self) -> list[str]:
        """GGUF files in the models folder (names usable as [model] path)."""
        return sorted(p.name for p in self.home.models.glob("*.gguf"))


@dataclass
class _Built:
    """A prompt and the state it would move the chat to once it is sent."""

    prompt: AssembledPrompt
    timed_state: dict | None
    variables: dict
    negative: str | None = None
    """The CFG negative prompt, formatted like `prompt` (None: guidance off)."""
    guidance_scale: float = 1.0


@dataclass
class ChatSession:
    app: Tavern
    key: str
    card: Any
    chat: Any
    last_prompt: AssembledPrompt | None = None
    last_lore: Any = None
    note_anchors: dict[str, tuple[int, str]] = field(default_factory=dict)
    """Where each notes unit sat in the last prompt that was sent (see assemble.py): only a
    sent turn moves them, so previewing a prompt never changes the next one."""
    window_floor: int | None = None
    """The oldest message index of the last sent prompt (see PromptInputs.window_floor)."""
    warnings: list[str] = field(default_factory=list)
    last_negative: str | None = None
    """The CFG negative prompt of the last prompt built (the inspector shows it)."""

    @property
    def user_name(self) -> str:
        return self.app.settings.chat.user_name

    # -- prompt --------------------------------------------------------------------------------

    def history(self, limit: int | None = None, upto: int | None = None) -> list[HistoryMessage]:
        """The last `limit` messages before index `upto` (default: the whole chat)."""
        end = len(self.chat) if upto is None else upto
        start = 0 if limit is None else max(0, end - limit)
        msgs = self.chat.tail(len(self.chat) - start)[: end - start]
        return [
            HistoryMessage(m.name, m.mes, m.is_user, m.is_system, index=start + i) for i, m in enumerate(msgs)
        ]

    def build_prompt(
        self, mode: str = "normal", upto: int | None = None, explain: bool = False
    ) -> AssembledPrompt:
        """The prompt for the next reply; `upto` leaves later messages out (a new swipe).
        `explain` records why each lorebook entry stayed out (for the inspector; slower on
        big books). A preview: nothing it computes is kept for the next turn."""
        return self._build(mode, upto, explain).prompt

    def _build(self, mode: str = "normal", upto: int | None = None, explain: bool = False) -> _Built:
        app = self.app
        n_ctx = app.engine.context_size
        # Read only the chat's tail (a 10,000-message chat must not be parsed every turn), and
        # more of it only when all of that tail fitted in the budget.
        end = len(self.chat) if upto is None else upto
        limit = max(128, n_ctx // 32)  # about what fits when messages average 32+ tokens
        history = self.history(limit=limit, upto=upto)
        count = app.counter()
        variables = copy.deepcopy(self.chat.header.chat_metadata.get("variables") or {})
        macro = self._macro_fn(history, variables)
        lore = self._scan_lore(history, n_ctx, count, macro, explain)
        meta = self.chat.header.chat_metadata
        note = None
        if meta.get("note_prompt"):
            note = AuthorNote(
                text=meta.get("note_prompt", ""),
                depth=int(meta.get("note_depth", 4)),
                frequency=int(meta.get("note_interval", 1)),
                role={0: "system", 1: "user", 2: "assistant"}.get(meta.get("note_role", 0), "system"),
            )
        while True:
            prompt, inputs = self._assemble(history, lore, note, macro, mode, count, n_ctx)
            oldest = next((h.index for h in history if not h.is_system), None)
            if len(history) >= end or oldest is None or prompt.first_message_index != oldest:
                break
            limit *= 4
            history = self.history(limit=limit, upto=upto)
        if lore is not None:
            for b in getattr(lore, "broken", []):
                prompt.warnings.append(f"lore entry broken: {b}")
        self.last_prompt = prompt
        self.last_lore = lore
        built = _Built(prompt, getattr(lore, "timed_state", None) if lore is not None else None, variables)
        scale, negative, depth = self.cfg()
        if scale != 1.0 and negative.strip():
            from tavern.prompt.assemble import with_negative

            built.negative = with_negative(prompt, app.prompt_format(), inputs, macro(negative), depth)
            built.guidance_scale = scale
        self.last_negative = built.negative
        return built

    def cfg(self) -> tuple[float, str, int]:
        """(guidance scale, negative text, insertion depth): the chat's SillyTavern CFG keys win,
        then the character's `tavern_cfg` extension, then the settings."""
        g = self.app.settings.cfg
        card = (self.card.extensions or {}).get("tavern_cfg") or {}
        meta = self.chat.header.chat_metadata
        scale, negative, depth = g.guidance_scale, g.negative_prompt, g.insertion_depth
        for source, keys in (
            (card, ("guidance_scale", "negative_prompt", "insertion_depth")),
            (meta, ("cfg_guidance_scale", "cfg_negative_prompt", "cfg_prompt_insertion_depth")),
        ):
            with contextlib.suppress(TypeError, ValueError):
                if source.get(keys[0]) not in (None, ""):
                    scale = float(source[keys[0]])
                if source.get(keys[1]):
                    negative = str(source[keys[1]])
                if source.get(keys[2]) not in (None, ""):
                    depth = int(source[keys[2]])
        return scale, negative, depth

    def set_cfg(self, scale: float | None = None, negative: str | None = None) -> None:
        """Write the chat's CFG under SillyTavern's own chat-metadata keys."""
        changes: dict[str, Any] = {}
        if scale is not None:
            changes["cfg_guidance_scale"] = scale
        if negative is not None:
            changes["cfg_negative_prompt"] = negative
        if changes:
            self.chat.update_metadata(changes)

    def _commit(self, built: _Built) -> None:
        """A turn was sent: what its prompt decided becomes the chat's state (notes anchors,
        the lore's sticky/cooldown timers, variables set by macros)."""
        self.note_anchors = dict(built.prompt.note_anchors)
        if built.prompt.first_message_index >= 0:
            self.window_floor = built.prompt.first_message_index
        self.app._layouts[str(self.chat.path)] = (self.note_anchors, self.window_floor)
        meta = self.chat.header.chat_metadata
        changes: dict[str, Any] = {}
        if built.timed_state is not None and built.timed_state != meta.get("timedWorldInfo"):
            changes["timedWorldInfo"] = built.timed_state
        if built.variables != (meta.get("variables") or {}):
            changes["variables"] = built.variables
        if changes:
            self.chat.update_metadata(changes)

    def _assemble(
        self,
        history: list[HistoryMessage],
        lore: Any,
        note: Any,
        macro: Any,
        mode: str,
        count: Any,
        n_ctx: int,
    ) -> tuple[AssembledPrompt, PromptInputs]:
        s = self.app.settings
        meta = self.chat.header.chat_metadata
        inputs = PromptInputs(
            card=CardFields.from_card(self.card),
            user_name=self.user_name,
            history=history,
            persona=s.chat.persona,
            system_prompt=s.prompt.system_prompt,
            lore=lore,
            summary=summary_for_prompt(meta),
            author_note=note,
            mode=mode,  # type: ignore[arg-type]
            names_in_history=s.prompt.names_in_history,
            layout=s.prompt.layout,
            trim_step=s.prompt.trim_step,
            macro=macro,
            note_anchors=self.note_anchors,
            return_lapsed=bool(getattr(self.app.engine, "keeps_removed_text", False)),
            depth_lore_drift=s.lore.linger if s.lore.cache_aware else 0,
            window_floor=self.window_floor,
            story=self.app.context_preset() if s.prompt.layout == "sillytavern" else None,
        )
        prompt = assemble_prompt(inputs, self.app.prompt_format(), count, n_ctx, s.generation.max_tokens)
        recalled = self._recall(history, prompt, count)
        if recalled:  # again with the recalled messages (they take budget, the window may shrink)
            inputs.recalled = recalled
            prompt = assemble_prompt(inputs, self.app.prompt_format(), count, n_ctx, s.generation.max_tokens)
        memory = self.app.memory
        warning = memory.take_warning() if memory is not None else None
        if warning:
            prompt.warnings.append(warning)
        return prompt, inputs

    def _recall(self, history: list[HistoryMessage], prompt: AssembledPrompt, count: Any) -> list[str]:
        """Old messages outside this prompt's window that match the latest ones (vector memory)."""
        memory = self.app.memory
        if memory is None or not history:
            return []
        start = prompt.first_message_index if prompt.first_message_index >= 0 else history[-1].index + 1
        latest = [h for h in history if not h.is_system][-memory.settings.query_messages :]
        queries = [f"{h.name}: {h.text}" for h in reversed(latest)]
        return [r.text for r in memory.recall(self, queries, start, count)]

    def _macro_fn(self, history: list[HistoryMessage], variables: dict) -> Any:
        from tavern.prompt.macros import MacroContext, substitute

        card = self.card
        last = next((h for h in reversed(history)), None)
        last_user = next((h for h in reversed(history) if h.is_user), None)
        last_char = next((h for h in reversed(history) if not h.is_user), None)
        ctx = MacroContext(
            char=card.name,
            user=self.user_name,
            description=card.description,
            personality=card.personality,
            scenario=card.scenario,
            persona=self.app.settings.chat.persona,
            mes_examples=card.mes_example,
            original=self.app.settings.prompt.system_prompt,
            last_message=last.text if last else "",
            last_user_message=last_user.text if last_user else "",
            last_char_message=last_char.text if last_char else "",
            chat_id=self.chat.name,
            variables=variables,
        )

        def macro(text: str) -> str:
            # Most text has no macro at all: skip the parser for it (it runs on every card
            # field and lore entry, every turn).
            if not text or ("{{" not in text and "<" not in text):
                return text
            return substitute(text, ctx)

        return macro

    def scan_lore(self, books: list[tuple[str, Any]] | None = None, explain: bool = True) -> Any:
        """The lorebook scan the next prompt runs (`books`: instead of the chat's own), with the
        model's tokenizer and the chat's timed state: what `tavern lore scan --character` shows."""
        history = self.history(limit=200)
        # A copy: {{setvar}} in lore content must not touch the chat's variables from a scan.
        variables = copy.deepcopy(self.chat.header.chat_metadata.get("variables") or {})
        macro = self._macro_fn(history, variables)
        return self._scan_lore(history, self.app.engine.context_size, self.app.counter(), macro, explain, books)

    def _scan_lore(
        self,
        history: list[HistoryMessage],
        n_ctx: int,
        count: Any,
        macro: Any,
        explain: bool,
        books: list[tuple[str, Any]] | None = None,
    ) -> Any:
        books = self.lorebooks() if books is None else books
        if not books:
            return None
        from tavern.lore import ScanMessage, scan_lore

        settings = self.app.lore_settings()
        meta = self.chat.header.chat_metadata
        msgs = [ScanMessage(h.name, h.text, h.is_user) for h in history if not h.is_system]
        if getattr(self.app.engine, "counts_joined", False):
            # A server that counts many texts in one request: every entry's cost at once, not a
            # round trip per activated entry (content with macros is counted as it comes).
            texts = [e.content for _s, b in books for e in b.entries
                     if e.content and not e.disable and "{{" not in e.content][:1000]
            count.prime([t + "\n" for t in texts] + texts)  # the scan's cost, the slot's count
        result = scan_lore(
            books,
            msgs,
            settings,
            context_size=n_ctx,
            count_tokens=count,
            timed_state=meta.get("timedWorldInfo"),
            chat_length=history[-1].index + 1 if history else 0,
            rng_seed=hash_seed(self.chat.name, len(self.chat)),
            character_name=self.card.name,
            character_tags=list(self.card.tags),
            substitute_macros=macro,
            explain=explain,
        )
        self._vector_lore(result, books, msgs, count, macro)
        return result

    def _vector_lore(self, result: Any, books: Any, msgs: list[Any], count: Any, macro: Any) -> None:
        """Lorebook entries marked `vectorized` activate by similarity too (tavern.memory)."""
        memory = self.app.memory
        if memory is None or not memory.enabled:
            return
        from tavern.memory.lore_vectors import activate_by_similarity, vectorized_entries

        if not vectorized_entries(books):
            return
        queries = [f"{m.name}: {m.text}" for m in msgs[-memory.settings.query_messages :]]
        try:
            activate_by_similarity(memory, result, books, queries, count, macro)
        except Exception as err:  # the embedder failed: keys alone decide, said once
            memory._fail(err)

    def lorebooks(self) -> list[tuple[str, Any]]:
        """(kind, Lorebook) for the chat's, the character's (embedded and linked) and global books."""
        from tavern.lore import load_lorebook_cached as load_lorebook
        from tavern.lore import lorebook_from_character_book

        books: list[tuple[str, Any]] = []
        meta = self.chat.header.chat_metadata
        chat_world = meta.get("world_info")
        if chat_world:
            path = self.app.find_lorebook(chat_world)
            if path:
                books.append(("chat", load_lorebook(path)))
        if self.card.character_book:
            books.append(
                ("character", lorebook_from_character_book(self.card.character_book, self.card.name))
            )
        world = (self.card.extensions or {}).get("world")
        if world:
            path = self.app.find_lorebook(world)
            if path:
                books.append(("character", load_lorebook(path)))
        for name in self.app.settings.lore.global_books:
            path = self.app.find_lorebook(name)
            if path:
                books.append(("global", load_lorebook(path)))
        return books

    # -- turns -----------------------------------------------------------------------------------

    def send(self, text: str, cancel: threading.Event | None = None) -> Iterator[Token | Finished]:
        from tavern.store import ChatMessage

        if not text.strip():
            raise TavernError("empty message: type something to send")
        self.chat.append(ChatMessage(name=self.user_name, is_user=True, mes=text, send_date=now_date()))
        yield from self._memory_turn(self._reply("normal", cancel))

    def regenerate(self, cancel: threading.Event | None = None) -> Iterator[Token | Finished]:
        """A new swipe for the last character message (or a new reply if the user spoke last)."""
        if len(self.chat) and not self.chat[-1].is_user:
            yield from self._memory_turn(self._reply("swipe", cancel))
        else:
            yield from self._memory_turn(self._reply("normal", cancel))

    def continue_reply(self, cancel: threading.Event | None = None) -> Iterator[Token | Finished]:
        yield from self._memory_turn(self._reply("continue", cancel))

    def impersonate(self, cancel: threading.Event | None = None) -> Iterator[Token | Finished]:
        """Write the user's next message; the text is returned, not saved (the user edits it)."""
        yield from self._memory_turn(self._reply("impersonate", cancel))

    def _memory_turn(self, events: Iterator[Token | Finished]) -> Iterator[Token | Finished]:
        """A reply with memory's background work paused (CPU contention); the summary of what
        left the window is scheduled after it."""
        memory = self.app.memory
        if memory is None:
            yield from events
            return
        try:
            with memory.turn():
                yield from events
        finally:  # also when the consumer stops at Finished and drops the generator (the TUI does)
            if self.last_prompt is not None:
                memory.schedule_summary(self, self.last_prompt.first_message_index)

    def _recurring(self, prompt: Any) -> list[str]:
        """The parts of `prompt` that may leave and come back on a later turn: its notes (lore
        entries, the summary, recalled messages) and the lore entries it holds."""
        texts = dict.fromkeys(text for _anchor, text in prompt.note_anchors.values())
        for entry in getattr(self.last_lore, "activated", None) or ():
            texts.setdefault(entry.content)
        return [t for t in texts if t.strip()]

    def _reply(self, mode: str, cancel: threading.Event | None) -> Iterator[Token | Finished]:
        from tavern.store import ChatMessage

        cancel = cancel or threading.Event()
        swipe_of = None
        if mode == "swipe":
            swipe_of = len(self.chat) - 1
            built = self._build("normal", upto=len(self.chat) - 1)
        else:
            built = self._build("continue" if mode == "continue" else mode)
        prompt = built.prompt
        app = self.app
        request = GenerationRequest(
            prompt=prompt.text,
            max_tokens=app.settings.generation.max_tokens,
            stop=prompt.stop,
            sampler=app.sampler_settings(),
            add_bos=prompt.add_bos,
            messages=prompt.messages,
            negative_prompt=built.negative,
            guidance_scale=built.guidance_scale,
            recurring=self._recurring(prompt),
        )
        started = now_date()
        final: Finished | None = None
        streaming = mode in ("normal",)
        if streaming:
            # The reply in progress lives in a sidecar file: a kill mid-reply never touches the
            # chat file, and the next open recovers the partial text.
            self.chat.begin_reply(
                ChatMessage(name=self.card.name, is_user=False, mes="", gen_started=started)
            )
        so_far = ""
        try:
            for event in self._guarded(request, cancel, mode, swipe_of):
                if isinstance(event, Finished):
                    final = event
                else:
                    so_far = "" if isinstance(event, Restart) else so_far + event.text
                    if streaming:
                        self.chat.update_partial(so_far)
                    yield event
        finally:
            if final is None and streaming:  # the consumer stopped early: keep what we have
                if so_far.strip():
                    self.chat.finish_reply(
                        ChatMessage(
                            name=self.card.name, is_user=False, mes=so_far.strip(), gen_started=started
                        )
                    )
                else:
                    self.chat.discard_reply()
        assert final is not None
        text = final.text
        if mode != "continue":
            text = text.strip()
        if mode == "impersonate":
            yield final
            return
        if not text.strip():
            # Nothing written (an error, or Esc before the first token): nothing to save; the
            # user's message is already safe on disk.
            if streaming:
                self.chat.discard_reply()
            yield final
            return
        extra = {
            "api": getattr(app.engine, "name", "llama.cpp") if app.backend_name else "llama.cpp",
            "model": app.engine.model_name,
            **final.extra,
            "token_count": final.stats.gen_tokens,
            "tavern": {**final.stats.as_dict(), "prompt_tokens_budget": prompt.budget},
        }
        if final.error:
            extra["tavern"]["error"] = final.error
        if mode == "continue" and len(self.chat) and not self.chat[-1].is_user:
            msg = self.chat[-1]
            msg.mes = msg.mes + text
            if msg.swipes is not None and msg.swipe_id is not None:
                msg.swipes[msg.swipe_id] = msg.mes
            self.chat.replace(len(self.chat) - 1, msg)
        elif swipe_of is not None:
            msg = self.chat[swipe_of]
            msg.add_swipe(
                text,
                {"send_date": now_date(), "gen_started": started, "gen_finished": now_date(), "extra": extra},
            )
            msg.extra = extra
            self.chat.replace(swipe_of, msg)
        else:
            self.chat.finish_reply(
                ChatMessage(
                    name=self.card.name,
                    is_user=False,
                    mes=text,
                    send_date=now_date(),
                    extra=extra,
                    gen_started=started,
                    gen_finished=now_date(),
                )
            )
        self._commit(built)
        final.text = text
        yield final

    def _guarded(
        self, request: GenerationRequest, cancel: threading.Event, mode: str, upto: int | None
    ) -> Iterator[Token | Finished]:
        """The engine's events with loop detection (tavern/loop_guard.py): a run-on is stopped
        and trimmed; a new reply that repeats the last ones is written again once."""
        from tavern.loop_guard import guarded_generate

        settings = self.app.settings.loops
        earlier: list[str] = []
        if mode in ("normal", "swipe"):  # a continuation or an impersonation has no "last ones"
            recent = self.history(limit=4 * settings.history, upto=upto)
            earlier = [h.text for h in recent if not h.is_user and not h.is_system][-settings.history :]
        return guarded_generate(self.app.engine, request, cancel, settings, earlier)

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

    # -- editing any message, branches, author's note (services for the app and the CLI) ---------

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
        child = self.app.chats.branch(self.chat, index)
        self._hand_down_layout(child)
        return self.app._session(self.key, self.card, child)

    def checkpoint_at(self, index: int, label: str = "") -> str:
        """A named checkpoint (a linked branch that stays in the list); returns its chat name."""
        child = self.app.chats.checkpoint(self.chat, index, label)
        self._hand_down_layout(child)
        return child.name

    def _hand_down_layout(self, child: Any) -> None:
        """A branch starts with this chat's notes anchors, so that its first prompt places the
        lore where this chat's cells in the engine have it (anchors past the branch point are
        ignored: those units go before the newest message). Not the window floor: a branch from
        far back has room for older messages, and gets them."""
        self.app._layouts[str(child.path)] = (dict(self.note_anchors), None)

    def rename(self, new_name: str) -> str:
        """Rename this chat's file (the open chat keeps working); returns the new name."""
        self.app.chats.rename(self.chat, new_name)
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

    def author_note(self) -> dict[str, Any]:
        """The chat's author's note as SillyTavern stores it in chat_metadata."""
        meta = self.chat.header.chat_metadata
        return {
            "note_prompt": str(meta.get("note_prompt", "") or ""),
            "note_depth": int(meta.get("note_depth", 4) or 0),
            "note_interval": int(meta.get("note_interval", 1) or 0),
            "note_role": int(meta.get("note_role", 0) or 0),
        }

    def set_author_note(self, text: str, depth: int = 4, interval: int = 1, role: int = 0) -> None:
        if depth < 0 or interval < 0 or role not in (0, 1, 2):
            raise TavernError("author's note: depth and interval must be 0 or more, role 0, 1 or 2")
        self.chat.update_metadata(
            {"note_prompt": text, "note_depth": depth, "note_interval": interval, "note_role": role}
        )


def now_date() -> str:
    from tavern.store import format_send_date

    return format_send_date(datetime.now())


def hash_seed(*parts: Any) -> int:
    import zlib

    return zlib.crc32("\x1f".join(str(p) for p in parts).encode()) & 0x7FFFFFFF


__all__ = ["Tavern", "ChatSession"]
