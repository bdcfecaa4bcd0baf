"""The domain knows nothing of the UI, and nothing heavy loads before it is needed.

A static import graph cannot see deferred imports, so each module is imported in a fresh
interpreter and `sys.modules` is inspected (the harlequin approach).
"""

from __future__ import annotations

import subprocess
import sys

import pytest

DOMAIN = [
    "tavern.config",
    "tavern.paths",
    "tavern.session",
    "tavern.cards",
    "tavern.cards.library",
    "tavern.lore",
    "tavern.lore.report",
    "tavern.prompt.assemble",
    "tavern.prompt.templates",
    "tavern.prompt.macros",
    "tavern.prompt.st_presets",
    "tavern.prompt.tokenizers",
    "tavern.engines.base",
    "tavern.engines.local",
    "tavern.engines.samplers",
    "tavern.engines.presets",
    "tavern.engines.gguf_info",
    "tavern.engines.models",
    "tavern.store",
    "tavern.memory.service",
    "tavern.memory.vector",
    "tavern.memory.summary",
    "tavern.memory.chunking",
]
UI = ("textual", "rich", "tavern.tui", "tavern.cli")
HEAVY = ("llama_cpp", "chromadb", "torch", "sentence_transformers", "numpy", "tiktoken")


def loaded_after_import(module: str) -> set[str]:
    code = f"import sys, {module}; print('\\n'.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return set(out.split())


@pytest.mark.parametrize("module", DOMAIN)
def test_domain_modules_import_no_ui_and_nothing_heavy(module: str) -> None:
    mods = loaded_after_import(module)
    roots = {m.split(".")[0] for m in mods}
    assert not [m for m in UI if m in mods or m in roots], f"{module} pulls in the UI"
    assert not [m for m in HEAVY if m in roots], f"{module} imports a heavy library at import time"


def test_the_cli_and_app_modules_load_without_a_model_library() -> None:
    mods = loaded_after_import("tavern.cli, tavern.tui.app")
    roots = {m.split(".")[0] for m in mods}
    assert not [m for m in HEAVY if m in roots]


FIRST_FRAME_HEAVY = ("pydantic", "jinja2", "httpx", "llama_cpp", "tiktoken", "numpy", "PIL", "tomlkit", "chromadb")


def test_the_first_frame_path_loads_no_domain_weight() -> None:
    """`tavern` draws the library from `tavern.tui.boot` before the Tavern opens: everything
    the CLI imports up to `app.run()` must leave pydantic, jinja2, httpx and the engines out."""
    code = (
        "import sys, tavern.cli, tavern.tui.app, tavern.tui.boot, tavern.paths;"
        "tavern.cli.build_parser();"
        "print('\\n'.join(sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    mods = set(out.split())
    roots = {m.split(".")[0] for m in mods}
    assert not [m for m in FIRST_FRAME_HEAVY if m in roots]
    assert "tavern.session" not in mods and "tavern.config" not in mods and "tavern.store" not in mods
