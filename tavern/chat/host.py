"""`PromptHost`: what one chat needs from the application around it (tavern.session.Tavern
provides it): the settings, the engine host, long-term memory, the layouts kept per chat, the
lorebooks of the data home and the sampler settings."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from tavern.chat.layout import LayoutMemory
    from tavern.config import Settings
    from tavern.engines.samplers import SamplerSettings
    from tavern.memory.service import MemoryService
    from tavern.services.engine_host import EngineHost
    from tavern.services.lorebooks import Lorebooks


class PromptHost(Protocol):
    """What a chat's prompt needs from the application around it."""

    @property
    def settings(self) -> Settings: ...

    @property
    def engines(self) -> EngineHost: ...

    @property
    def memory(self) -> MemoryService | None: ...

    @property
    def layouts(self) -> LayoutMemory: ...

    @property
    def lorebooks(self) -> Lorebooks: ...

    def sampler_settings(self, seed: int | None = None, temperature: float | None = None) -> SamplerSettings: ...
