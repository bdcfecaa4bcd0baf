"""`open_engine`: the one place an engine is built and loaded.

The embedded engine comes from an `EngineConfig` (the `[model]` settings) and the model file's
metadata; a remote one from a connection profile. Either way the caller gets a loaded `Engine`
and the one-line facts about the load that the user should see once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tavern.engines.base import Engine
from tavern.engines.config import EngineConfig, side_cells
from tavern.engines.remote.profile import IgnoredParams, Profile


@dataclass
class OpenedEngine:
    engine: Engine
    warnings: list[str] = field(default_factory=list)
    """What the load plan warns about (a context stretched past 3x the model's native one)."""
    notes: list[str] = field(default_factory=list)
    """Facts about the load (how many layers fitted on a GPU whose free memory is unknown)."""


def open_engine(
    config: EngineConfig,
    models_dir: Path,
    profile: Profile | None = None,
    store: IgnoredParams | None = None,
    probe_command: Sequence[str] | None = None,
) -> OpenedEngine:
    """A loaded engine: remote for a `profile` (`store` remembers parameters the server
    rejects), else the embedded one for `config`. Raises ModelLoadError/EngineError with one
    line. The CPU probe keeps its verdict per llama.cpp build in the user cache folder."""
    if profile is not None:
        from tavern.engines.remote.engine import RemoteEngine

        remote = RemoteEngine(profile, n_ctx=config.n_ctx, store=store)
        remote.load()
        return OpenedEngine(remote)
    return _open_local(config, models_dir, probe_command)


def _open_local(
    config: EngineConfig, models_dir: Path, probe_command: Sequence[str] | None
) -> OpenedEngine:
    from tavern.engines.cpu_probe import check_build
    from tavern.engines.local import LocalEngine
    from tavern.engines.models import resolve_model

    path = resolve_model(config.path or None, models_dir)
    # Once per llama.cpp build: a CPU that lies about AMX kills a child, not us.
    check_build(path, probe_command)
    planned, gpu_step_down, warnings = plan_config(config, path)
    engine = LocalEngine(path, planned, gpu_step_down=gpu_step_down)
    engine.load()
    # Free VRAM was unknown, so the engine found out by trying: say what fitted.
    notes = [engine.offload.note] if engine.offload is not None else []
    return OpenedEngine(engine, warnings, notes)


def plan_config(config: EngineConfig, path: Path) -> tuple[EngineConfig, bool, list[str]]:
    """`config` settled against the model file: context, RoPE base and GPU layers as llama.cpp
    will get them, whether to step the GPU layers down on a failed load, and the plan's
    warnings."""
    from tavern.engines.gguf_info import read_gguf
    from tavern.engines.gpu import detect_free_vram, offload_supported
    from tavern.engines.load_plan import plan_load

    info = read_gguf(path)
    gpu_layers = config.n_gpu_layers
    if gpu_layers != 0 and not offload_supported():  # a CPU-only build, whatever the GPU
        gpu_layers = 0
    free_vram = detect_free_vram() if gpu_layers != 0 else None
    plan = plan_load(
        info,
        n_ctx=config.n_ctx,
        rope_freq_base=config.rope_freq_base or None,
        rope_alpha=config.rope_alpha or None,
        gpu_layers=gpu_layers,
        free_vram=free_vram,
        gpu_backend=gpu_layers != 0,
    )
    layers = plan.n_gpu_layers
    if gpu_layers < 0 and free_vram is not None:
        # plan_load fitted the layers beside the chat's window; the KV cache llama.cpp makes
        # holds the side cells too (twice the window by default), in the configured types.
        cells = plan.n_ctx + side_cells(plan.n_ctx, config.side_ctx)
        layers = info.recommend_gpu_layers(free_vram, cells, config.type_k, config.type_v, config.flash_attn)
    planned = config.with_changes(n_ctx=plan.n_ctx, n_gpu_layers=layers, rope_freq_base=plan.rope_freq_base or 0.0)
    return planned, plan.gpu_step_down, list(plan.warnings)
