"""One definition of the lorebook settings, one scan: every [lore] key in settings.toml reaches
the scanner as it is (no hand copy in the session), and `tavern lore scan --text` counts the
budget with the model's tokenizer, as a real turn does (no characters-per-token guess)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tavern.config import LoreSettingsModel
from tavern.lore import LoreSettings
from tavern.session import Tavern

REPO = Path(__file__).resolve().parents[2]


def test_every_lore_setting_reaches_the_scan(tmp_path: Path) -> None:
    assert LoreSettings is LoreSettingsModel
    changed = {
        "scan_depth": 7,
        "budget_percent": 12.5,
        "budget_cap": 300,
        "recursive": False,
        "case_sensitive": True,
        "match_whole_words": False,
        "include_names": False,
        "insertion_strategy": 2,
        "min_activations": 3,
        "min_activations_depth_max": 9,
        "max_recursion_steps": 4,
        "group_scoring": True,
        "regex_timeout_ms": 5.0,
        "regex_total_ms": 50.0,
        "cache_aware": True,
        "linger": 9,
        "global_books": ["x"],
    }
    # Every field the scan has is a settings key: a new one cannot be left out of settings.toml.
    assert set(changed) == set(LoreSettingsModel.model_fields)
    home = tmp_path / "home"
    home.mkdir()
    (home / "settings.toml").write_text(
        "[lore]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in changed.items()), encoding="utf-8"
    )
    scan = Tavern.open(home).lore_settings()
    for key, value in changed.items():
        assert getattr(scan, key) == value, key
    assert scan.cache_aware_linger == 9


def lore_scan_text(home: Path, book: Path, text: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "tavern", "lore", "scan", str(book), "--text", text, "--json"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        check=False,
        env={**__import__("os").environ, "TAVERN_HOME": str(home)},
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_lore_scan_text_counts_the_budget_with_the_model_tokenizer(home: Path, tmp_path: Path) -> None:
    from tavern.engines.local import LocalEngine
    from tavern.engines.models import default_model_path

    # Digits with spaces: about two characters a token with SmolLM2's tokenizer, so ~4
    # characters a token would guess half the real cost.
    content = " ".join(str(i % 10) for i in range(400))
    engine = LocalEngine(default_model_path(), n_ctx=256)
    engine.load()
    real = engine.count_tokens(content)
    engine.unload()
    guess = len(content) // 4
    assert real > guess + 40
    cap = (real + guess) // 2  # enough by the guess, not by the real count
    book = tmp_path / "numbers.json"
    entry = {"uid": 0, "key": ["harbor"], "content": content, "comment": "numbers", "order": 100, "position": 0}
    book.write_text(json.dumps({"entries": {"0": entry}}), encoding="utf-8")
    (home / "settings.toml").write_text(f"[lore]\nbudget_cap = {cap}\n", encoding="utf-8")
    result = lore_scan_text(home, book, "Tell me about the harbor.")
    assert not result["activated"]
    assert [r["comment"] for r in result["rejected"]] == ["numbers"]
    assert "budget" in result["rejected"][0]["reason"]
    (home / "settings.toml").write_text(f"[lore]\nbudget_cap = {real + 5}\n", encoding="utf-8")
    assert [e["comment"] for e in lore_scan_text(home, book, "Tell me about the harbor.")["activated"]] == ["numbers"]
