"""Read what a GGUF model file says about itself.

`read_gguf(path)` parses the header of a GGUF file (`gguf_header`: magic, version, metadata
key/values and the tensor-info table) without reading or mapping the tensor data, so it is fast
even on a 40 GB file. The result, `GGUFInfo`, answers the questions Tavern asks before loading a
model: its architecture and size, the quantization and the real bits per weight, the native
context and RoPE base, the chat template, how much memory the weights and the KV cache need, and
how many layers fit on the GPU. What to load with is `load_plan.plan_load`'s to settle.

Callers: `tavern.engines.local` (the layer count), `tavern.engines.factory` (load defaults:
context, RoPE, GPU layers), `tavern.engines.models` (`tavern models info` / `tavern models list`)
and the CLI.

Every failure on a bad file is a `ModelLoadError` whose message is one line naming the file.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, TypeGuard, TypeVar

from tavern.engines.gguf_header import MetadataValue, RawTensor, SkippedArray, read_header
from tavern.errors import ModelLoadError

DEFAULT_ALIGNMENT = 32

# llama.cpp rounds the context up to a multiple of 256 cells when it creates the KV cache
# (llama-context.cpp, llama-cpp-python 0.3.36).
KV_CELL_PADDING = 256

MIB = 1024 * 1024

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
    metadata: dict[str, MetadataValue]
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

    def arch_key(self, suffix: str) -> MetadataValue | None:
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
    header = read_header(p, f, file_size)
    metadata = header.metadata
    alignment = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
    if not _is_int(alignment) or alignment <= 0 or alignment & (alignment - 1):
        raise ModelLoadError(f"{p}: corrupt GGUF header (alignment {alignment!r})")
    data_offset = _pad(header.end, int(alignment))
    tensors = _size_tensors(p, header.tensors, file_size - data_offset)
    return _build_info(p, file_size, header.version, metadata, tensors, data_offset)


def _size_tensors(p: Path, raw: list[RawTensor], data_size: int) -> list[TensorInfo]:
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
    md: dict[str, MetadataValue],
    tensors: list[TensorInfo],
    data_offset: int,
) -> GGUFInfo:
    arch = md.get("general.architecture")
    arch = arch if isinstance(arch, str) and arch else "unknown"

    def a(suffix: str) -> MetadataValue | None:
        return md.get(f"{arch}.{suffix}")

    n_layers = _int_or(a("block_count"), 0)
    n_embd = _int_or(a("embedding_length"), 0)
    n_head = _first_int(a("attention.head_count"), 0)
    kv_raw = a("attention.head_count_kv")
    per_layer_kv: list[int] = []
    if (kv_list := _ints(kv_raw)) is not None:
        per_layer_kv = kv_list[:n_layers]
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
    factor = a("rope.scaling.factor")
    finetuned = a("rope.scaling.finetuned")
    rope_scaling = RopeScaling(
        type=scaling_type if isinstance(scaling_type, str) and scaling_type != "none" else None,
        factor=float(factor) if _is_num(factor) else None,
        original_ctx=_int_or(a("rope.scaling.original_context_length"), 0) or None,
        finetuned=finetuned if isinstance(finetuned, bool) else None,
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


def _is_int(v: object) -> TypeGuard[int]:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: object) -> TypeGuard[int | float]:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


D = TypeVar("D")


def _int_or(v: object, default: D) -> int | D:
    return int(v) if _is_int(v) else default


def _ints(v: object) -> list[int] | None:
    """A non-empty array of whole numbers (a per-layer value), else None."""
    if isinstance(v, list) and v and all(_is_int(x) for x in v):
        return [int(x) for x in v]
    return None


def _first_int(v: object, default: int) -> int:
    """head_count may be a per-layer array in some architectures: take the largest."""
    if (ints := _ints(v)) is not None:
        return max(ints)
    return int(v) if _is_int(v) else default
