"""Crash-safe file writes: whole-file replacement and durable appends.

The chat store (`chatfile.py`) is the main caller; settings or anything else that must never
leave half a file behind may use it too. Two rules make every write leave a valid file:

- A rewrite goes to a temporary file in the same folder, is fsynced, then renamed over the old
  file (rename is atomic on POSIX), and the folder is fsynced so the rename itself survives a
  power cut. A crash leaves either the old file or the new one, plus at worst a stray
  `.<name>.<random>.tmp` that readers ignore.
- An append opens the file with O_APPEND, writes the whole line in one call where the kernel
  allows it, and fsyncs before returning, so a line whose append returned is on disk. If the
  write fails half way (a full disk), the file is cut back to its old size: never a torn line.

Every function raises OSError (ENOSPC, EACCES, EROFS, EFBIG, EIO...) with the target left as it
was, and no temporary file left behind; callers turn it into a TavernError with words for the
user (`describe_os_error`).

This is the one writer: every file Tavern writes goes through it (tests/test_one_writer.py
checks the source). Permissions follow one rule, the one SillyTavern's docs advise for shared
hosts: a new file is the user's own (0600, `PRIVATE_FILE`) and a new folder too (0700,
`make_dirs`); a file that exists keeps its permissions when it is rewritten, so a rewrite never
loosens (nor silently tightens) a file. `mode=USER_FILE` gives a file the user asked for outside
the data home (an export) the usual umask permissions; `keep_mode=False` forces `mode` on an
existing file too (keys.toml is 0600 whatever it was).
"""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Iterable
from pathlib import Path

Chunk = bytes | bytearray | memoryview
StrPath = str | os.PathLike[str]

PRIVATE_FILE = 0o600
"""A new file in the data home: readable and writable by its owner only."""
PRIVATE_DIR = 0o700
"""A new folder in the data home (`make_dirs`)."""
USER_FILE = 0o666
"""What `open()` gives a new file: the umask decides (0644 usually). For exports the user places."""

_ERROR_WORDS = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "the file system is read-only",
    errno.EFBIG: "the file is too large for this file system or its size limit",
    errno.EIO: "input/output error (the disk may be failing)",
    errno.ENOENT: "the file or its folder no longer exists",
}


def describe_os_error(err: OSError) -> str:
    """A short lower-case phrase for an OSError, e.g. "no space left on device"."""
    if err.errno in _ERROR_WORDS:
        return _ERROR_WORDS[err.errno]
    return (err.strerror or str(err)).lower()


def fsync_file(fd: int) -> None:
    """fsync, or F_FULLFSYNC on macOS where plain fsync stops at the drive's cache."""
    if sys.platform == "darwin":
        import fcntl

        try:
            fcntl.fcntl(fd, fcntl.F_FULLFSYNC)
            return
        except OSError:
            pass
    os.fsync(fd)


