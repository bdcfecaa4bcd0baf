"""What the KV cache is sized for: the chat's window plus the side cells, in llama.cpp's cells
and in the GPU memory the offload plan leaves for them. Real SmolLM2 (a context of its own
size, and its GGUF for the plan)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tavern.engines.config import EngineConfig
from tavern.engines.factory import plan_config
from tavern.engines.gguf_info import read_gguf


def test_llama_cpp_gets_the_window_plus_the_side_cells(model_path: Path) -> None:
    import llama_cpp

    from tavern.engines.local import LocalEngine

    e = LocalEngine(model_path, n_ctx=512, side_ctx=256)
    e.load()
    try:
        assert e._llama is not None
        assert llama_cpp.llama_n_ctx(e._llama.ctx) == e.kv_cells == 768
    finally:
        e.unload()


def test_the_gpu_plan_leaves_room_for_the_side_cells_too(model_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With free VRAM known, the layers offloaded leave room for the whole KV cache llama.cpp
    will allocate, side cells included (it used to fit them beside the chat's window alone, a
    KV cache half the size). No GPU on this machine: its presence and free memory are faked."""
    from tavern.engines import gpu

    info = read_gguf(model_path)
    n_ctx = 8192
    free = info.gpu_reserve_bytes(2 * n_ctx) + sum(info.gpu_layer_costs(n_ctx)[: info.n_layers * 3 // 4])
    assert info.recommend_gpu_layers(free, 2 * n_ctx) < info.recommend_gpu_layers(free, n_ctx)  # it matters
    monkeypatch.setattr(gpu, "offload_supported", lambda: True)
    monkeypatch.setattr(gpu, "detect_free_vram", lambda: free)

    planned, step_down, _ = plan_config(EngineConfig(n_ctx=n_ctx, n_gpu_layers=-1), model_path)
    assert planned.n_gpu_layers == info.recommend_gpu_layers(free, 2 * n_ctx) and not step_down
    no_side, _, _ = plan_config(EngineConfig(n_ctx=n_ctx, n_gpu_layers=-1, side_ctx=0), model_path)
    assert no_side.n_gpu_layers == info.recommend_gpu_layers(free, n_ctx)
    explicit, _, _ = plan_config(EngineConfig(n_ctx=n_ctx, n_gpu_layers=7), model_path)
    assert explicit.n_gpu_layers == 7  # a count the user chose is theirs
