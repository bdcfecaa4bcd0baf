"""How to load a model: context size, RoPE base and GPU layers, from the user's choices and what
the model file says (`gguf_info.GGUFInfo`).

Callers: `tavern.engines.factory` settles an `EngineConfig` against the file with `plan_load`
before the engine is built; `tavern.engines.models` repeats its context warning for `tavern
models info`. Plain arithmetic: no llama.cpp, no GPU query (the caller measures free VRAM).
"""

from __future__ import annotations

from dataclasses import dataclass

from tavern.engines.gguf_info import GGUFInfo


def rope_freq_base_for_alpha(alpha: float, base: float = 10000.0) -> float:
    """NTK-aware RoPE: the frequency base for a scaling `alpha`, with the seed's formula.

    rope_freq_base = base x alpha^(64/63). The 64/63 exponent is d/(d-2) for Llama's head size
    of 128; the community (text-generation-webui, the seed guide) uses it for every model.
    Example: alpha 2.65 on Llama 2 (base 10000) gives ~26,900, for an 8192 context.
    """
    if alpha <= 0:
        raise ValueError(f"RoPE alpha must be positive, got {alpha}")
    return float(base * alpha ** (64 / 63))


def context_stretch_warning(n_ctx: int, native_ctx: int) -> str | None:
    """A warning when the chosen context stretches the model's native one, else None.

    The seed guide: extending beyond 2-3x the native context degrades answers.
    """
    if native_ctx <= 0 or n_ctx <= 2 * native_ctx:
        return None
    ratio = n_ctx / native_ctx
    if n_ctx > 3 * native_ctx:
        return (
            f"context {n_ctx} is {ratio:.1f}x the model's native {native_ctx}: "
            "stretching RoPE beyond 3x degrades answers; use a smaller context or a long-context model"
        )
    return f"context {n_ctx} is {ratio:.1f}x the model's native {native_ctx}: answers may degrade past 2x"


@dataclass(frozen=True)
class LoadPlan:
    """What to pass to llama.cpp: context, RoPE base (None = the model's own), GPU layers."""

    n_ctx: int
    rope_freq_base: float | None
    n_gpu_layers: int
    warnings: tuple[str, ...] = ()
    gpu_step_down: bool = False
    """Free VRAM unknown on a GPU build: all layers are tried, fewer if llama.cpp refuses."""


def plan_load(
    info: GGUFInfo,
    n_ctx: int | None = None,
    rope_freq_base: float | None = None,
    rope_alpha: float | None = None,
    gpu_layers: int | None = None,
    free_vram: int | None = None,
    gpu_backend: bool = False,
) -> LoadPlan:
    """Settle context size, RoPE and GPU offload from user choices and the model's metadata.

    Zero or None means "not set" for every choice, matching `settings.toml`.
    `n_ctx` unset -> the native context. An explicit `rope_freq_base` wins over `rope_alpha`;
    alpha scales the model's own base with the seed's formula (for Llama 2 that base is 10000,
    so alpha 2.65 -> ~26,900; using the file's base keeps models trained with a large base
    from being shrunk). `gpu_layers` None or negative -> as many as fit in `free_vram` (0 when
    `free_vram` is None: no GPU); 0 -> CPU only; N -> N, capped at n_layers + 1. With
    `gpu_backend` (llama.cpp can offload) but no `free_vram` (no nvidia-smi: Metal, ROCm,
    Vulkan), -1 means all layers with `gpu_step_down`: the engine tries fewer if the load fails.
    """
    warnings: list[str] = []
    native = info.native_ctx or 0
    ctx = int(n_ctx) if n_ctx else (native or 4096)
    base: float | None = None
    if rope_freq_base:
        base = float(rope_freq_base)
    elif rope_alpha and rope_alpha != 1:
        base = rope_freq_base_for_alpha(rope_alpha, info.rope_freq_base or 10000.0)
    stretch = context_stretch_warning(ctx, native)
    if stretch:
        warnings.append(stretch)
    if native and ctx > native and base is None and not info.rope_scaling.type:
        warnings.append(
            f"context {ctx} exceeds the native {native} with no RoPE scaling: "
            "set rope_alpha (e.g. 2.65 for 2x) or rope_freq_base"
        )
    step_down = False
    if gpu_layers is None or gpu_layers < 0:
        if gpu_backend and free_vram is None:
            layers, step_down = info.n_layers + 1, True
        else:
            layers = info.recommend_gpu_layers(free_vram, ctx)
    else:
        layers = min(int(gpu_layers), info.n_layers + 1)
    return LoadPlan(
        n_ctx=ctx, rope_freq_base=base, n_gpu_layers=layers, warnings=tuple(warnings), gpu_step_down=step_down
    )
