"""What long-term memory needs from a chat, as small interfaces: memory never sees the session.

`ChatHandle` is a chat as memory indexes it (the character's key and the open chat file).
`SummarySource` adds what writing the rolling summary needs: the names for the summary
prompt's macros, and the engine with its counter, format and samplers, asked for when a job
runs (a settings change may have loaded another model since the job was scheduled).
`tavern.chat.memory_link.SessionLink` implements both for an open chat session.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from tavern.engines.base import Engine
    from tavern.engines.samplers import SamplerSettings
    from tavern.prompt.templates import PromptFormat
    from tavern.prompt.token_counter import TokenCounter
    from tavern.store.chatfile import Chat


class ChatHandle(Protocol):
    @property
    def key(self) -> str: ...

    @property
    def chat(self) -> Chat: ...


class SummarySource(ChatHandle, Protocol):
    @property
    def char_name(self) -> str: ...

    @property
    def user_name(self) -> str: ...

    def engine(self) -> Engine: ...

    def counter(self) -> TokenCounter: ...

    def prompt_format(self) -> PromptFormat: ...

    def sampler(self, temperature: float) -> SamplerSettings: ...
