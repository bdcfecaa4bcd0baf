"""One Tavern per data home: an advisory lock on `<home>/.lock`.

The app (and the CLI) call `acquire_home_lock(home)` at start-up, before opening any chat, and
hold the returned HomeLock until exit. Two Taverns appending to the same chat file would
interleave lines and undo each other's rewrites, so a second instance is refused, or, when the
caller allows it, runs read-only (`HomeLock.read_only`; pass it on to `ChatStore(read_only=...)`).

The lock is `fcntl.flock` on an open file: the kernel drops it when the process dies, even by
kill -9, so a crash never leaves a stale lock behind. The file holds the owner's pid only to
name it in the message; it is never deleted (deleting a lock file races with the next locker).
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from types import TracebackType
from typing import Self

from tavern.errors import ChatStoreError
from tavern.store.atomic import PRIVATE_FILE, make_dirs

LOCK_NAME = ".lock"


class HomeLockedError(ChatStoreError):
    """Another Tavern holds the data home; `pid` is its process id when known."""

    def __init__(self, message: str, pid: int | None) -> None:
        super().__init__(message)
        self.pid = pid


class HomeLock:
    """The data home lock, held until `release()` or the end of a `with` block.

    `read_only` is True when another Tavern (pid `owner_pid`) holds the home and the caller
    accepted read-only access; then nothing is locked and nothing may be written.
    """

    def __init__(self, home: Path, fd: int | None, owner_pid: int | None) -> None:
        self.home = home
        self.path = home / LOCK_NAME
        self._fd = fd
        self.owner_pid = owner_pid

    @property
    def read_only(self) -> bool:
        return self._fd is None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Give the home back; safe to call twice."""
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    def __repr__(self) -> str:
        state = "held" if self.held else f"read-only, owner pid {self.owner_pid}"
        return f"HomeLock({str(self.home)!r}, {state})"


def acquire_home_lock(home: Path, read_only_ok: bool = False) -> HomeLock:
    """Lock `home` for this process, without waiting.

    If another Tavern holds it: with `read_only_ok`, return a read-only HomeLock; otherwise
    raise HomeLockedError naming the home and the other process.
    """
    home = Path(home)
    try:
        make_dirs(home)  # a home the lock creates first is 0700 too
        # Not O_TRUNC: the file names the current owner until we actually hold the lock.
        fd = os.open(home / LOCK_NAME, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), PRIVATE_FILE)
    except OSError as err:
        raise ChatStoreError(f"cannot lock the data home {home}: {err.strerror or err}") from err
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        owner = _read_pid(fd)
        os.close(fd)
        if read_only_ok:
            return HomeLock(home, None, owner)
        who = f"pid {owner}" if owner else "pid unknown"
        raise HomeLockedError(
            f"another Tavern is using {home} ({who}); close it first, or open this one read-only",
            owner,
        ) from None
    except OSError as err:
        os.close(fd)
        raise ChatStoreError(f"cannot lock the data home {home}: {err.strerror or err}") from err
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except OSError:
        pass  # the pid is informative only; a full disk must not stop Tavern from starting
    return HomeLock(home, fd, os.getpid())


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", errors="ignore").strip()
        return int(text) if text.isdigit() else None
    except OSError:
        return None
