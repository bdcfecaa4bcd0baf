"""A full disk or an unwritable file: one clear error, the message kept, nothing on disk damaged.

The faults are real kernel errors: ENOSPC on a 256 KiB tmpfs (needs root to mount; skipped
otherwise), EROFS by remounting it read-only, EFBIG from RLIMIT_FSIZE in a subprocess (works for
any user), EACCES from file permissions (only when not root, since root ignores them).
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tavern.store import Chat, ChatStore, ChatWriteError

from .conftest import bot, user

ROOT = Path(__file__).resolve().parents[2]


def _mount(*args: str) -> bool:
    return subprocess.run(["mount", *args], check=False, capture_output=True).returncode == 0


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a tiny tmpfs needs root; the RLIMIT_FSIZE test covers this user")
    mount_point = tmp_path / "tiny"
    mount_point.mkdir()
    if not _mount("-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount_point)):
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False, capture_output=True)


def fill(folder: Path, leave: int) -> Path:
    """Fill the file system, then free `leave` bytes so the next big write fails half way."""
    filler = folder / "filler"
    with open(filler, "wb", buffering=0) as handle:
        try:
            while True:
                handle.write(b"\0" * 4096)
        except OSError as err:
            assert err.errno == errno.ENOSPC
    os.truncate(filler, filler.stat().st_size - leave)
    return filler


def temp_files(folder: Path) -> list[str]:
    return [p.name for p in folder.rglob("*.tmp")]


def test_enospc_keeps_the_message_and_the_file(tiny_fs: Path) -> None:
    store = ChatStore(tiny_fs / "home" / "chats")
    chat = store.create("Seraphina", "Seraphina", "Anon", greeting=bot("Hello."))
    chat.append(user("A short message fits."))
    filler = fill(tiny_fs, leave=8192)
    before = chat.path.read_bytes()

    long = user("word " * 10_000)  # 50 KB: the write starts, then the disk is full
    with pytest.raises(ChatWriteError) as err:
        chat.append(long)
    message = str(err.value)
    assert message == (
        f"could not save chat '{chat.name}': no space left on device; "
        "the message is kept in memory, free some space, then save again"
    )
    assert err.value.errno == errno.ENOSPC
    assert chat.path.read_bytes() == before  # the partial line was cut back off
    assert [m.mes for m in chat.pending] == [long.mes] and chat[-1].mes == long.mes

    # A rewrite fails the same way and leaves neither damage nor temp files behind.
    with pytest.raises(ChatWriteError, match="no space left on device"):
        chat.set_metadata(note_prompt="x" * 20_000)
    with pytest.raises(ChatWriteError, match="no space left on device"):
        chat.flush()
    assert chat.path.read_bytes() == before and temp_files(tiny_fs) == []
    assert Chat.open(chat.path).warnings == []

    filler.unlink()
    chat.flush()
    assert chat.pending == [] and not chat.unsaved
    again = Chat.open(chat.path)
    assert again[-1].mes == long.mes and again.header.chat_metadata["note_prompt"] == "x" * 20_000


def test_a_new_chat_on_a_full_disk_fails_cleanly(tiny_fs: Path) -> None:
    store = ChatStore(tiny_fs / "home" / "chats")
    store.create("Seraphina", "Seraphina", "Anon")
    fill(tiny_fs, leave=0)
    with pytest.raises(ChatWriteError, match="no space left on device"):
        store.create("Seraphina", "Seraphina", "Anon", greeting=bot("x" * 10_000))
    assert len(store.list_chats("Seraphina")) == 1 and temp_files(tiny_fs) == []


def test_a_damaged_line_stays_in_place_when_it_cannot_be_set_aside(tiny_fs: Path) -> None:
    store = ChatStore(tiny_fs / "home" / "chats")
    chat = store.create("Seraphina", "Seraphina", "Anon", greeting=bot("Hello."))
    for text in ("one", "two", "three"):
        chat.append(user(text))
    data = chat.path.read_bytes()
    start = data.index(b'{"name":"Anon"')
    damaged = data[:start] + b"#" * 20 + data[start + 20 :]  # same size: written in place
    filler = fill(tiny_fs, leave=0)
    chat.path.write_bytes(damaged)

    again = Chat.open(chat.path)
    texts = [m.mes for m in again]
    assert texts[0] == "Hello." and texts[2:] == ["two", "three"]
    assert again.is_unreadable(1) and "could not be set aside" in again.warnings[0]
    assert chat.path.read_bytes() == damaged

    filler.unlink()
    again.append(user("four"))
    assert chat.path.read_bytes().startswith(damaged)  # still there, still in place
    last = Chat.open(chat.path)
    assert [m.mes for m in last] == ["Hello.", "two", "three", "four"]
    assert "set aside" in last.warnings[0] and last.rescued_path.read_bytes().startswith(b"#" * 20)


def test_a_read_only_file_system(tiny_fs: Path) -> None:
    store = ChatStore(tiny_fs / "home" / "chats")
    chat = store.create("Seraphina", "Seraphina", "Anon", greeting=bot("Hello."))
    before = chat.path.read_bytes()
    assert _mount("-o", "remount,ro", str(tiny_fs))
    try:
        with pytest.raises(ChatWriteError, match="the file system is read-only; the message is kept"):
            chat.append(user("hi"))
        assert chat.path.read_bytes() == before
    finally:
        assert _mount("-o", "remount,rw", str(tiny_fs))
    chat.flush()
    assert Chat.open(chat.path)[-1].mes == "hi"


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
def test_an_unwritable_file(store: ChatStore) -> None:
    chat = store.create("Seraphina", "Seraphina", "Anon", greeting=bot("Hello."))
    before = chat.path.read_bytes()
    chat.path.chmod(0o444)
    chat.path.parent.chmod(0o555)
    try:
        with pytest.raises(ChatWriteError, match="permission denied; the message is kept"):
            chat.append(user("hi"))
        assert chat.path.read_bytes() == before
    finally:
        chat.path.parent.chmod(0o755)
        chat.path.chmod(0o644)
    chat.flush()
    assert Chat.open(chat.path)[-1].mes == "hi"


FSIZE_CHILD = r"""
import json, resource, signal, sys
from pathlib import Path
from tavern.store import ChatMessage, ChatStore, ChatWriteError

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # then the kernel answers EFBIG instead of killing us
store = ChatStore(Path(sys.argv[1]))
chat = store.create("Seraphina", "Seraphina", "Anon", greeting=ChatMessage("Seraphina", False, "Hello."))
before = chat.path.read_bytes()
_, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (len(before) + 1000, hard))
out = {}
try:
    chat.append(ChatMessage("Anon", True, "y" * 5000))
except ChatWriteError as err:
    out["append"] = str(err)
out["unchanged"] = chat.path.read_bytes() == before
out["pending"] = [len(m.mes) for m in chat.pending]
try:
    chat.set_metadata(note_prompt="z" * 5000)
except ChatWriteError as err:
    out["rewrite"] = str(err)
out["unchanged_after_rewrite"] = chat.path.read_bytes() == before
out["temps"] = [p.name for p in chat.path.parent.iterdir() if p.name.endswith(".tmp")]
resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))
chat.flush()
again = store.open("Seraphina", chat.name)
out["after"] = [m.mes[:1] for m in again]
out["note"] = len(again.header.chat_metadata["note_prompt"])
print(json.dumps(out))
"""


def test_a_file_size_limit_keeps_the_message_and_the_file(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", FSIZE_CHILD, str(tmp_path / "home" / "chats")],
        check=False,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert "could not save chat 'Seraphina - " in out["append"]
    assert "too large" in out["append"] and "the message is kept in memory" in out["append"]
    assert out["unchanged"] and out["pending"] == [5000]
    assert "too large" in out["rewrite"] and out["unchanged_after_rewrite"] and out["temps"] == []
    assert out["after"] == ["H", "y"] and out["note"] == 5000
