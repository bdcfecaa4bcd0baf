"""A second Tavern on the same data home is refused or read-only; a killed one frees it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tavern.store import HomeLockedError, acquire_home_lock

ROOT = Path(__file__).resolve().parents[2]
HOLDER = """
import sys
from pathlib import Path
from tavern.store import acquire_home_lock
lock = acquire_home_lock(Path(sys.argv[1]))
print("locked", flush=True)
sys.stdin.read()
"""


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[subprocess.Popen]:
    """Another Tavern process holding the data home."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path / "home")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.stdout.readline().strip() == "locked"
    yield proc
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def test_a_second_tavern_is_refused_with_the_owners_pid(tmp_path: Path, holder: subprocess.Popen) -> None:
    with pytest.raises(HomeLockedError) as err:
        acquire_home_lock(tmp_path / "home")
    assert err.value.pid == holder.pid
    assert str(err.value) == (
        f"another Tavern is using {tmp_path / 'home'} (pid {holder.pid}); "
        "close it first, or open this one read-only"
    )


def test_a_second_tavern_may_run_read_only(tmp_path: Path, holder: subprocess.Popen) -> None:
    lock = acquire_home_lock(tmp_path / "home", read_only_ok=True)
    assert lock.read_only and lock.owner_pid == holder.pid
    lock.release()


def test_the_home_is_free_again_once_the_owner_is_killed(tmp_path: Path, holder: subprocess.Popen) -> None:
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    with acquire_home_lock(tmp_path / "home") as lock:
        assert lock.held and not lock.read_only
        assert (tmp_path / "home" / ".lock").read_text().strip() == str(os.getpid())
    # Released: a new owner gets it.
    acquire_home_lock(tmp_path / "home").release()
