"""Shared fixtures: the real tiny model and a fresh data home per test."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Offline, always: nothing in the suite may reach a hub or send telemetry.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")


@pytest.fixture(scope="session")
def model_path() -> Path:
    from tavern.engines.models import default_model_path

    return default_model_path()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty data home, also exported as TAVERN_HOME for subprocesses."""
    h = tmp_path / "home"
    monkeypatch.setenv("TAVERN_HOME", str(h))
    return h
