"""Fixtures for the chat store tests: the SillyTavern chat files and a fresh chats folder."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tavern.store import ChatMessage, ChatStore

DATA = Path(__file__).resolve().parents[1] / "data" / "chats"
ST_CHATS = sorted(DATA.glob("*/*.jsonl"))


@pytest.fixture
def data_home(tmp_path: Path) -> Path:
    """A data home whose chats folder holds copies of the SillyTavern test chats."""
    home = tmp_path / "home"
    shutil.copytree(DATA, home / "chats")
    return home


@pytest.fixture
def store(tmp_path: Path) -> ChatStore:
    return ChatStore(tmp_path / "home" / "chats")


def user(text: str, name: str = "Anon") -> ChatMessage:
    return ChatMessage(name=name, is_user=True, mes=text)


def bot(text: str, name: str = "Seraphina", **extra: object) -> ChatMessage:
    return ChatMessage(name=name, is_user=False, mes=text, extra=dict(extra))


def lines_of(path: Path) -> list[bytes]:
    return [line for line in path.read_bytes().split(b"\n") if line.strip()]