def fsync_dir(path: Path | str) -> None:
    """Make a folder's entries (a new file, a rename) durable. Best effort where unsupported."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as err:
        # Some file systems (and all of Windows) refuse fsync on a folder; nothing to do there.
        if err.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def temp_path_for(path: Path) -> Path:
    """A fresh hidden temporary name beside `path`; see `stray_temp_files`."""
    return path.with_name(f".{path.name}.{os.urandom(4).hex()}.tmp")


def stray_temp_files(path: Path) -> list[Path]:
    """Temporary files a killed writer left beside `path`."""
    return sorted(path.parent.glob(f".{_glob_escape(path.name)}.*.tmp"))


def _glob_escape(name: str) -> str:
    return "".join(f"[{c}]" if c in "*?[]" else c for c in name)


def write_temp(
    path: Path,
    chunks: Iterable[Chunk],
    *,
    durable: bool = True,
    mode: int = PRIVATE_FILE,
    keep_mode: bool = True,
) -> Path:
    """Write `chunks` to a new temporary file beside `path` and return its name.

    The temporary file gets the permissions of `path` if it exists (and `keep_mode`), else
    `mode` (less the umask). On any error the temporary file is removed and the OSError
    re-raised.
    """
    tmp = temp_path_for(path)
    final = _existing_mode(path) if keep_mode else None
    # Created no looser than 0600 while it is written; its final mode is set once it is whole.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), mode & 0o600)
    try:
        for chunk in chunks:
            _write_all(fd, chunk)
        _set_mode(fd, final if final is not None else mode & ~_umask())
        if durable:
            fsync_file(fd)
    except BaseException:
        os.close(fd)
        _unlink_quietly(tmp)
        raise
    os.close(fd)
    return tmp


def _existing_mode(path: Path) -> int | None:
    try:
        return os.stat(path).st_mode & 0o7777
    except OSError:
        return None


def _set_mode(fd: int, mode: int) -> None:
    if not hasattr(os, "fchmod"):
        return  # Windows: no POSIX permissions to keep
    try:
        os.fchmod(fd, mode)
    except OSError as err:
        # Some file systems (FAT, some FUSE mounts) have no permissions to set; the file then has
        # what the mount gives every file, which is all that can be done.
        if err.errno not in (errno.EPERM, errno.ENOTSUP, errno.EINVAL, errno.EROFS):
            raise


_UMASK: int | None = None


def _umask() -> int:
    """The process umask, without changing it where Linux shows it in /proc (setting it to read
    it is not thread-safe); elsewhere set and restored once, and remembered."""
    global _UMASK
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    if _UMASK is None:
        _UMASK = os.umask(0o022)
        os.umask(_UMASK)
    return _UMASK


def make_dirs(path: StrPath, mode: int = PRIVATE_DIR) -> Path:
    """`mkdir -p` whose new folders get `mode` (0700: the user's own); existing ones are left
    as they are. Path.mkdir(parents=True) would give the parents the default 0755."""
    target = Path(path)
    missing = []
    here = target
    while not here.is_dir():
        missing.append(here)
        if here.parent == here:
            break
        here = here.parent
    for folder in reversed(missing):
        try:
            folder.mkdir(mode)
        except FileExistsError:
            if not folder.is_dir():
                raise
    return target


def replace_durable(tmp: Path, path: Path, *, durable: bool = True) -> None:
    """Rename `tmp` over `path` and fsync the folder; removes `tmp` if the rename fails."""
    try:
        os.replace(tmp, path)
    except BaseException:
        _unlink_quietly(tmp)
        raise
    if durable:
        fsync_dir(path.parent)


def atomic_write_chunks(
    path: StrPath,
    chunks: Iterable[Chunk],
    *,
    durable: bool = True,
    mode: int = PRIVATE_FILE,
    keep_mode: bool = True,
) -> None:
    """Replace `path` with the concatenated chunks; readers see the old or the new file only.
    `mode` and `keep_mode`: see the module's docstring."""
    target = Path(path)
    tmp = write_temp(target, chunks, durable=durable, mode=mode, keep_mode=keep_mode)
    replace_durable(tmp, target, durable=durable)


def atomic_write_bytes(
    path: StrPath, data: bytes, *, durable: bool = True, mode: int = PRIVATE_FILE, keep_mode: bool = True
) -> None:
    """Replace `path` with `data` through temp file, fsync and rename."""
    atomic_write_chunks(path, [data], durable=durable, mode=mode, keep_mode=keep_mode)


def atomic_write_text(
    path: StrPath, text: str, *, durable: bool = True, mode: int = PRIVATE_FILE, keep_mode: bool = True
) -> None:
    """Replace `path` with `text` in UTF-8 (no newline translation) through temp and rename."""
    atomic_write_bytes(path, text.encode("utf-8"), durable=durable, mode=mode, keep_mode=keep_mode)


def copy_file(source: StrPath, target: StrPath, *, durable: bool = True) -> None:
    """Copy `source` to `target` through the atomic writer (a new copy is 0600, like every new
    file; shutil.copyfile would give it the umask's 0644). Streams: a chat may be large."""
    with open(source, "rb") as src:
        atomic_write_chunks(target, iter(lambda: src.read(1 << 20), b""), durable=durable)


def create_exclusive(path: Path, data: bytes, *, mode: int = PRIVATE_FILE) -> bool:
    """Create `path` with `data` atomically unless it exists; False if the name was taken.

    The content is written and fsynced under a temporary name first and then hard-linked to
    `path` (link fails when the name exists), so no reader ever sees a half-written new file and
    two writers can never take the same name. Falls back to O_EXCL where hard links are refused.
    """
    tmp = write_temp(path, [data], mode=mode, keep_mode=False)  # a new file: never another's mode
    try:
        os.link(tmp, path)
    except FileExistsError:
        return False
    except OSError as err:
        if err.errno not in (errno.EPERM, errno.ENOTSUP, errno.EXDEV, errno.EMLINK):
            raise
        return _create_exclusive_copy(path, data, mode)
    finally:
        _unlink_quietly(tmp)
    fsync_dir(path.parent)
    return True


def _create_exclusive_copy(path: Path, data: bytes, mode: int) -> bool:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        return False
    try:
        _write_all(fd, data)
        fsync_file(fd)
    except BaseException:
        os.close(fd)
        _unlink_quietly(path)
        raise
    os.close(fd)
    fsync_dir(path.parent)
    return True


def append_bytes_durable(path: Path | str, data: bytes, *, create: bool = True) -> int:
    """Append `data` (whole lines, each ending in a newline) and fsync; return the new size.

    If the file's last byte is not a newline (SillyTavern writes no final newline), one is
    written first so the new line starts on a line of its own. If anything fails after bytes
    reached the file, the file is truncated back to its previous size before the OSError is
    re-raised, so a failed append never leaves a partial line.
    """
    flags = os.O_RDWR | os.O_APPEND | getattr(os, "O_CLOEXEC", 0) | (os.O_CREAT if create else 0)
    created = create and not os.path.exists(path)
    fd = os.open(path, flags, PRIVATE_FILE)
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            data = b"\n" + data
        try:
            _write_all(fd, data)
            fsync_file(fd)
        except BaseException:
            _truncate_back(fd, size)
            raise
        new_size = os.fstat(fd).st_size
    finally:
        os.close(fd)
    if created:
        fsync_dir(Path(path).parent)
    return new_size


def append_line_durable(path: Path | str, line: str) -> None:
    """Append one line of text (a newline is added) with O_APPEND and fsync; see above."""
    if "\n" in line.rstrip("\n"):
        raise ValueError("append_line_durable takes a single line")
    append_bytes_durable(path, line.rstrip("\n").encode("utf-8") + b"\n")


def _truncate_back(fd: int, size: int) -> None:
    try:
        if os.fstat(fd).st_size > size:
            os.ftruncate(fd, size)
            fsync_file(fd)
    except OSError:
        # Truncating never needs free space; if even that fails the disk is failing, and the
        # reader's torn-line repair is the last line of defence.
        pass


def _write_all(fd: int, chunk: Chunk) -> None:
    view = memoryview(chunk)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _unlink_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
