"""Fixtures for the group tests: a store in three temporary folders with a clock that stands still."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from tavern.groups.store import GroupStore

NOW = datetime(2024, 9, 15, 14, 3, 22).astimezone()


@pytest.fixture
def store(tmp_path: Path) -> GroupStore:
    return GroupStore(tmp_path / "groups", tmp_path / "group chats", tmp_path / "trash", clock=lambda: NOW)
