"""The domain knows nothing of the UI, and nothing heavy loads before it is needed.

A static import graph cannot see deferred imports, so each module is imported in a fresh
interpreter and `sys.modules` is inspected (the harlequin approach).
"""

from __future__ import annotations

import subprocess
import sys

FRONTS = ("tavern.tui", "tavern.cli", "tavern.cli_backends", "tavern.serve", "tavern.__main__")
"""The terminal UI and the command line; every other module of tavern/ is the domain."""


def _domain_modules() -> list[str]:
    """Every module of the tavern package outside the fronts, found on disk (a new module is
    checked the day it is added)."""
    import pkgutil

    import tavern

    found = ["tavern"]
    for info in pkgutil.walk_packages(tavern.__path__, "tavern."):
        name = info.name
        if name.startswith("tavern._bundled") or any(name == f or name.startswith(f + ".") for f in FRONTS):
            continue
        found.append(name)
    return sorted(found)


DOMAIN = _domain_modules()
UI = ("textual", "tavern.tui", "tavern.cli")
"""Not `rich`: httpx imports it for its own command line whenever it is installed (Textual brings
it), so the remote engine loads it. Tavern's own imports of rich are kept out of the domain by
the import-linter contract in pyproject.toml, which reads the source."""
HEAVY = ("llama_cpp", "chromadb", "torch", "sentence_transformers", "numpy", "tiktoken")


def loaded_after_import(module: str) -> set[str]:
    code = f"import sys, {module}; print('\\n'.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return set(out.split())


def _violations(module: str) -> tuple[list[str], list[str]]:
    mods = loaded_after_import(module)
    roots = {m.split(".")[0] for m in mods}
    return [m for m in UI if m in mods or m in roots], [m for m in HEAVY if m in roots]


def test_the_domain_list_is_the_package() -> None:
    assert len(DOMAIN) > 60 and "tavern.session" in DOMAIN and "tavern.chat.reply" in DOMAIN
    assert not [m for m in DOMAIN if m.startswith("tavern.tui")]


def test_domain_modules_import_no_ui_and_nothing_heavy() -> None:
    """All domain modules at once in one interpreter: nothing of the UI and nothing heavy is
    loaded. When that fails, each module alone names the culprit."""
    ui, heavy = _violations(", ".join(DOMAIN))
    if ui or heavy:
        culprits = {m: _violations(m) for m in DOMAIN}
        named = {m: v for m, v in culprits.items() if v[0] or v[1]}
        raise AssertionError(f"(UI, heavy) loaded at import time: {named}")


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
