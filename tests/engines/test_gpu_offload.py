"""GPU offload where free VRAM cannot be measured (no nvidia-smi: Metal, ROCm, Vulkan builds).

This machine has no GPU, so a refused load "for memory" cannot happen for real: the step-down
loop is checked with a loader that refuses more than N layers (the one fault faked here), and
the real engine is checked on the real CPU build: it loads with -1 and says 0 layers on CPU.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tavern.engines.gguf_info import read_gguf
from tavern.engines.gpu import backend_devices, offload_supported, step_down
from tavern.engines.load_plan import plan_load

REPO = Path(__file__).resolve().parents[2]


def refusing_above(limit: int, calls: list[int]):
    """A loader that llama.cpp would be on a GPU with room for `limit` layers."""

    def try_load(n: int) -> str:
        calls.append(n)
        if n > limit:
            raise ValueError(f"Failed to load model from file (asked {n} layers)")
        return f"model with {n} layers"

    return try_load


@pytest.mark.parametrize(
    ("limit", "tried", "fitted"),
    [(99, [31], 31), (20, [31, 15], 15), (7, [31, 15, 7], 7), (2, [31, 15, 7, 3, 1], 1), (0, [31, 15, 7, 3, 1, 0], 0)],
)
def test_step_down_halves_until_the_model_loads(limit: int, tried: list[int], fitted: int) -> None:
    calls: list[int] = []
    model, offload = step_down(31, refusing_above(limit, calls))
    assert calls == tried and list(offload.tried) == tried
    assert model == f"model with {fitted} layers" and offload.layers == fitted and offload.total == 31
    note = offload.note
    assert "\n" not in note
    if fitted == 31:
        assert "all 31 layers" in note
    elif fitted == 0:
        assert "no layers fitted" in note and "CPU" in note
    else:
        assert f"{fitted} of 31 layers fitted" in note and "31" in note


def test_step_down_reports_a_load_that_fails_even_on_the_cpu() -> None:
    calls: list[int] = []
    with pytest.raises(ValueError, match="asked 0 layers"):
        step_down(8, refusing_above(-1, calls))
    assert calls == [8, 4, 2, 1, 0]


def test_plan_offloads_everything_when_free_vram_is_unknown(model_path: Path) -> None:
    info = read_gguf(model_path)
    every = info.n_layers + 1
    unknown = plan_load(info, n_ctx=512, gpu_layers=-1, free_vram=None, gpu_backend=True)
    assert unknown.n_gpu_layers == every and unknown.gpu_step_down
    # nvidia-smi answered: the estimate stands, no trying.
    measured = plan_load(info, n_ctx=512, gpu_layers=-1, free_vram=8 << 30, gpu_backend=True)
    assert measured.n_gpu_layers == every and not measured.gpu_step_down
    half = info.gpu_reserve_bytes(512) + sum(info.gpu_layer_costs(512)[: info.n_layers // 2])
    tight = plan_load(info, n_ctx=512, gpu_layers=-1, free_vram=half, gpu_backend=True)
    assert 0 < tight.n_gpu_layers < every and not tight.gpu_step_down
    # No GPU backend (a CPU build) or an explicit count: nothing is tried.
    assert plan_load(info, n_ctx=512, gpu_layers=-1, free_vram=None).n_gpu_layers == 0
    explicit = plan_load(info, n_ctx=512, gpu_layers=10, free_vram=None, gpu_backend=True)
    assert explicit.n_gpu_layers == 10 and not explicit.gpu_step_down


def test_engine_steps_down_when_llama_cpp_refuses(model_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real model through the engine's own load, with llama.cpp refusing more than 9
    layers as a full GPU would (on this CPU build the layer count is otherwise ignored)."""
    import llama_cpp

    from tavern.engines.local import LocalEngine

    real = llama_cpp.Llama
    asked: list[int] = []

    def gpu_with_room_for_9(**kwargs):
        asked.append(kwargs["n_gpu_layers"])
        if kwargs["n_gpu_layers"] > 9:
            raise ValueError(f"Failed to load model from file: {kwargs['model_path']}")
        return real(**kwargs)

    monkeypatch.setattr(llama_cpp, "Llama", gpu_with_room_for_9)
    total = read_gguf(model_path).n_layers + 1  # SmolLM2-135M: 30 + the output head
    engine = LocalEngine(model_path, n_ctx=256, n_gpu_layers=total, gpu_step_down=True)
    engine.load()
    try:
        assert asked == [31, 15, 7]
        assert engine.load_info["gpu_layers"] == 7
        assert engine.load_info["note"] == engine.offload.note
        assert "7 of 31 layers fitted" in engine.offload.note
        assert engine.tokenize("hello")  # a working model, not a stand-in
    finally:
        engine.unload()


def test_cpu_build_loads_with_minus_one_and_says_cpu(home: Path) -> None:
    """The real CPU build through the app's own planning: -1 loads, 0 layers offloaded, no
    step-down, backend CPU."""
    from tavern.session import Tavern

    assert not offload_supported()
    tavern = Tavern.open(home)
    tavern.settings.model.n_ctx = 256
    tavern.settings.model.n_gpu_layers = -1
    engine = tavern.load_engine()
    info = engine.load_info
    assert info["backend"] == "CPU" and info["gpu_layers"] == 0 and info["gpu_offload"] is False
    assert info["n_gpu_layers_requested"] == 0 and engine.offload is None
    assert tavern.load_notes == []
    engine.unload()


def test_models_info_shows_what_llama_cpp_sees(home: Path, model_path: Path) -> None:
    devices = backend_devices()
    cpu = [d for d in devices if d.name == "CPU"]
    assert cpu and cpu[0].kind == "CPU" and cpu[0].description
    run = [sys.executable, "-m", "tavern.cli", "models", "info", str(model_path)]
    out = subprocess.run([*run, "--json"], capture_output=True, text=True, cwd=REPO, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)["llama_cpp"]
    assert report["gpu_offload"] is False
    assert {"name": "CPU", "description": cpu[0].description}.items() <= report["devices"][0].items()
    text = subprocess.run(run, capture_output=True, text=True, cwd=REPO, timeout=120, check=False)
    assert text.returncode == 0, text.stderr
    assert f"CPU (CPU: {cpu[0].description})" in text.stdout
    assert "GPU offload:    not supported by this llama.cpp build (CPU only)" in text.stdout
