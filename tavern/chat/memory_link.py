"""`SessionLink`: an open chat as long-term memory sees it (tavern.memory.ports).

Memory indexes the chat and writes its summary in the background; it gets this small view of
the session instead of the session itself, so memory depends on nothing above it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tavern.chat.host import PromptHost
    from tavern.engines.base import Engine
    from tavern.engines.samplers import SamplerSettings
    from tavern.prompt.templates import PromptFormat
    from tavern.prompt.token_counter import TokenCounter
    from tavern.store.chatfile import Chat


@dataclass(frozen=True)
class SessionLink:
    host: PromptHost
    key: str
    chat: Chat
    char_name: str

    @property
    def user_name(self) -> str:
        return self.host.settings.chat.user_name

    def engine(self) -> Engine:
        return self.host.engines.load()

    def counter(self) -> TokenCounter:
        return self.host.engines.counter()

    def prompt_format(self) -> PromptFormat:
        return self.host.engines.prompt_format()

    def sampler(self, temperature: float) -> SamplerSettings:
        return self.host.sampler_settings(temperature=temperature)
