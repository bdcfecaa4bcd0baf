"""The engine contract: what the rest of Tavern may know about an engine, and nothing more.

The session knows engines only through `tavern.engines.base.Engine` and its `Capabilities`;
the model settings that need a new load are one `EngineConfig`; loading is an explicit call.
"""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

from tavern.config import ModelSettings
from tavern.engines.base import Capabilities, Engine
from tavern.engines.config import EngineConfig, cache_plan
from tavern.engines.local import LocalEngine
from tavern.engines.remote.engine import RemoteEngine
from tavern.engines.remote.profile import Profile

TAVERN = Path(__file__).resolve().parents[2] / "tavern"


def test_every_engine_field_is_a_setting_and_is_read_from_it() -> None:
    settings = ModelSettings(n_ctx=1024, n_batch=128, side_ctx=0, bank_cells=7, rope_alpha=2.5, path="x.gguf")
    config = EngineConfig.from_settings(settings)
    for f in dataclasses.fields(EngineConfig):
        assert f.name in ModelSettings.model_fields, f"[model] has no setting for {f.name}"
        assert getattr(config, f.name) == getattr(settings, f.name)
    assert (config.n_ctx, config.n_batch, config.side_ctx, config.bank_cells) == (1024, 128, 0, 7)


def test_a_setting_of_the_engine_reloads_the_model_and_the_format_does_not(home: Path) -> None:
    from tavern.session import Tavern

    app = Tavern.open(home)
    assert not app.engine_loaded and app.engines.current is None  # opening loads nothing
    assert app.take_notices() == [] and app.engines.current is None  # nor does asking for notices
    for key, value in (("model.n_batch", 256), ("model.bank_cells", 0), ("model.rope_alpha", 2.0)):
        assert app.update_settings({key: value}) is True, key
    assert app.update_settings({"model.format": "chatml"}) is False
    assert app.update_settings({"chat.user_name": "Ann"}) is False


def test_engines_declare_what_they_can_do() -> None:
    local = LocalEngine("model.gguf", n_ctx=1024, side_ctx=0)
    assert isinstance(local, Engine) and not local.loaded  # built, not loaded
    assert local.capabilities == Capabilities(raw_prompt=True, kv_shift=True, keeps_removed_text=False,
                                              cfg=False, token_ids=True)
    assert local.background_context == 1024
    with_side = LocalEngine("model.gguf", n_ctx=1024)
    assert with_side.capabilities.cfg and with_side.capabilities.keeps_removed_text
    assert with_side.background_context == 1024

    chat = RemoteEngine(Profile("p", "openai-chat", "http://127.0.0.1:9"))
    assert isinstance(chat, Engine) and not chat.loaded
    assert not chat.capabilities.raw_prompt and not chat.capabilities.token_ids
    kobold = RemoteEngine(Profile("k", "kobold", "http://127.0.0.1:9", format="mistral"))
    assert kobold.capabilities.cfg and kobold.capabilities.raw_prompt and kobold.format_hint == "mistral"
    assert RemoteEngine(Profile("l", "llamacpp", "http://127.0.0.1:9")).capabilities.counts_joined


def test_notices_are_taken_once() -> None:
    engine = RemoteEngine(Profile("p", "ollama", "http://127.0.0.1:9"))
    engine.notices.append("ollama has no top_a: not applied")
    assert engine.take_notices() == ["ollama has no top_a: not applied"]
    assert engine.take_notices() == []


def test_models_info_reports_the_caches_of_the_settings_config() -> None:
    class Info:  # kv_cache_bytes is what cache_plan reads of a GGUF: 1 byte per cell here
        def kv_cache_bytes(self, n_ctx: int, type_k: str, type_v: str) -> int:
            return n_ctx * 2**20

    plan = cache_plan(Info(), EngineConfig(n_ctx=1024, side_ctx=-1, bank_cells=-1))  # type: ignore[arg-type]
    assert (plan["chat_cells"], plan["side_cells"], plan["bank_cells"]) == (1024, 1024, 1024)
    assert plan["kv_mib"] == 2048
    assert cache_plan(Info(), EngineConfig(n_ctx=1024, side_ctx=0))["bank_cells"] == 0  # type: ignore[arg-type]


ENGINE_NAMES = ("engine", "_engine", "current")


def _engine_probes(tree: ast.AST) -> list[int]:
    """Lines where getattr/hasattr is called on something named like an engine."""
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("getattr", "hasattr"):
            target = ast.unparse(node.args[0]) if node.args else ""
            if any(target == n or target.endswith("." + n) or target.endswith(f".{n}()") for n in ENGINE_NAMES):
                lines.append(node.lineno)
    return lines


@pytest.mark.parametrize("path", sorted(TAVERN.rglob("*.py")), ids=lambda p: str(p.relative_to(TAVERN)))
def test_no_module_probes_an_engine_for_undeclared_abilities(path: Path) -> None:
    found = _engine_probes(ast.parse(path.read_text(encoding="utf-8")))
    assert not found, f"{path.name}: getattr/hasattr on an engine at lines {found}: declare it in Capabilities"


def test_the_probe_finder_finds_a_probe() -> None:
    assert _engine_probes(ast.parse("x = getattr(app.engine, 'notices', [])\nhasattr(self._engine, 'a')")) == [1, 2]
