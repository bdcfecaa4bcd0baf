"""`EngineConfig`: what the embedded engine is built from, in one place.

The user writes these under `[model]` in settings.toml (`tavern.config.ModelSettings`, which also
holds the prompt format and the backend choice). The loader builds the engine from them, a
settings change reloads the model exactly when its `EngineConfig` changes, and `tavern models
info` reports the caches the same config will make. Plain data and arithmetic: no llama.cpp.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, TypedDict, Unpack

if TYPE_CHECKING:
    from tavern.config import ModelSettings
    from tavern.engines.gguf_info import GGUFInfo


@dataclass(frozen=True)
class EngineConfig:
    path: str = ""
    """A GGUF path or a name in the models folder; "" = the bundled SmolLM2."""
    n_ctx: int = 4096
    """The chat's window: what the prompt plus the reply must fit in."""
    n_threads: int = 0
    """0: every core."""
    n_gpu_layers: int = -1
    n_batch: int = 512
    flash_attn: bool = False
    type_k: str = "f16"
    type_v: str = "f16"
    rope_freq_base: float = 0.0
    """0: from the model file."""
    rope_alpha: float = 0.0
    """NTK alpha; the loader turns it into a base (the seed guide's formula)."""
    cache_reuse: int = 32
    insert_reuse: bool = True
    side_ctx: int = -1
    """Extra KV cells for the side sequences (CFG, background); -1 = n_ctx, 0 = none."""
    cache_ram_mib: int = 1024
    cache_disk_mib: int = 2048
    """Disk for saved KV states that outlive the process (the user cache folder); 0 = off."""
    bank_cells: int = -1
    """Side cells for the bank of removed text; -1 = all of them, 0 = off."""

    @classmethod
    def from_settings(cls, model: ModelSettings) -> EngineConfig:
        """The engine's part of `[model]` (field names are shared, so nothing is copied by hand;
        tests/engines/test_engine_config.py checks that every field has its setting)."""
        return cls(**{f.name: getattr(model, f.name) for f in fields(cls)})

    def with_changes(self, **changes: Unpack[EngineChanges]) -> EngineConfig:
        return replace(self, **changes)

    @property
    def side_cells(self) -> int:
        return side_cells(self.n_ctx, self.side_ctx)

    @property
    def bank_size(self) -> int:
        return bank_size(self.side_cells, self.bank_cells, self.cache_reuse, self.insert_reuse)


class EngineChanges(TypedDict, total=False):
    """Changes to any of `EngineConfig`'s fields, by name (`with_changes`, `LocalEngine(...)`);
    the type checker holds the two to the same names and types."""

    path: str
    n_ctx: int
    n_threads: int
    n_gpu_layers: int
    n_batch: int
    flash_attn: bool
    type_k: str
    type_v: str
    rope_freq_base: float
    rope_alpha: float
    cache_reuse: int
    insert_reuse: bool
    side_ctx: int
    cache_ram_mib: int
    cache_disk_mib: int
    bank_cells: int


def side_cells(n_ctx: int, side_ctx: int) -> int:
    """Cells for the side sequences beside the chat's window (-1: as many as the window).

    Shared, not one window each: the negative prompt (CFG) and a background job may each fill
    them, and the bank of removed text keeps what they leave. When cells run out, the one not
    in use and the bank give theirs up (`cell_loader.CellLoader._give_way`), so the chat always
    fits beside either side sequence: the cache holds n_ctx + side cells, the windows more."""
    return n_ctx if side_ctx < 0 else side_ctx


def bank_size(side: int, bank_cells: int, cache_reuse: int, insert_reuse: bool) -> int:
    """Cells for the bank of removed text: `bank_cells`, where -1 means all the side cells
    (given back whenever a sequence needs them). Off without chunk reuse after insertions,
    which is what brings banked text back."""
    if cache_reuse <= 0 or not insert_reuse:
        return 0
    return side if bank_cells < 0 else bank_cells


class CachePlan(TypedDict):
    """What the engine's caches will hold for a model (`cache_plan`)."""

    chat_cells: int
    side_cells: int
    kv_mib: float
    ram_budget_mib: int
    state_mib: float
    bank_cells: int


def cache_plan(info: GGUFInfo, config: EngineConfig) -> CachePlan:
    """What the engine's caches will hold for this model: the unified KV cache (chat window plus
    side cells) and the host-memory budget for saved states."""
    n_ctx, side = config.n_ctx, config.side_cells
    per_window = info.kv_cache_bytes(n_ctx, config.type_k, config.type_v)
    return {
        "chat_cells": n_ctx,
        "side_cells": side,
        "kv_mib": info.kv_cache_bytes(n_ctx + side, config.type_k, config.type_v) / 2**20,
        "ram_budget_mib": config.cache_ram_mib,
        "state_mib": per_window / 2**20,
        "bank_cells": config.bank_size,
    }
