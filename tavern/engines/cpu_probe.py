"""A one-time check that the installed llama.cpp build runs on this CPU.

Some VMs report AMX in their CPU flags while the hypervisor does not enable the tile state: a
native llama.cpp build then dies with SIGILL (`tileloadd` in `ggml_backend_amx_mul_mat`) on
the first batched decode of more than a few dozen tokens. A short smoke test passes, so the
user loses the process on their first real prompt. The probe runs that decode (~100 tokens)
in a child process, so a crash kills the child, not Tavern, and caches the verdict per build
(the llama_cpp version and its shared libraries' sizes and times) in the user cache folder
(`tavern.paths.cache_root()`): it is about this machine and this build, and a read-only command
(`tavern prompt`) must leave the data home as it found it.

`python -m tavern.engines.cpu_probe [MODEL]` runs the decode in this process: exit 0 when it
worked, killed by SIGILL when the CPU lies. `.ci/run` uses it to rebuild without AMX.
"""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tavern.errors import EngineError

PROBE_TOKENS = 100
CACHE_NAME = "cpu-probe.json"
NO_AMX_FLAGS = "-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"


def rebuild_command() -> str:
    """The exact command that rebuilds the installed llama-cpp-python without AMX (pinned to
    the installed version, and past pip's wheel cache, which ignores compiler flags)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        spec = f"llama-cpp-python=={version('llama-cpp-python')}"
    except PackageNotFoundError:
        spec = "llama-cpp-python"
    return (
        f'CFLAGS="{NO_AMX_FLAGS}" CXXFLAGS="{NO_AMX_FLAGS}" '
        f"{sys.executable} -m pip install --no-cache-dir --force-reinstall --no-deps {spec}"
    )


class CPUProbeError(EngineError):
    title = "CPU"


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    build: str
    detail: str = ""  # why it failed: a signal name or the child's last line
    cached: bool = False


def build_id() -> str:
    """Identifies the installed llama.cpp build without importing (loading) it: a rebuild
    changes the libraries' sizes or times, and so invalidates the cached verdict."""
    import importlib.util

    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or not spec.submodule_search_locations:
        return "none"
    pkg = Path(next(iter(spec.submodule_search_locations)))
    h = hashlib.sha256()
    for lib in sorted(pkg.glob("lib/*")) + sorted(pkg.glob("*.so*")):
        try:
            st = lib.stat()
        except OSError:
            continue
        h.update(f"{lib.name}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def _default_command(model: Path) -> list[str]:
    return [sys.executable, "-m", "tavern.engines.cpu_probe", str(model)]


def run_probe(model: Path, command: Sequence[str] | None = None, timeout: float = 300) -> ProbeResult:
    """Run the probe child; `command` replaces it (tests inject a child that dies of SIGILL)."""
    cmd = list(command) if command is not None else _default_command(model)
    build = build_id()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        # A slow machine is not a broken one: do not block the user on it.
        return ProbeResult(True, build, "probe timed out")
    if proc.returncode == 0:
        return ProbeResult(True, build)
    if proc.returncode < 0:
        try:
            name = signal.Signals(-proc.returncode).name
        except ValueError:
            name = f"signal {-proc.returncode}"
        return ProbeResult(False, build, name)
    last = (proc.stderr or proc.stdout or "").strip().splitlines()
    return ProbeResult(False, build, last[-1] if last else f"exit status {proc.returncode}")


def _read_cache(path: Path, build: str) -> ProbeResult | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("build") != build:
        return None
    return ProbeResult(bool(data.get("ok")), build, str(data.get("detail", "")), cached=True)


def _write_cache(path: Path, result: ProbeResult) -> None:
    from tavern.store.atomic import atomic_write_text, make_dirs

    payload = {"build": result.build, "ok": result.ok, "detail": result.detail}
    try:
        make_dirs(path.parent)  # a first run: no cache folder yet
        atomic_write_text(path, json.dumps(payload) + "\n")
    except OSError:
        pass  # no cache: the probe runs again next start, which costs time, not data


def check_build(
    model: Path, command: Sequence[str] | None = None, *, cache_dir: Path | None = None
) -> ProbeResult:
    """The cached verdict for this build, else a fresh probe. Raises CPUProbeError when the
    build crashes on this CPU, naming the cause and the command that fixes it. The verdict is
    kept in `cache_dir` (default: the user cache folder, never a data home)."""
    if cache_dir is None:
        from tavern.paths import cache_root

        cache_dir = cache_root()
    cache = Path(cache_dir) / CACHE_NAME
    build = build_id()
    result = _read_cache(cache, build)
    if result is None:
        result = run_probe(model, command)
        # Only a verdict that names a crash or a success is worth keeping; a probe that could
        # not load the model (a bad file) says nothing about the CPU.
        if result.ok or result.detail.startswith("SIG"):
            _write_cache(cache, result)
    if not result.ok and result.detail.startswith("SIG"):
        raise CPUProbeError(crash_message(result.detail))
    return result


def crash_message(detail: str) -> str:
    cause = (
        "the CPU reports AMX but does not run it (usual on VMs)"
        if detail == "SIGILL"
        else "the llama.cpp build crashes on this CPU"
    )
    return (
        f"llama.cpp died with {detail} on a 100-token test prompt: {cause}; "
        f"rebuild it without AMX: {rebuild_command()}"
    )


def _decode_in_process(model: Path) -> None:
    """The child's work: load the model and evaluate ~100 tokens in one batch, the path
    (`ggml_backend_amx_mul_mat`) that a one-token prompt never takes."""
    from llama_cpp import Llama

    from tavern.engines.lowlevel.model import silence_llama_logs

    silence_llama_logs()
    llm = Llama(str(model), n_ctx=256, n_batch=128, n_gpu_layers=0, verbose=False)
    text = " ".join(f"word{i}" for i in range(PROBE_TOKENS))
    tokens = llm.tokenize(text.encode())[:PROBE_TOKENS]
    llm.eval(tokens)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args:
        model = Path(args[0])
    else:
        from tavern.engines.models import default_model_path

        model = default_model_path()
    _decode_in_process(model)
    print(f"llama.cpp build {build_id()} ran a {PROBE_TOKENS}-token batch on this CPU")
    return 0


if __name__ == "__main__":
    sys.exit(main())
