"""Read what a GGUF model file says about itself, and plan how to load it.

`read_gguf(path)` parses the header of a GGUF file (magic, version, metadata key/values and the
tensor-info table) without reading or mapping the tensor data, so it is fast even on a 40 GB
file. The result, `GGUFInfo`, answers the questions Tavern asks before loading a model: its
architecture and size, the quantization and the real bits per weight, the native context and
RoPE base, the chat template, how much memory the weights and the KV cache need, and how many
layers fit on the GPU.

Callers: `tavern.engines.local` (load defaults: context, RoPE, GPU layers), `tavern.engines.models`
(`tavern models info` / `tavern models list`) and the CLI.

Every failure on a bad file is a `ModelLoadError` whose message is one line naming the file.
All reads are bounded by the file size, so a hostile length field cannot make us allocate
gigabytes.
"""

from __future__ import annotations

import math
import re
import shutil
import struct
import subprocess
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, TypeGuard

from tavern.errors import ModelLoadError

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32

# Arrays longer than this are recorded as `SkippedArray` (type and length only): the tokenizer's
# tokens/merges/scores run to 100k+ entries and nobody in Tavern needs them from here.
MAX_KEPT_ARRAY = 4096
# A kept string (key, name, chat template) longer than this is corruption, not a template:
# real chat templates are tens of KB. Strings inside skipped arrays are seeked over instead.
MAX_KEPT_STRING = 16 * 1024 * 1024

# llama.cpp rounds the context up to a multiple of 256 cells when it creates the KV cache
# (llama-context.cpp, llama-cpp-python 0.3.36).
KV_CELL_PADDING = 256

MIB = 1024 * 1024

# --- GGUF metadata value types (gguf-py GGUFValueType) -------------------------------------------
_T_UINT8, _T_INT8, _T_UINT16, _T_INT16, _T_UINT32, _T_INT32, _T_FLOAT32 = range(7)
_T_BOOL, _T_STRING, _T_ARRAY, _T_UINT64, _T_INT64, _T_FLOAT64 = range(7, 13)

_SCALAR_FORMATS: dict[int, str] = {
    _T_UINT8: "<B",
    _T_INT8: "<b",
    _T_UINT16: "<H",
    _T_INT16: "<h",
    _T_UINT32: "<I",
    _T_INT32: "<i",
    _T_FLOAT32: "<f",
    _T_BOOL: "<?",
    _T_UINT64: "<Q",
    _T_INT64: "<q",
    _T_FLOAT64: "<d",
}
_VALUE_TYPE_NAMES = {
    _T_UINT8: "uint8",
    _T_INT8: "int8",
    _T_UINT16: "uint16",
    _T_INT16: "int16",
    _T_UINT32: "uint32",
    _T_INT32: "int32",
    _T_FLOAT32: "float32",
    _T_BOOL: "bool",
    _T_STRING: "string",
    _T_ARRAY: "array",
    _T_UINT64: "uint64",
    _T_INT64: "int64",
    _T_FLOAT64: "float64",
}

