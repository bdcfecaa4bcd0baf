"""Saved sequence states on disk: the prompt cache's second tier, which outlives the process.

A restart used to lose every KV cell: reopening a chat re-evaluated its whole prompt (100 s for
1,900 tokens on a slow CPU, where a warm turn takes seconds). llama-server keeps slots on disk
(`--slot-save-path`) and KoboldCpp has save states; here the engine writes a sequence's state
(`llama_state_seq_get_data`) to a file when it unloads or quits, and each state it saves in host
memory on the way (tavern/engines/prompt_cache.py) is written through in the background. A new
engine ranks these files beside its states in memory, by the prefix they share with the prompt.

A file is only ever used by an engine that would have produced the same cells: its header names
the model file (path, size, mtime), the context, the KV cache types, the RoPE base, flash
attention and the llama.cpp build, and ends with a digest of the tokens and the state bytes. A
file that does not match, is cut short or damaged is skipped (damage with one notice); a wrong
cache is worse than none. Files live in the user cache folder (never the data home: they are
rebuilt at will), are 0600, written by the one atomic writer, and kept within a byte budget, the
least recently used going first.

File layout: MAGIC, VERSION (u32), the header's length (u32), the header (JSON), the tokens
(int32 little-endian), the state bytes.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import itertools
import json
import os
import struct
import sys
import threading
import time
from array import array
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

if TYPE_CHECKING:  # pragma: no cover - typing only
    from tavern.engines.lowlevel.context import StateBuffer

MAGIC = b"TAVKVST\n"
VERSION = 1
SUFFIX = ".kvstate"
_PREFIX = struct.Struct("<8sII")  # magic, version, header length
_MAX_HEADER = 1 << 20
_STRAY_AGE_S = 600.0
"""A writer's temporary file older than this was left by a killed process: removed on scan."""
_ids = itertools.count(1)


@dataclass(frozen=True)
class StateKey:
    """What a saved state's cells depend on besides its tokens: another value of any of these
    would have given other cells, or cells llama.cpp cannot take."""

    model: str
    model_size: int
    model_mtime_ns: int
    n_ctx: int
    type_k: str
    type_v: str
    flash_attn: bool
    rope_freq_base: float
    build: str

    @classmethod
    def for_engine(
        cls, model: Path, *, n_ctx: int, type_k: str, type_v: str, flash_attn: bool, rope_freq_base: float
    ) -> StateKey:
        st = model.stat()
        return cls(
            str(model.resolve()), st.st_size, st.st_mtime_ns, n_ctx, type_k, type_v, flash_attn,
            rope_freq_base, llama_build(),
        )


def llama_build() -> str:
    """The installed llama.cpp: the binding's version and its libraries' sizes and times."""
    from importlib.metadata import PackageNotFoundError, version

    from tavern.engines.cpu_probe import build_id

    try:
        release = version("llama-cpp-python")
    except PackageNotFoundError:
        release = "?"
    return f"{release}+{build_id()}"


@dataclass
class DiskState:
    """A state file whose header matched this engine's key (its bytes are read when chosen)."""

    tokens: list[int]
    path: Path
    size: int
    """Bytes of the state itself."""
    label: str


