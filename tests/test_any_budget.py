"""`Any` in `tavern/` only where a value is truly dynamic, each use with its reason (#25).

A use of `typing.Any` switches the type checker off for everything that value touches, which is
how an upward dependency and a live bug once hid behind it. So each use must say why no real
type fits, in a comment on its line or on the comment line just above it that starts `Any:`
(`# Any: a ctypes pointer from llama_cpp, untyped`), and the whole tree stays under a budget.
"""

from __future__ import annotations

import io
import tokenize
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "tavern"
BUDGET = 60


def _uses(source: str) -> list[tuple[int, bool]]:
    """(line, has a reason) for each `Any` that is not in an import statement."""
    lines = source.splitlines()
    found: list[tuple[int, bool]] = []
    in_import = False
    depth = 0
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.NAME and tok.string in ("import", "from") and depth == 0:
            in_import = tok.line.lstrip().startswith(("import ", "from "))
        elif tok.type == tokenize.OP and tok.string in "([{":
            depth += 1
        elif tok.type == tokenize.OP and tok.string in ")]}":
            depth -= 1
        elif tok.type == tokenize.NEWLINE:
            in_import = False
        elif tok.type == tokenize.NAME and tok.string == "Any" and not in_import:
            row = tok.start[0]
            here = lines[row - 1]
            above = lines[row - 2].strip() if row >= 2 else ""
            reason = "# Any:" in here or above.startswith("# Any:")
            found.append((row, reason))
    return found


def _all_uses() -> dict[str, list[tuple[int, bool]]]:
    uses: dict[str, list[tuple[int, bool]]] = {}
    for path in sorted(ROOT.rglob("*.py")):
        found = _uses(path.read_text(encoding="utf-8"))
        if found:
            uses[str(path.relative_to(ROOT.parent))] = found
    return uses


def test_every_any_says_why() -> None:
    missing = [f"{name}:{row}" for name, found in _all_uses().items() for row, why in found if not why]
    assert not missing, "Any without a '# Any: <reason>' comment at " + ", ".join(missing)


def test_any_stays_under_the_budget() -> None:
    total = sum(len(found) for found in _all_uses().values())
    assert total <= BUDGET, f"{total} uses of Any in tavern/ (budget {BUDGET})"


def test_the_counter_sees_a_use_and_its_reason() -> None:
    # The counter itself: an import is not a use, a bare use lacks a reason, a commented one has one.
    source = (
        "from typing import Any\n"
        "x: Any = 1\n"
        "y: Any = 2  # Any: parsed JSON\n"
        "# Any: a ctypes pointer\n"
        "z: dict[str, Any] = {}\n"
    )
    assert _uses(source) == [(2, False), (3, True), (5, True)]
