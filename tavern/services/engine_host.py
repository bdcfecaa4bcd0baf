"""`EngineHost`: the process's one engine, the prompt format that goes with it, and its counter.

Which engine: `--backend`, else the chat's choice, the character's, the settings' (see
tavern.backends), else the embedded one. Nothing here loads a model or opens a connection
behind the caller's back: `load()` does, and says so by its name; `current` never does.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from tavern.config import ModelSettings, Settings
from tavern.engines.base import Engine
from tavern.engines.config import EngineConfig
from tavern.errors import TavernError
from tavern.prompt.token_counter import TokenCounter

if TYPE_CHECKING:
    from tavern.prompt.st_presets import StoryTemplate
    from tavern.prompt.templates import PromptFormat


STATES_FOLDER = "kv-states"
"""The embedded engine's saved KV states, under `tavern.paths.cache_root()`."""


class EngineHost:
    def __init__(self, root: Path, models_dir: Path, presets_dir: Path, settings: Callable[[], Settings]):
        self._root = root
        self._models_dir = models_dir
        self._presets_dir = presets_dir
        self._settings = settings
        self._engine: Engine | None = None
        self._engine_backend = ""
        self._lock = threading.Lock()
        self._format: PromptFormat | None = None
        self._format_reason = ""
        self._context_preset: StoryTemplate | None = None
        self._counter: TokenCounter | None = None
        self.load_warnings: list[str] = []
        """What the last load plan warned about (shown once by the front)."""
        self.load_notes: list[str] = []
        """One-line facts about the last load (what fitted on the GPU), shown once."""
        self.cpu_probe_command: list[str] | None = None  # tests inject a child that crashes
        self.backend_override: str | None = None
        """A profile chosen for this process (`--backend`); beats chat, character and settings."""
        self.backend_context = ""
        """The profile the open chat or its character chose ("" = none)."""

    # -- which engine -------------------------------------------------------------------------

    @property
    def backend_name(self) -> str:
        """The remote profile in use: --backend, else the chat's, the character's, the settings'
        ("" = the embedded engine, which a chat or character may also pick as "embedded")."""
        from tavern.backends import EMBEDDED

        name = self.backend_override or self.backend_context or self._settings().model.backend
        return "" if name == EMBEDDED else name

    @property
    def current(self) -> Engine | None:
        """The engine as it is now, loaded or not; never loads one."""
        return self._engine

    @property
    def loaded(self) -> bool:
        return self._engine is not None and self._engine.loaded

    def adopt(self, engine: Engine) -> None:
        """Use an engine built elsewhere (tests and benchmarks share one model between homes)."""
        with self._lock:
            self._engine, self._engine_backend = engine, ""
            self._format = self._counter = None

    def load(self) -> Engine:
        """The engine the next reply uses, loaded (or connected) now if it is not; raises
        ModelLoadError/EngineError with one line."""
        with self._lock:
            wanted = self.backend_name
            if self._engine is not None and wanted != self._engine_backend:
                self._drop()
            if self._engine is None:
                self._open(wanted)
            elif not self._engine.loaded:
                self._engine.load()
            assert self._engine is not None
            return self._engine

    def _open(self, backend: str) -> None:
        from tavern.engines.factory import open_engine

        settings = self._settings()
        profile = store = None
        if backend:
            from tavern.backends import BackendStore

            store = BackendStore(self._root)
            profile = store.get(backend)
        opened = open_engine(
            EngineConfig.from_settings(settings.model), self._models_dir, profile, store,
            self.cpu_probe_command,
        )
        self._engine, self._engine_backend = opened.engine, backend
        if not backend:
            self.load_warnings, self.load_notes = opened.warnings, opened.notes
            self._keep_states(opened.engine, settings.model.cache_disk_mib)

    @staticmethod
    def _keep_states(engine: Engine, disk_mib: int) -> None:
        """The embedded engine keeps its KV states on disk too, in the user cache folder (never
        the data home): a chat reopened after a restart starts from its cells."""
        from tavern.engines.local import LocalEngine
        from tavern.paths import cache_root

        if isinstance(engine, LocalEngine) and disk_mib > 0:
            engine.keep_states_in(cache_root() / STATES_FOLDER)

    def close(self, timeout: float = 10.0) -> None:
        """Before the process exits: the embedded engine's live chat state to disk, waiting at
        most `timeout` seconds (a reply still running keeps it; the exit does not wait on it).
        The engine stays loaded: the interpreter frees it."""
        from tavern.engines.local import LocalEngine

        engine = self._engine
        if isinstance(engine, LocalEngine):
            engine.save_states(timeout)

    def drop(self) -> None:
        with self._lock:
            self._drop()

    def _drop(self) -> None:
        # Only a remote engine is closed here; the embedded one may be shared with callers.
        if self._engine_backend and self._engine is not None:
            self._engine.unload()
        self._engine, self._engine_backend = None, ""
        self._format = self._counter = None

    def unload(self) -> None:
        """Unload whatever engine is held, embedded too (a setting that needs a new load)."""
        with self._lock:
            if self._engine is not None:
                self._engine.unload()
            self._engine, self._engine_backend = None, ""
            self._format = self._counter = None

    def take_notices(self) -> list[str]:
        """What the engine asked to tell the user, once; never loads an engine."""
        return self._engine.take_notices() if self._engine is not None else []

    # -- settings ------------------------------------------------------------------------------

    def settings_changed(self, old: ModelSettings, new: ModelSettings) -> bool:
        """After a settings write: True (and the engine unloaded) when the model must be loaded
        again, which is when the engine's config changed; the format is chosen again when it or
        the model changed."""
        reload = EngineConfig.from_settings(old) != EngineConfig.from_settings(new)
        if reload or old.format != new.format:
            self._format = None
        if reload:
            self.unload()
        return reload

    # -- what goes with the engine -------------------------------------------------------------

    def prompt_format(self) -> PromptFormat:
        """The instruct format prompts are written in: the profile's or settings' choice (an
        imported SillyTavern instruct preset, or a bundled format), else from the model."""
        if self._format is None:
            from tavern.prompt.templates import select_format

            engine = self.load()
            wanted = engine.format_hint or self._settings().model.format or None
            imported = self._presets_dir / "instruct" / f"{wanted}.json" if wanted else None
            if imported is not None and imported.is_file():
                from tavern.prompt.st_presets import load_st_preset
                from tavern.prompt.templates import PromptFormat

                _kind, fmt = load_st_preset(imported)
                if not isinstance(fmt, PromptFormat):
                    raise TavernError(f"{imported}: not a SillyTavern instruct preset")
                self._format, self._format_reason = fmt, f"instruct preset {imported.name} (settings)"
            else:
                self._format, self._format_reason = select_format(
                    engine.model_name, engine.metadata().get("tokenizer.chat_template"), wanted
                )
        assert self._format is not None
        return self._format

    @property
    def format_reason(self) -> str:
        return self._format_reason

    def context_preset(self) -> StoryTemplate:
        """The sillytavern layout's story string preset (tavern.prompt.story)."""
        if self._context_preset is None:
            from tavern.prompt.story import load_context_preset

            self._context_preset = load_context_preset(self._presets_dir, self._settings().prompt.context_preset)
        return self._context_preset

    def counter(self) -> TokenCounter:
        """The engine's token counter, with its cache (one per engine)."""
        if self._counter is None:
            engine = self.load()
            many = engine.count_tokens_many if engine.capabilities.counts_many else None
            self._counter = TokenCounter(
                engine.count_tokens, count_many=many, max_token_bytes=engine.max_token_bytes()
            )
        return self._counter
