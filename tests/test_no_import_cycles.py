"""The import graph of tavern/ has no cycles, imports under ``if TYPE_CHECKING:`` included (#25).

import-linter's layers leave type-only imports out (they cost nothing at run time); this test
counts them. A cycle through annotations is still two modules that cannot be understood apart:
reading either one's signatures means reading the other, and neither can move, split or be
tested on its own. Shared types go down into a module of their own (``prompt/inputs.py``,
``prompt/macro_context.py``) so that every import points one way.
"""

from __future__ import annotations

from pathlib import Path

import grimp
import pytest


def import_cycles(package: str) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iterative:
    the graph's longest chain must not meet Python's recursion limit)."""
    graph = grimp.build_graph(
        package, include_external_packages=False, exclude_type_checking_imports=False, cache_dir=None
    )
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    for root in sorted(graph.modules):
        if root in index:
            continue
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        while work:
            module, targets = work[-1]
            target = next(targets, None)
            if target is not None:
                if target not in index:
                    index[target] = low[target] = len(index)
                    stack.append(target)
                    on_stack.add(target)
                    work.append((target, iter(sorted(graph.find_modules_directly_imported_by(target)))))
                elif target in on_stack:
                    low[module] = min(low[module], index[target])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[module])
            if low[module] == index[module]:
                component: list[str] = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == module:
                        break
                if len(component) > 1:
                    cycles.append(sorted(component))
    return cycles


def test_no_module_of_tavern_imports_itself_through_others() -> None:
    assert import_cycles("tavern") == []


def test_the_check_finds_a_cycle_through_type_only_imports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A package whose two modules import each other, one of them only for an annotation.
    pkg = tmp_path / "cyclic"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from cyclic.b import B\n\nclass A:\n    b: B\n")
    (pkg / "b.py").write_text(
        "from __future__ import annotations\nfrom typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from cyclic.a import A\n\nclass B:\n    a: A | None = None\n"
    )
    (pkg / "c.py").write_text("import cyclic.a\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert import_cycles("cyclic") == [["cyclic.a", "cyclic.b"]]