# --- ggml tensor types: id -> (name, elements per block, bytes per block) ---------------------------
# From gguf-py's GGML_QUANT_SIZES as vendored by llama-cpp-python 0.3.36 (QK_K = 256).
_QK_K = 256
GGML_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("F32", 1, 4),
    1: ("F16", 1, 2),
    2: ("Q4_0", 32, 2 + 16),
    3: ("Q4_1", 32, 2 + 2 + 16),
    6: ("Q5_0", 32, 2 + 4 + 16),
    7: ("Q5_1", 32, 2 + 2 + 4 + 16),
    8: ("Q8_0", 32, 2 + 32),
    9: ("Q8_1", 32, 2 + 2 + 32),
    10: ("Q2_K", 256, 2 + 2 + _QK_K // 16 + _QK_K // 4),
    11: ("Q3_K", 256, 2 + _QK_K // 4 + _QK_K // 8 + 12),
    12: ("Q4_K", 256, 2 + 2 + _QK_K // 2 + 12),
    13: ("Q5_K", 256, 2 + 2 + _QK_K // 2 + _QK_K // 8 + 12),
    14: ("Q6_K", 256, 2 + _QK_K // 2 + _QK_K // 4 + _QK_K // 16),
    15: ("Q8_K", 256, 4 + _QK_K + _QK_K // 8),
    16: ("IQ2_XXS", 256, 2 + _QK_K // 4),
    17: ("IQ2_XS", 256, 2 + _QK_K // 4 + _QK_K // 32),
    18: ("IQ3_XXS", 256, 2 + _QK_K // 4 + _QK_K // 8),
    19: ("IQ1_S", 256, 2 + _QK_K // 8 + _QK_K // 16),
    20: ("IQ4_NL", 32, 2 + 16),
    21: ("IQ3_S", 256, 2 + _QK_K // 4 + _QK_K // 8 + _QK_K // 32 + 4),
    22: ("IQ2_S", 256, 2 + _QK_K // 4 + _QK_K // 16),
    23: ("IQ4_XS", 256, 2 + 2 + _QK_K // 2 + _QK_K // 64),
    24: ("I8", 1, 1),
    25: ("I16", 1, 2),
    26: ("I32", 1, 4),
    27: ("I64", 1, 8),
    28: ("F64", 1, 8),
    29: ("IQ1_M", 256, _QK_K // 8 + _QK_K // 16 + _QK_K // 32),
    30: ("BF16", 1, 2),
    # 31-33 were the removed Q4_0_4_4 / Q4_0_4_8 / Q4_0_8_8 repacks: Q4_0 blocks on disk.
    31: ("Q4_0_4_4", 32, 18),
    32: ("Q4_0_4_8", 32, 18),
    33: ("Q4_0_8_8", 32, 18),
    34: ("TQ1_0", 256, 2 + 4 * 13),
    35: ("TQ2_0", 256, 2 + 64),
    39: ("MXFP4", 32, 1 + 16),
    40: ("NVFP4", 64, 4 + 32),
    41: ("Q1_0", 128, 2 + 16),
    42: ("Q2_0", 64, 2 + 16),
}
_GGML_TYPE_IDS: dict[str, int] = {name: type_id for type_id, (name, _, _) in GGML_TYPES.items()}


def ggml_type_id(name: str) -> int:
    """The ggml type id of a type name, any case ("q8_0" -> 8): the value llama.cpp takes for a
    KV cache `type_k`/`type_v`. The one name -> id table is GGML_TYPES; KeyError if unknown."""
    return _GGML_TYPE_IDS[name.upper()]

# general.file_type (llama_ftype) -> the quant name users know from file names.
FILE_TYPES: dict[int, str] = {
    0: "F32",
    1: "F16",
    2: "Q4_0",
    3: "Q4_1",
    4: "Q4_1_SOME_F16",
    7: "Q8_0",
    8: "Q5_0",
    9: "Q5_1",
    10: "Q2_K",
    11: "Q3_K_S",
    12: "Q3_K_M",
    13: "Q3_K_L",
    14: "Q4_K_S",
    15: "Q4_K_M",
    16: "Q5_K_S",
    17: "Q5_K_M",
    18: "Q6_K",
    19: "IQ2_XXS",
    20: "IQ2_XS",
    21: "Q2_K_S",
    22: "IQ3_XS",
    23: "IQ3_XXS",
    24: "IQ1_S",
    25: "IQ4_NL",
    26: "IQ3_S",
    27: "IQ3_M",
    28: "IQ2_S",
    29: "IQ2_M",
    30: "IQ4_XS",
    31: "IQ1_M",
    32: "BF16",
    33: "Q4_0_4_4",
    34: "Q4_0_4_8",
    35: "Q4_0_8_8",
    36: "TQ1_0",
    37: "TQ2_0",
    38: "MXFP4_MOE",
    39: "NVFP4",
    40: "Q1_0",
    41: "Q2_0",
}

# KV cache element types llama.cpp accepts for type_k / type_v: (elements per block, bytes).
KV_CACHE_TYPES: dict[str, tuple[int, int]] = {
    "f32": (1, 4),
    "f16": (1, 2),
    "bf16": (1, 2),
    "q8_0": (32, 34),
    "q4_0": (32, 18),
    "q4_1": (32, 20),
    "iq4_nl": (32, 18),
    "q5_0": (32, 22),
    "q5_1": (32, 24),
}

_LAYER_TENSOR = re.compile(r"^blk\.(\d+)\.")

# GPU planning: what we keep free besides weights, KV cache and compute buffer (the CUDA context,
# cuBLAS workspace, fragmentation). llama.cpp's own `--fit` logic leaves about 1 GiB by default;
# we are a little less cautious because we also budget the compute buffer explicitly.
GPU_SAFETY_MARGIN = 512 * MIB


@dataclass(frozen=True)
class SkippedArray:
    """A metadata array too long to keep (tokenizer tokens, merges, scores): type and length."""

    item_type: str
    length: int


@dataclass(frozen=True)
class TensorInfo:
    """One entry of the tensor-info table. `offset` is relative to the start of the data section."""

    name: str
    shape: tuple[int, ...]
    ggml_type: int
    offset: int
    n_bytes: int

    @property
    def n_elements(self) -> int:
        return math.prod(self.shape)

    @property
    def type_name(self) -> str:
        known = GGML_TYPES.get(self.ggml_type)
        return known[0] if known else f"type{self.ggml_type}"


@dataclass(frozen=True)
class RopeScaling:
    """RoPE scaling the model file declares (YaRN, linear...), if any."""

    type: str | None = None
    factor: float | None = None
    original_ctx: int | None = None
    finetuned: bool | None = None


@dataclass
class GGUFInfo:
    """Everything Tavern needs from a GGUF header. Build it with `read_gguf`."""

    path: Path
    file_size: int
    version: int
    metadata: dict[str, Any]
    tensors: list[TensorInfo]
    data_offset: int
    architecture: str = "unknown"
    name: str | None = None
    n_params: int = 0
    file_type: int | None = None
    quant: str = "unknown"
    tensor_types: dict[str, int] = field(default_factory=dict)
    tensor_bytes: int = 0
    bits_per_weight: float = 0.0
    n_layers: int = 0
    n_embd: int = 0
    n_head: int = 0
    n_head_kv: int = 0
    # Per-layer KV heads: some architectures vary it per layer (OpenELM, hybrid models).
    n_head_kv_per_layer: list[int] = field(default_factory=list)
    head_dim: int = 0
    head_dim_v: int = 0
    native_ctx: int = 0
    rope_freq_base: float | None = None
    rope_scaling: RopeScaling = field(default_factory=RopeScaling)
    chat_template: str | None = None
    bos_token_id: int | None = None
    eos_token_id: int | None = None
    add_bos_token: bool | None = None
    vocab_size: int = 0
    layer_bytes: list[int] = field(default_factory=list)
    non_layer_bytes: int = 0
    # The output head (output.weight + output_norm), the "+1" layer llama.cpp offloads last.
    # With tied embeddings llama.cpp duplicates token_embd for it, so we count that instead.
    output_bytes: int = 0

    def arch_key(self, suffix: str) -> Any:
        """The metadata value `<architecture>.<suffix>`, or None."""
        return self.metadata.get(f"{self.architecture}.{suffix}")

    # --- memory ---------------------------------------------------------------------------------

    def kv_cache_bytes(self, n_ctx: int, type_k: str = "f16", type_v: str = "f16") -> int:
        """Bytes llama.cpp allocates for the K and V caches at `n_ctx` (rounded up to 256 cells)."""
        return sum(self.kv_cache_layer_bytes(n_ctx, type_k, type_v))

    def kv_cache_layer_bytes(self, n_ctx: int, type_k: str = "f16", type_v: str = "f16") -> list[int]:
        """The KV cache bytes of each layer (a layer's share moves to the GPU with the layer)."""
        cells = _pad(max(int(n_ctx), 1), KV_CELL_PADDING)
        out = []
        for n_kv in self._kv_heads():
            k_row = _row_bytes(_kv_type(type_k), n_kv * self.head_dim)
            v_row = _row_bytes(_kv_type(type_v), n_kv * self.head_dim_v)
            out.append((k_row + v_row) * cells)
        return out

    def compute_buffer_bytes(self, n_ctx: int, n_ubatch: int = 512, flash_attn: bool = False) -> int:
        """An estimate of llama.cpp's compute (scratch) buffer for one micro-batch.

        Two big temporaries that are never alive together (the graph allocator reuses their
        memory): the logits (n_ubatch x vocab, f32) and, without flash attention, the attention
        scores plus mask (n_ubatch x cells x heads, f32). Plus one layer's activations.
        Checked against llama.cpp 0.3.36 on SmolLM2 (no flash attention, n_ubatch 512):
        ctx 2048 -> 114 MiB estimated vs 99 reported; 8192 -> 170 vs 166; 16384 -> 322 vs 326.
        """
        cells = _pad(max(int(n_ctx), 1), KV_CELL_PADDING)
        logits = n_ubatch * self.vocab_size * 4
        scores = 0 if flash_attn else n_ubatch * cells * (max(self.n_head, 1) * 4 + 2)
        ff = _first_int(self.arch_key("feed_forward_length"), 4 * self.n_embd)
        activations = n_ubatch * (8 * self.n_embd + 3 * ff) * 4
        return max(logits, scores) + activations

    def memory_estimate(
        self,
        n_ctx: int,
        type_k: str = "f16",
        type_v: str = "f16",
        n_ubatch: int = 512,
        flash_attn: bool = False,
    ) -> dict[str, int]:
        """Bytes needed to run the model at `n_ctx`: weights, KV cache, compute buffer, total."""
        weights = self.tensor_bytes
        kv = self.kv_cache_bytes(n_ctx, type_k, type_v)
        compute = self.compute_buffer_bytes(n_ctx, n_ubatch, flash_attn)
        return {"weights": weights, "kv_cache": kv, "compute": compute, "total": weights + kv + compute}

    def gpu_reserve_bytes(self, n_ctx: int, n_ubatch: int = 512, flash_attn: bool = False) -> int:
        """VRAM kept aside before any layer is placed: compute buffer plus a safety margin."""
        return self.compute_buffer_bytes(n_ctx, n_ubatch, flash_attn) + GPU_SAFETY_MARGIN

    def gpu_layer_costs(self, n_ctx: int, type_k: str = "f16", type_v: str = "f16") -> list[int]:
        """VRAM each repeating layer takes when offloaded: its weights plus its KV cache share."""
        kv = self.kv_cache_layer_bytes(n_ctx, type_k, type_v)
        return [w + k for w, k in zip(self.layer_bytes, kv)]

    def recommend_gpu_layers(
        self,
        free_vram_bytes: int | None,
        n_ctx: int,
        type_k: str = "f16",
        type_v: str = "f16",
        flash_attn: bool = False,
    ) -> int:
        """How many layers to offload (llama.cpp's n_gpu_layers) given free VRAM.

        All of them (n_layers + 1, the +1 being the output head) when everything fits with the
        KV cache, the compute buffer and a safety margin; otherwise as many repeating layers as
        fit, in order; 0 with no GPU (None) or too little memory.
        """
        if not free_vram_bytes or free_vram_bytes <= 0 or self.n_layers <= 0:
            return 0
        budget = free_vram_bytes - self.gpu_reserve_bytes(n_ctx, flash_attn=flash_attn)
        if budget <= 0:
            return 0
        costs = self.gpu_layer_costs(n_ctx, type_k, type_v)
        if sum(costs) + self.output_bytes <= budget:
            return self.n_layers + 1
        placed = 0
        for cost in costs:
            if cost > budget:
                break
            budget -= cost
            placed += 1
        return placed

    # --- internals -------------------------------------------------------------------------------

    def _kv_heads(self) -> list[int]:
        if self.n_head_kv_per_layer:
            return self.n_head_kv_per_layer
        return [self.n_head_kv] * self.n_layers


# --- RoPE and context helpers ---------------------------------------------------------------------


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


def detect_free_vram(timeout: float = 3.0) -> int | None:
    """Free GPU memory in bytes (summed over NVIDIA GPUs) via nvidia-smi; None when there is none.

    Never raises: a missing driver, a hung nvidia-smi or odd output all mean "no GPU".
    """
    exe = shutil.which("nvidia-smi")
    if not exe:
        return None
    try:
        out = subprocess.run(
            [exe, "--query-gpu=memory.free", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    total = 0
    found = False
    for line in out.stdout.splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            total += int(float(line)) * MIB
            found = True
        except ValueError:
            return None
    return total if found else None


# --- the reader -----------------------------------------------------------------------------------


class _Truncated(Exception):
    pass


class _Reader:
    """Buffered, bounded little-endian reads over the header of an open file.

    Every length read from the file is checked against the bytes left in the file before
    anything is allocated, so a corrupt or hostile length fails fast as "truncated".
    """

    CHUNK = 1 << 20

    def __init__(self, f: BinaryIO, file_size: int) -> None:
        self.f = f
        self.file_size = file_size
        self.buf = b""
        self.pos = 0  # position within buf
        self.base = 0  # file offset of buf[0]

    @property
    def offset(self) -> int:
        return self.base + self.pos

    def remaining(self) -> int:
        return self.file_size - self.offset

    def _ensure(self, n: int) -> None:
        if self.pos + n <= len(self.buf):
            return
        if n > self.remaining():
            raise _Truncated
        tail = self.buf[self.pos :]
        self.base += self.pos
        self.pos = 0
        more = self.f.read(max(n - len(tail), self.CHUNK))
        self.buf = tail + more
        if len(self.buf) < n:
            raise _Truncated

    def unpack(self, fmt: str, size: int) -> Any:
        self._ensure(size)
        value = struct.unpack_from(fmt, self.buf, self.pos)[0]
        self.pos += size
        return value

    def u32(self) -> int:
        return int(self.unpack("<I", 4))

    def u64(self) -> int:
        return int(self.unpack("<Q", 8))

    def string(self) -> str:
        n = self.u64()
        if n > self.remaining():
            raise _Truncated
        if n > MAX_KEPT_STRING:
            raise ValueError(f"a string of {n:,} bytes at offset {self.offset - 8}")
        self._ensure(n)
        raw = self.buf[self.pos : self.pos + n]
        self.pos += n
        return raw.decode("utf-8", errors="replace")

    def skip_strings(self, count: int) -> None:
        # The hot loop of the whole reader: tokenizer vocabularies and merges are 30k-250k
        # strings each. Work on local copies of the buffer and position, and go back to the
        # bounded `_ensure` only when a string crosses the end of the buffer.
        unpack_from = struct.unpack_from
        buf, pos, end = self.buf, self.pos, len(self.buf)
        for _ in range(count):
            if pos + 8 > end:
                self.pos = pos
                self._ensure(8)
                buf, pos, end = self.buf, self.pos, len(self.buf)
            n = unpack_from("<Q", buf, pos)[0]
            pos += 8
            if pos + n > end:
                # Crosses the buffer: `skip` seeks past it rather than reading it in.
                self.pos = pos
                self.skip(n)
                buf, pos, end = self.buf, self.pos, len(self.buf)
                continue
            pos += n
        self.pos = pos

    def skip(self, n: int) -> None:
        if n > self.remaining():
            raise _Truncated
        if self.pos + n <= len(self.buf):
            self.pos += n
            return
        # Jump past the buffer without reading what lies between.
        target = self.offset + n
        self.f.seek(target)
        self.base = target
        self.buf = b""
        self.pos = 0

    def array_of(self, fmt: str, size: int, count: int) -> list[Any]:
        total = size * count
        self._ensure(total)
        values = list(struct.unpack_from(f"<{count}{fmt[1:]}", self.buf, self.pos))
        self.pos += total
        return values


def _scalar_size(value_type: int) -> int:
    return struct.calcsize(_SCALAR_FORMATS[value_type])


def _read_value(r: _Reader, value_type: int, depth: int = 0) -> Any:
    if value_type in _SCALAR_FORMATS:
        return r.unpack(_SCALAR_FORMATS[value_type], _scalar_size(value_type))
    if value_type == _T_STRING:
        return r.string()
    if value_type == _T_ARRAY:
        if depth > 2:
            raise ValueError("arrays nested too deeply")
        item_type = r.u32()
        count = r.u64()
        # Each item takes at least its scalar size (8 for a string's length): bound the count.
        min_item = 8 if item_type in (_T_STRING, _T_ARRAY) else _scalar_size_or_fail(item_type)
        if count * min_item > r.remaining():
            raise _Truncated
        type_name = _VALUE_TYPE_NAMES.get(item_type, str(item_type))
        if item_type == _T_STRING:
            if count > MAX_KEPT_ARRAY:
                r.skip_strings(count)
                return SkippedArray(type_name, count)
            return [r.string() for _ in range(count)]
        if item_type == _T_ARRAY:
            if count > MAX_KEPT_ARRAY:
                raise ValueError(f"a nested array of {count:,} arrays")
            return [_read_value(r, _T_ARRAY, depth + 1) for _ in range(count)]
        size = _scalar_size(item_type)
        if count > MAX_KEPT_ARRAY:
            r.skip(size * count)
            return SkippedArray(type_name, count)
        return r.array_of(_SCALAR_FORMATS[item_type], size, count)
    raise ValueError(f"unknown metadata value type {value_type}")


def _scalar_size_or_fail(value_type: int) -> int:
    if value_type not in _SCALAR_FORMATS:
        raise ValueError(f"unknown metadata value type {value_type}")
    return _scalar_size(value_type)


def read_gguf(path: str | Path) -> GGUFInfo:
    """Parse the header of the GGUF file at `path` (no tensor data is read).

    Raises ModelLoadError with a one-line message for a missing, unreadable, non-GGUF,
    unsupported-version, truncated or corrupt file.
    """
    p = Path(path).expanduser()
    try:
        file_size = p.stat().st_size
        if not p.is_file():
            raise ModelLoadError(f"{p}: not a file")
        with p.open("rb") as f:
            return _parse(p, f, file_size)
    except ModelLoadError:
        raise
    except FileNotFoundError:
        raise ModelLoadError(f"{p}: model file not found") from None
    except PermissionError:
        raise ModelLoadError(f"{p}: permission denied") from None
    except OSError as e:
        raise ModelLoadError(f"{p}: cannot read ({e.strerror or e})") from None


def _parse(p: Path, f: BinaryIO, file_size: int) -> GGUFInfo:
    r = _Reader(f, file_size)
    try:
        magic = f.read(4)
        r.base = 4
        if len(magic) < 4:
            raise ModelLoadError(f"{p}: not a GGUF file (too short)")
        if magic != GGUF_MAGIC:
            raise ModelLoadError(f"{p}: not a GGUF file (bad magic)")
        version = r.u32()
        if version not in SUPPORTED_VERSIONS and struct.unpack(">I", struct.pack("<I", version))[0] in (2, 3):
            raise ModelLoadError(f"{p}: big-endian GGUF files are not supported (use a little-endian one)")
        if version not in SUPPORTED_VERSIONS:
            raise ModelLoadError(f"{p}: unsupported GGUF version {version} (supported: 2, 3)")
        n_tensors = r.u64()
        n_kv = r.u64()
        # A key/value takes at least 13 bytes and a tensor info at least 24: bound the counts
        # before looping so a hostile count cannot spin for hours.
        if n_kv * 13 + n_tensors * 24 > r.remaining():
            raise _Truncated
        metadata: dict[str, Any] = {}
        for _ in range(n_kv):
            key = r.string()
            value_type = r.u32()
            metadata[key] = _read_value(r, value_type)
        tensors_raw = []
        for _ in range(n_tensors):
            name = r.string()
            n_dims = r.u32()
            if n_dims > 8:
                raise ValueError(f"tensor {name!r} has {n_dims} dimensions")
            shape = tuple(r.u64() for _ in range(n_dims))
            ggml_type = r.u32()
            offset = r.u64()
            tensors_raw.append((name, shape, ggml_type, offset))
        header_end = r.offset
    except _Truncated:
        raise ModelLoadError(f"{p}: truncated or corrupt GGUF header") from None
    except (ValueError, struct.error) as e:
        raise ModelLoadError(f"{p}: corrupt GGUF header ({e})") from None

    alignment = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
    if not _is_int(alignment) or alignment <= 0 or alignment & (alignment - 1):
        raise ModelLoadError(f"{p}: corrupt GGUF header (alignment {alignment!r})")
    data_offset = _pad(header_end, int(alignment))
    tensors = _size_tensors(p, tensors_raw, file_size - data_offset)
    return _build_info(p, file_size, version, metadata, tensors, data_offset)


def _size_tensors(
    p: Path, raw: list[tuple[str, tuple[int, ...], int, int]], data_size: int
) -> list[TensorInfo]:
    """Compute each tensor's byte size and check it lies inside the file (catches truncation)."""
    if data_size < 0 and raw:
        raise ModelLoadError(f"{p}: truncated GGUF file (no tensor data)")
    # For types we do not know (newer than this table), fall back to the gap to the next tensor.
    by_offset = sorted(raw, key=lambda t: t[3])
    next_offset = {}
    for (name, _s, _t, _off), nxt in zip(by_offset, by_offset[1:] + [None]):
        next_offset[name] = nxt[3] if nxt else data_size
    tensors = []
    for name, shape, ggml_type, offset in raw:
        n_el = math.prod(shape)
        known = GGML_TYPES.get(ggml_type)
        if known:
            block, block_bytes = known[1], known[2]
            if shape and shape[0] % block:
                raise ModelLoadError(
                    f"{p}: corrupt GGUF (tensor {name} row of {shape[0]} is not a multiple of {block})"
                )
            n_bytes = n_el // block * block_bytes
        else:
            n_bytes = max(next_offset[name] - offset, 0)
        if offset + n_bytes > data_size:
            raise ModelLoadError(f"{p}: truncated GGUF file (tensor {name} ends past the end of the file)")
        tensors.append(TensorInfo(name, shape, ggml_type, offset, n_bytes))
    return tensors


def _build_info(
    p: Path,
    file_size: int,
    version: int,
    md: dict[str, Any],
    tensors: list[TensorInfo],
    data_offset: int,
) -> GGUFInfo:
    arch = md.get("general.architecture")
    arch = arch if isinstance(arch, str) and arch else "unknown"

    def a(suffix: str) -> Any:
        return md.get(f"{arch}.{suffix}")

    n_layers = _int_or(a("block_count"), 0)
    n_embd = _int_or(a("embedding_length"), 0)
    n_head = _first_int(a("attention.head_count"), 0)
    kv_raw = a("attention.head_count_kv")
    per_layer_kv: list[int] = []
    if isinstance(kv_raw, list) and kv_raw and all(_is_int(x) for x in kv_raw):
        per_layer_kv = [int(x) for x in kv_raw][:n_layers]
        n_head_kv = max(per_layer_kv)
    else:
        n_head_kv = _int_or(kv_raw, n_head)
    head_dim = _int_or(a("attention.key_length"), n_embd // n_head if n_head else 0)
    head_dim_v = _int_or(a("attention.value_length"), head_dim)

    tokens = md.get("tokenizer.ggml.tokens")
    if isinstance(tokens, SkippedArray):
        n_vocab_tokens = tokens.length
    elif isinstance(tokens, list):
        n_vocab_tokens = len(tokens)
    else:
        n_vocab_tokens = 0
    vocab_size = _int_or(a("vocab_size"), n_vocab_tokens)

    rope_base = a("rope.freq_base")
    scaling_type = a("rope.scaling.type")
    rope_scaling = RopeScaling(
        type=scaling_type if isinstance(scaling_type, str) and scaling_type != "none" else None,
        factor=float(a("rope.scaling.factor")) if _is_num(a("rope.scaling.factor")) else None,
        original_ctx=_int_or(a("rope.scaling.original_context_length"), 0) or None,
        finetuned=a("rope.scaling.finetuned") if isinstance(a("rope.scaling.finetuned"), bool) else None,
    )

    n_params = sum(t.n_elements for t in tensors)
    tensor_bytes = sum(t.n_bytes for t in tensors)
    histogram = Counter(t.type_name for t in tensors)

    layer_bytes = [0] * n_layers
    non_layer = 0
    by_name = {t.name: t for t in tensors}
    for t in tensors:
        m = _LAYER_TENSOR.match(t.name)
        if m and int(m.group(1)) < n_layers:
            layer_bytes[int(m.group(1))] += t.n_bytes
        else:
            non_layer += t.n_bytes
    head = by_name.get("output.weight") or by_name.get("token_embd.weight")
    output_bytes = (head.n_bytes if head else 0) + (
        by_name["output_norm.weight"].n_bytes if "output_norm.weight" in by_name else 0
    )

    raw_file_type = md.get("general.file_type")
    file_type = int(raw_file_type) if _is_int(raw_file_type) else None
    if file_type is not None and file_type in FILE_TYPES:
        quant = FILE_TYPES[file_type]
    else:
        quant = _guess_quant(tensors)

    template = md.get("tokenizer.chat_template")
    add_bos = md.get("tokenizer.ggml.add_bos_token")
    name = md.get("general.name")
    return GGUFInfo(
        path=p,
        file_size=file_size,
        version=version,
        metadata=md,
        tensors=tensors,
        data_offset=data_offset,
        architecture=arch,
        name=name if isinstance(name, str) else None,
        n_params=n_params,
        file_type=file_type,
        quant=quant,
        tensor_types=dict(histogram.most_common()),
        tensor_bytes=tensor_bytes,
        bits_per_weight=tensor_bytes * 8 / n_params if n_params else 0.0,
        n_layers=n_layers,
        n_embd=n_embd,
        n_head=n_head,
        n_head_kv=n_head_kv,
        n_head_kv_per_layer=per_layer_kv if len(per_layer_kv) == n_layers else [],
        head_dim=head_dim,
        head_dim_v=head_dim_v,
        native_ctx=_int_or(a("context_length"), 0),
        rope_freq_base=float(rope_base) if _is_num(rope_base) else None,
        rope_scaling=rope_scaling,
        chat_template=template if isinstance(template, str) else None,
        bos_token_id=_int_or(md.get("tokenizer.ggml.bos_token_id"), None),
        eos_token_id=_int_or(md.get("tokenizer.ggml.eos_token_id"), None),
        add_bos_token=add_bos if isinstance(add_bos, bool) else None,
        vocab_size=vocab_size,
        layer_bytes=layer_bytes,
        non_layer_bytes=non_layer,
        output_bytes=output_bytes,
    )


def _guess_quant(tensors: list[TensorInfo]) -> str:
    """Without general.file_type: the type holding most bytes among the 2-D weight tensors."""
    weights: Counter[str] = Counter()
    for t in tensors:
        if len(t.shape) >= 2:
            weights[t.type_name] += t.n_bytes
    return weights.most_common(1)[0][0] if weights else "unknown"


# --- small helpers --------------------------------------------------------------------------------


def _pad(n: int, multiple: int) -> int:
    return (n + multiple - 1) // multiple * multiple


def _kv_type(name: str) -> tuple[int, int]:
    try:
        return KV_CACHE_TYPES[name.lower()]
    except KeyError:
        known = ", ".join(KV_CACHE_TYPES)
        raise ValueError(f"unknown KV cache type {name!r} (known: {known})") from None


def _row_bytes(kind: tuple[int, int], n: int) -> int:
    block, size = kind
    return -(-n // block) * size


def _is_int(v: Any) -> TypeGuard[int]:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _int_or(v: Any, default: Any) -> Any:
    return int(v) if _is_int(v) else default


def _first_int(v: Any, default: int) -> int:
    """head_count may be a per-layer array in some architectures: take the largest."""
    if isinstance(v, list) and v and all(_is_int(x) for x in v):
        return max(int(x) for x in v)
    return int(v) if _is_int(v) else default
