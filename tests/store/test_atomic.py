"""The crash-safe write primitives on their own."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tavern.store.atomic import (
    append_line_durable,
    atomic_write_bytes,
    atomic_write_chunks,
    atomic_write_text,
    create_exclusive,
    fsync_dir,
    stray_temp_files,
)


def test_atomic_write_replaces_keeps_permissions_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "settings.toml"
    atomic_write_text(target, "a = 1\n")
    target.chmod(0o600)
    atomic_write_text(target, "a = 2\nname = 'Сера'\n")
    assert target.read_text(encoding="utf-8") == "a = 2\nname = 'Сера'\n"
    assert target.stat().st_mode & 0o777 == 0o600
    assert stray_temp_files(target) == [] and sorted(os.listdir(tmp_path)) == ["settings.toml"]


def test_a_failed_atomic_write_leaves_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "chat.jsonl"
    atomic_write_bytes(target, b"old\n")

    def chunks() -> Iterator[bytes]:  # the writer dies half way through
        yield b"new"
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        atomic_write_chunks(target, chunks())
    assert target.read_bytes() == b"old\n" and stray_temp_files(target) == []


def test_append_line_starts_a_new_line_after_a_file_without_final_newline(tmp_path: Path) -> None:
    target = tmp_path / "st.jsonl"
    target.write_bytes(b'{"user_name":"x"}')
    append_line_durable(target, '{"mes":"a"}')
    append_line_durable(target, '{"mes":"b"}\n')
    assert target.read_bytes() == b'{"user_name":"x"}\n{"mes":"a"}\n{"mes":"b"}\n'
    with pytest.raises(ValueError):
        append_line_durable(target, "two\nlines")
    append_line_durable(tmp_path / "new.jsonl", "first")
    assert (tmp_path / "new.jsonl").read_bytes() == b"first\n"
    fsync_dir(tmp_path)


def test_create_exclusive_never_takes_an_existing_name(tmp_path: Path) -> None:
    target = tmp_path / "Seraphina - 2024-09-15@14h03m22s.jsonl"
    assert create_exclusive(target, b"one\n")
    assert not create_exclusive(target, b"two\n")
    assert target.read_bytes() == b"one\n" and stray_temp_files(target) == []
