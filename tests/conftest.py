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


@pytest.fixture(scope="session")
def cpu_probe_verdict(tmp_path_factory: pytest.TempPathFactory, model_path: Path) -> str:
    """The real CPU probe, run once per test session; each home gets its cached verdict so
    that every engine load does not pay for a child process (tests/engines/test_cpu_probe.py
    checks the probe itself on fresh homes)."""
    from tavern.engines.cpu_probe import CACHE_NAME, check_build

    cache_dir = tmp_path_factory.mktemp("cpu-probe")
    check_build(cache_dir, model_path)
    return (cache_dir / CACHE_NAME).read_text(encoding="utf-8")


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cpu_probe_verdict: str) -> Path:
    """A data home holding only the CPU probe's verdict, also exported as TAVERN_HOME for
    subprocesses."""
    from tavern.engines.cpu_probe import CACHE_NAME

    h = tmp_path / "home"
    h.mkdir()
    (h / CACHE_NAME).write_text(cpu_probe_verdict, encoding="utf-8")
    monkeypatch.setenv("TAVERN_HOME", str(h))
    return h
