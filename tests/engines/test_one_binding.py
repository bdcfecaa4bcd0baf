"""One package calls llama.cpp's raw binding: tavern/engines/lowlevel/.

Every other module talks to `llama_cpp.Llama` (the wrapper) or to lowlevel's typed functions,
so a change in the binding (a renamed function, a new struct field) is fixed in one place; and
every module of that package needs the binding, so the place stays small. The
check reads the source of every module under tavern/: the text `llama_cpp.llama_` anywhere
(code, comments, docstrings), and through the syntax tree any alias of the package reaching
`llama_*`/`ggml_*` names, `llama_cpp.llama_cpp` or `_internals`, however imported.

Not the binding, so not seen here: gpu.py loads libggml itself with ctypes.CDLL for the device
list (the binding has no `ggml_backend_dev_*` functions), and cpu_probe.py's child process
uses the `Llama` wrapper.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TAVERN = ROOT / "tavern"

ALLOWED: dict[str, str] = {
    "tavern/engines/lowlevel/": "the one package that reaches below llama_cpp.Llama into the C API",
}
"""Modules (a path ending in / : a package) that may call the raw binding, each with its reason."""


def _allowed(rel: str) -> bool:
    return any(rel.startswith(place) if place.endswith("/") else rel == place for place in ALLOWED)


def _modules(place: str) -> list[Path]:
    """The modules an ALLOWED entry covers; a package's `__init__` only describes it."""
    path = ROOT / place
    if not place.endswith("/"):
        return [path]
    return sorted(p for p in path.rglob("*.py") if p.name != "__init__.py")

_TEXT = re.compile(r"\bllama_cpp\.llama_")
_RAW_MODULES = ("llama_cpp.llama_cpp", "llama_cpp._internals")


def _raw_name(name: str) -> bool:
    return name.startswith(("llama_", "ggml_")) or name in ("llama_cpp", "_internals")


def violations(source: str) -> list[str]:
    """Where `source` uses the raw binding: 'line N: what' each."""
    found = [f"line {source.count(chr(10), 0, m.start()) + 1}: {m.group()}" for m in _TEXT.finditer(source)]
    tree = ast.parse(source)
    aliases = set()  # names bound to the llama_cpp package
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith(_RAW_MODULES):
                    found.append(f"line {node.lineno}: import {alias.name}")
                elif alias.name == "llama_cpp":
                    aliases.add(alias.asname or "llama_cpp")
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module.startswith(_RAW_MODULES):
                found.append(f"line {node.lineno}: from {node.module} import ...")
            elif node.module == "llama_cpp":
                names = [a.name for a in node.names if _raw_name(a.name)]
                found += [f"line {node.lineno}: from llama_cpp import {name}" for name in names]
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases:
            if _raw_name(node.attr):
                found.append(f"line {node.lineno}: {node.value.id}.{node.attr}")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getattr":
            args = node.args
            if len(args) >= 2 and isinstance(args[0], ast.Name) and args[0].id in aliases:
                if not isinstance(args[1], ast.Constant) or _raw_name(str(args[1].value)):
                    found.append(f"line {node.lineno}: getattr({args[0].id}, ...)")
    return sorted(set(found), key=lambda v: int(v.split(":")[0].split()[1]))


def test_only_lowlevel_calls_the_raw_binding() -> None:
    offenders = {}
    for path in sorted(TAVERN.rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if _allowed(rel):
            continue
        if found := violations(path.read_text(encoding="utf-8")):
            offenders[rel] = found
    assert not offenders, f"the raw llama_cpp binding outside tavern/engines/lowlevel/: {offenders}"


def test_the_allowed_modules_exist_and_do_use_it() -> None:
    # An exception that names a moved file, or one that no longer needs it, is stale; so is a
    # module in the allowed package that does not need the binding (it belongs outside).
    for place in ALLOWED:
        modules = _modules(place)
        assert modules, place
        for path in modules:
            assert path.is_file() and violations(path.read_text(encoding="utf-8")), path


@pytest.mark.parametrize(
    "source",
    [
        "import llama_cpp\nllama_cpp.llama_decode(ctx, batch)\n",
        "import llama_cpp as lc\nlc.llama_sampler_init_greedy()\n",
        "import llama_cpp as lc\nx = lc.llama_token_data()\n",
        "import llama_cpp\ncb = llama_cpp.ggml_abort_callback(f)\n",
        "import llama_cpp.llama_cpp\n",
        "from llama_cpp import llama_cpp as raw\n",
        "from llama_cpp.llama_cpp import llama_batch_init\n",
        "from llama_cpp import llama_get_logits_ith\n",
        "from llama_cpp import _internals\n",
        "import llama_cpp\nf = getattr(llama_cpp, 'llama_vocab_eos')\n",
        "def f():\n    '''Calls llama_cpp.llama_vocab_is_eog.'''\n",
    ],
)
def test_the_check_sees_each_way_in(source: str) -> None:
    assert violations(source)


@pytest.mark.parametrize(
    "source",
    [
        "import llama_cpp\nllm = llama_cpp.Llama(path)\n",
        "from llama_cpp import Llama\n",
        "from tavern.engines.lowlevel.model import is_eog\n",
        "import ctypes\nlib = ctypes.CDLL('libggml.so')\nlib.ggml_backend_dev_count()\n",
    ],
)
def test_the_wrapper_and_lowlevel_are_fine(source: str) -> None:
    assert violations(source) == []


# -- the pieces that moved into lowlevel -------------------------------------------------------------


def test_kv_cache_type_ids_come_from_the_ggml_table() -> None:
    llama_cpp = pytest.importorskip("llama_cpp")
    from tavern.engines.gguf_info import GGML_TYPES, ggml_type_id
    from tavern.engines.local import KV_TYPES

    for name in KV_TYPES:
        assert ggml_type_id(name) == getattr(llama_cpp, f"GGML_TYPE_{name.upper()}"), name
    # The whole table agrees with the binding wherever the binding still names the type.
    for type_id, (name, _, _) in GGML_TYPES.items():
        if hasattr(llama_cpp, f"GGML_TYPE_{name}"):
            assert getattr(llama_cpp, f"GGML_TYPE_{name}") == type_id, name


def test_several_sequences_is_restored_even_when_the_load_fails() -> None:
    pytest.importorskip("llama_cpp")
    import llama_cpp.llama_cpp as module  # this test may: it checks lowlevel's patch

    from tavern.engines.lowlevel.context import several_sequences

    original = module.llama_context_default_params
    with pytest.raises(RuntimeError), several_sequences(5):
        params = module.llama_context_default_params()
        assert (params.n_seq_max, params.kv_unified) == (5, True)
        raise RuntimeError("the load failed")
    assert module.llama_context_default_params is original
    assert original().n_seq_max == 1


def test_a_sampler_chain_closes_twice_and_frees_its_samplers() -> None:
    pytest.importorskip("llama_cpp")
    from tavern.engines.lowlevel.sampling import SamplerChain, init_dist, init_top_k
    from tavern.errors import EngineError

    chain = SamplerChain()
    chain.add("top_k", init_top_k(5))
    chain.add("dist", init_dist(1))
    with pytest.raises(EngineError, match="could not create the broken sampler"):
        chain.add("broken", None)
    chain.close()
    chain.close()
