"""What llama.cpp can offload to, and loading with "as many GPU layers as fit" when free VRAM
cannot be measured.

Free VRAM comes from nvidia-smi (`detect_free_vram`); on Metal, ROCm or Vulkan builds
there is no such number, so `n_gpu_layers = -1` would otherwise mean "nothing". There the
engine offloads every layer first and, when llama.cpp refuses the load (it returns no model or
no context, which llama-cpp-python raises as ValueError), steps down: half the layers, half
again, ..., then none. `step_down` is the loop alone, over a `try_load(n_layers)` callable, so
it can be checked without a GPU.

`backend_devices` asks ggml's device registry through ctypes: llama-cpp-python does not bind
`ggml_backend_dev_*`, but the shared libraries it ships export them. Never raises: any surprise
means "no device list".
"""

from __future__ import annotations

import ctypes
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TypedDict, TypeVar

T = TypeVar("T")

MIB = 1024 * 1024

# ggml_backend_dev_type: CPU 0, GPU 1; builds since mid-2025 put IGPU at 2 and ACCEL at 3,
# older ones ACCEL at 2. Only the display depends on it; llama_supports_gpu_offload decides.
_KINDS = {0: "CPU", 1: "GPU", 2: "iGPU/accelerator", 3: "accelerator"}


@dataclass(frozen=True)
class Device:
    """One device in llama.cpp's backend registry."""

    name: str
    description: str
    kind: str
    free: int | None
    total: int | None


@dataclass(frozen=True)
class Offload:
    """What a load put on the GPU: `layers` of `total` (n_layers + 1, the output head included)."""

    requested: int
    layers: int
    total: int
    tried: tuple[int, ...]
    """Every layer count tried, in order; more than one when a load was refused."""

    @property
    def note(self) -> str:
        """The one line the user sees after a load with unknown free VRAM."""
        if self.layers == self.total:
            return f"GPU: all {self.total} layers offloaded (free VRAM unknown, so all were tried)"
        failed = ", ".join(str(n) for n in self.tried[:-1])
        if self.layers == 0:
            return f"GPU: no layers fitted (tried {failed}); running on the CPU"
        return f"GPU: {self.layers} of {self.total} layers fitted (llama.cpp refused {failed}); the rest run on the CPU"


def step_down(total: int, try_load: Callable[[int], T]) -> tuple[T, Offload]:
    """Load with every layer on the GPU, then half as many, ..., then none, until one loads.

    `try_load(n)` raises on a refused load. The last error (with 0 layers, a problem that is
    not memory) propagates.
    """
    tried: list[int] = []
    n = max(total, 0)
    while True:
        tried.append(n)
        try:
            result = try_load(n)
        except Exception:
            if n == 0:
                raise
            n //= 2
            continue
        return result, Offload(requested=total, layers=n, total=total, tried=tuple(tried))


def offload_supported() -> bool:
    """Whether this llama.cpp build has a GPU backend (a CPU-only build cannot offload)."""
    try:
        from tavern.engines.lowlevel.model import gpu_offload_supported

        return gpu_offload_supported()
    except Exception:  # no library at all: the load itself will say so
        return False


def _lib_dir() -> Path:
    import llama_cpp

    return Path(llama_cpp.__file__).parent / "lib"


def _load_ggml() -> tuple[ctypes.CDLL, ctypes.CDLL]:
    """libggml (the registry) and libggml-base (device accessors), loaded after libllama so the
    same copies are shared."""
    import llama_cpp  # noqa: F401  (loads libllama and, through it, the ggml libraries)

    lib = _lib_dir()
    reg = base = None
    for stem in ("libggml", "ggml"):
        for ext in (".so", ".dylib", ".dll"):
            if reg is None and (lib / f"{stem}{ext}").exists():
                reg = ctypes.CDLL(str(lib / f"{stem}{ext}"))
            if base is None and (lib / f"{stem}-base{ext}").exists():
                base = ctypes.CDLL(str(lib / f"{stem}-base{ext}"))
    if reg is None:
        raise OSError("no libggml next to libllama")
    return reg, base or reg


def backend_devices() -> list[Device]:
    """The devices llama.cpp sees (name, description, kind, memory); [] when it can't be asked."""
    try:
        reg, base = _load_ggml()
        reg.ggml_backend_dev_count.restype = ctypes.c_size_t
        reg.ggml_backend_dev_get.restype = ctypes.c_void_p
        reg.ggml_backend_dev_get.argtypes = [ctypes.c_size_t]
        for fn in ("ggml_backend_dev_name", "ggml_backend_dev_description"):
            getattr(base, fn).restype = ctypes.c_char_p
            getattr(base, fn).argtypes = [ctypes.c_void_p]
        base.ggml_backend_dev_type.restype = ctypes.c_int
        base.ggml_backend_dev_type.argtypes = [ctypes.c_void_p]
        size_p = ctypes.POINTER(ctypes.c_size_t)
        base.ggml_backend_dev_memory.argtypes = [ctypes.c_void_p, size_p, size_p]
        devices = []
        for i in range(reg.ggml_backend_dev_count()):
            dev = reg.ggml_backend_dev_get(i)
            free, total = ctypes.c_size_t(0), ctypes.c_size_t(0)
            base.ggml_backend_dev_memory(dev, ctypes.byref(free), ctypes.byref(total))
            kind = base.ggml_backend_dev_type(dev)
            devices.append(
                Device(
                    name=(base.ggml_backend_dev_name(dev) or b"").decode("utf-8", "replace"),
                    description=(base.ggml_backend_dev_description(dev) or b"").decode("utf-8", "replace"),
                    kind=_KINDS.get(kind, f"type {kind}"),
                    free=free.value or None,
                    total=total.value or None,
                )
            )
        return devices
    except Exception:  # an old or odd build: the list is a courtesy, never a failure
        return []


class BackendReport(TypedDict):
    """`tavern models info`'s view of llama.cpp (`backend_report`), printed as JSON as it is."""

    gpu_offload: bool
    devices: list[dict[str, object]]
    """Each `Device` as a dict."""


def backend_report() -> BackendReport:
    """`tavern models info`'s view of llama.cpp: GPU offload support and the devices it sees."""
    devices = backend_devices()
    return {
        "gpu_offload": offload_supported(),
        "devices": [asdict(d) for d in devices],
    }


def format_backend(report: BackendReport) -> list[tuple[str, str]]:
    """Rows for the human `tavern models info`."""
    devices = report["devices"]
    listed = "; ".join(f"{d['name']} ({d['kind']}: {d['description']})" for d in devices) or "unknown"
    offload = "supported" if report["gpu_offload"] else "not supported by this llama.cpp build (CPU only)"
    return [("llama.cpp sees", listed), ("GPU offload", offload)]


def detect_free_vram(timeout: float = 3.0) -> int | None:
    """Free GPU memory in bytes (summed over NVIDIA GPUs) via nvidia-smi; None when there is none.

    Never raises: a missing driver, a hung nvidia-smi or odd output all mean "no GPU".
    """
    exe = shutil.which("nvidia-smi")
    if not exe:
        return None
    try:
        out = subprocess.run(
            [exe, "--query-gpu=memory.free", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    total = 0
    found = False
    for line in out.stdout.splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            total += int(float(line)) * MIB
            found = True
        except ValueError:
            return None
    return total if found else None
