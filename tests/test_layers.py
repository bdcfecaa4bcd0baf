"""The layer rules in pyproject.toml hold, and would stop a change that breaks them.

CI runs `lint-imports` before the tests; these tests run it too, on the tree as it is and on a
copy with one upward import added, so a contract that silently checks nothing is caught.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")
pytestmark = pytest.mark.skipif(not LINT.exists(), reason="import-linter is not installed")


def _lint(tree: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run(
        [str(LINT), "--config", str(tree / "pyproject.toml"), "--no-cache"],
        cwd=tree, env=env, capture_output=True, text=True, timeout=300,
    )


def _copy(tmp_path: Path) -> Path:
    tree = tmp_path / "tree"
    shutil.copytree(ROOT / "tavern", tree / "tavern", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tree / "pyproject.toml")
    return tree


def test_the_tree_keeps_every_contract() -> None:
    result = _lint(ROOT)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "BROKEN" not in result.stdout


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        ("store/atomic.py", "import tavern.tui.app", "The domain knows nothing of the terminal UI"),
        ("engines/base.py", "import tavern.session", "Dependencies point down"),
        ("prompt/assemble.py", "from textual.widgets import Static", "The domain knows nothing of the terminal UI"),
    ],
)
def test_an_upward_import_breaks_the_build(tmp_path: Path, module: str, line: str, contract: str) -> None:
    tree = _copy(tmp_path)
    target = tree / "tavern" / module
    target.write_text(target.read_text(encoding="utf-8") + f"\n\ndef _late() -> None:\n    {line}\n",
                      encoding="utf-8")
    result = _lint(tree)
    assert result.returncode != 0
    assert contract in result.stdout and "BROKEN" in result.stdout


def test_a_module_outside_every_layer_breaks_the_build(tmp_path: Path) -> None:
    tree = _copy(tmp_path)
    (tree / "tavern" / "stray.py").write_text('"""Placed in no layer."""\n', encoding="utf-8")
    result = _lint(tree)
    assert result.returncode != 0 and "stray" in result.stdout