class StateDisk:
    """The state files of one folder, for one engine's key; the budget covers the whole folder
    (every model's files). Thread-safe: the background writer shares the index."""

    def __init__(self, folder: Path, budget_bytes: int, key: StateKey) -> None:
        self.folder = folder
        self.budget = max(0, budget_bytes)
        self.key = key
        self._key_json = asdict(key)
        self.notices: list[str] = []
        """One line per damaged file skipped (the engine passes them on to the user)."""
        self._index: list[DiskState] | None = None
        self._lock = threading.Lock()
        self._pending: list[tuple[list[int], StateBuffer]] = []
        self._idle = threading.Condition(self._lock)
        self._writer: threading.Thread | None = None

    # -- reading --------------------------------------------------------------------------------

    def states(self) -> list[DiskState]:
        """The files saved under this key (the folder is scanned once, then kept up to date)."""
        with self._lock:
            if self._index is None:
                self._index = self._scan()
            return list(self._index)

    def has(self, tokens: Sequence[int]) -> bool:
        """A file holds exactly these tokens (saving them again would change nothing)."""
        wanted = list(tokens)
        return any(s.tokens == wanted for s in self.states())

    def _scan(self) -> list[DiskState]:
        found: list[DiskState] = []
        try:
            entries = list(os.scandir(self.folder))
        except OSError:
            return found
        now = time.time()
        for entry in entries:
            if entry.name.endswith(".tmp") and entry.name.startswith("."):
                _remove_if_older(Path(entry.path), now - _STRAY_AGE_S)
            elif entry.name.endswith(SUFFIX):
                state = self._read_head(Path(entry.path))
                if state is not None:
                    found.append(state)
        return found

    def _read_head(self, path: Path) -> DiskState | None:
        """The file's tokens if its header is whole and names this key; None otherwise."""
        try:
            with open(path, "rb") as f:
                head = _read_header(f)
                if head is None:
                    return None
                header, offset = head
                if header.get("key") != self._key_json:
                    return None  # another model, context or build: not ours, not damaged
                n_tokens, size = header.get("n_tokens"), header.get("state_bytes")
                if not isinstance(n_tokens, int) or not isinstance(size, int) or n_tokens <= 0 or size <= 0:
                    return None
                if os.fstat(f.fileno()).st_size != offset + 4 * n_tokens + size:
                    return None  # cut short (or grown): its digest could not match
                tokens = array("i")
                tokens.frombytes(f.read(4 * n_tokens))
        except (OSError, ValueError):
            return None
        return DiskState(_from_le(tokens).tolist(), path, size, f"disk#{next(_ids)}")

    def read(self, state: DiskState) -> StateBuffer | None:
        """The state's bytes, checked against the file's digest; None (the file removed, and a
        notice) when it changed or is damaged."""
        buf = (ctypes.c_uint8 * state.size)()
        try:
            with open(state.path, "rb") as f:
                head = _read_header(f)
                if head is None or head[0].get("key") != self._key_json:
                    self._damaged(state)
                    return None
                header = head[0]
                raw = f.read(4 * len(state.tokens))
                got = f.readinto(memoryview(buf).cast("B"))
                extra = f.read(1)
        except OSError:
            self._forget(state)
            return None
        digest = hashlib.blake2b(raw, digest_size=16)
        digest.update(memoryview(buf).cast("B"))
        tokens = array("i")
        tokens.frombytes(raw)
        if got != state.size or extra or header.get("digest") != digest.hexdigest() or (
            _from_le(tokens).tolist() != state.tokens
        ):
            self._damaged(state)
            return None
        _touch(state.path)
        return buf

    def _damaged(self, state: DiskState) -> None:
        self.notices.append(f"a saved prompt state was damaged and is ignored: {state.path.name}")
        _unlink(state.path)
        self._forget(state)

    def _forget(self, state: DiskState) -> None:
        with self._lock:
            if self._index is not None and state in self._index:
                self._index.remove(state)

    # -- writing --------------------------------------------------------------------------------

    def write(self, tokens: Sequence[int], data: StateBuffer) -> DiskState | None:
        """Save a state now (atomically: a reader sees the old folder or the whole new file),
        then evict the least recently used files past the budget. None when it does not fit the
        budget or the write failed (a full disk costs the cache, not the chat)."""
        from tavern.store.atomic import PRIVATE_FILE, atomic_write_chunks, make_dirs

        size = len(data)
        raw = _to_le(array("i", tokens)).tobytes()
        total = _PREFIX.size + len(raw) + size + 4096
        if not tokens or not self.budget or total > self.budget:
            return None
        path = self.folder / f"{self._name(raw)}{SUFFIX}"
        if path.exists():
            _touch(path)
            return self._indexed(path, list(tokens), size)
        digest = hashlib.blake2b(raw, digest_size=16)
        view = memoryview(data).cast("B")
        digest.update(view)
        header = json.dumps(
            {"key": self._key_json, "n_tokens": len(tokens), "state_bytes": size, "digest": digest.hexdigest()}
        ).encode()
        try:
            make_dirs(self.folder)
            self._evict(keep=total)
            # Not fsynced: a file a crash cut short fails its digest and is skipped.
            atomic_write_chunks(
                path, [_PREFIX.pack(MAGIC, VERSION, len(header)), header, raw, view],
                durable=False, mode=PRIVATE_FILE,
            )
        except OSError:
            return None
        return self._indexed(path, list(tokens), size)

    def _indexed(self, path: Path, tokens: list[int], size: int) -> DiskState:
        with self._lock:
            if self._index is None:
                self._index = self._scan()
            for known in self._index:
                if known.path == path:
                    return known
            state = DiskState(tokens, path, size, f"disk#{next(_ids)}")
            self._index.append(state)
            return state

    def _name(self, raw: bytes) -> str:
        h = hashlib.blake2b(json.dumps(self._key_json, sort_keys=True).encode(), digest_size=16)
        h.update(raw)
        return h.hexdigest()

    def _evict(self, keep: int) -> None:
        """Remove the least recently used files (any key) until `keep` more bytes fit."""
        files: list[tuple[float, int, Path]] = []
        for entry in os.scandir(self.folder):
            if entry.name.endswith(SUFFIX):
                with contextlib.suppress(OSError):
                    st = entry.stat()
                    files.append((st.st_mtime, st.st_size, Path(entry.path)))
        used = sum(size for _, size, _ in files)
        for _, size, path in sorted(files):
            if used + keep <= self.budget:
                break
            _unlink(path)
            used -= size
            with self._lock:
                if self._index is not None:
                    self._index = [s for s in self._index if s.path != path]

    def write_later(self, tokens: Sequence[int], data: StateBuffer) -> None:
        """Queue a state for the background writer (the engine's buffers are never written to
        after a save, so the writer may read them while the engine goes on)."""
        with self._lock:
            self._pending.append((list(tokens), data))
            if self._writer is None:
                self._writer = threading.Thread(target=self._drain, name="tavern-state-writer", daemon=True)
                self._writer.start()

    def _drain(self) -> None:
        while True:
            with self._lock:
                if not self._pending:
                    self._writer = None
                    self._idle.notify_all()
                    return
                tokens, data = self._pending[0]
            try:
                self.write(tokens, data)
            finally:
                with self._lock:
                    self._pending.pop(0)

    def flush(self, timeout: float) -> bool:
        """Wait for the background writes (at most `timeout` s); False if some are left."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._writer is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
        return True


def _read_header(f: BinaryIO) -> tuple[dict[str, object], int] | None:
    """(header, offset of the tokens) of an open state file; None if it is not one of ours in
    this version, or its header is cut short or not JSON."""
    prefix = f.read(_PREFIX.size)
    if len(prefix) != _PREFIX.size:
        return None
    magic, version, n = _PREFIX.unpack(prefix)
    if magic != MAGIC or version != VERSION or n > _MAX_HEADER:
        return None
    raw = f.read(n)
    try:
        header = json.loads(raw)
    except ValueError:
        return None
    if len(raw) != n or not isinstance(header, dict):
        return None
    return header, _PREFIX.size + n


def _to_le(a: array[int]) -> array[int]:
    if a.itemsize != 4:
        raise ValueError("int32 arrays only")
    if sys.byteorder == "big":
        a.byteswap()
    return a


_from_le = _to_le  # the same swap, either way


def _touch(path: Path) -> None:
    with contextlib.suppress(OSError):
        os.utime(path)


def _unlink(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()


def _remove_if_older(path: Path, before: float) -> None:
    with contextlib.suppress(OSError):
        if path.stat().st_mtime < before:
            path.unlink()
