"""A remote backend's connection profile: what `RemoteEngine` is built from.

The profiles are stored by `tavern.backends.BackendStore` (backends.toml, keys apart); the
engine only reads this plain record, and reports a parameter the server rejected through the
small `IgnoredParams` interface, so the engine never depends on where profiles are kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from tavern.errors import ConfigError

APIS = ("openai-chat", "openai-text", "textgen", "llamacpp", "kobold", "ollama")
"""`textgen` is text-generation-webui: OpenAI text completions plus its own fields (CFG)."""

CFG_APIS = ("textgen", "kobold")
"""APIs whose servers take `guidance_scale` and `negative_prompt`: text-generation-webui (its
HF loaders) and KoboldCpp (started with --enableguidance). llama-server, Ollama and plain
OpenAI servers have no CFG."""

IDLE_TIMEOUT_S = 120.0
"""Default seconds a reply may go without text (keep-alive comments count as nothing): long
enough for a big prompt on a slow server, short of the 213 s a keep-alive-only stream once took."""
DEADLINE_S = 600.0
"""Default seconds for a whole reply, retries included."""


@dataclass
class Profile:
    name: str
    api: str
    url: str
    model: str = ""
    format: str = ""
    """Prompt format id for text APIs; "" = the server's template, else the model name."""
    ignored: list[str] = field(default_factory=list)
    """Parameters this server rejected once; no longer sent (remembered per profile)."""
    key: str = field(default="", repr=False)
    """Filled from keys.toml when loaded; never written to backends.toml."""
    idle_timeout_s: float = IDLE_TIMEOUT_S
    """Seconds the stream may go without text before the reply ends (the partial reply kept)."""
    deadline_s: float = DEADLINE_S
    """Seconds one reply may take in all."""

    def __post_init__(self) -> None:
        # Hand-edited backends.toml: a wrong value is one line here, not a TypeError mid-reply.
        self.idle_timeout_s = _seconds(self.name, "idle_timeout_s", self.idle_timeout_s)
        self.deadline_s = _seconds(self.name, "deadline_s", self.deadline_s)


def _seconds(profile: str, key: str, value: object) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool) and 0 < value < float("inf"):
        return float(value)
    raise ConfigError(f"backend {profile!r}: {key} must be a number of seconds above 0, not {value!r}")


class IgnoredParams(Protocol):
    """Where the engine reports a parameter a server rejected, to stop sending it for good."""

    def remember_ignored(self, name: str, param: str) -> None: ...
