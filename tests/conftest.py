"""Shared fixtures: the real tiny model and a fresh data home per test."""

from __future__ import annotations

import os
from collections.abc import Iterator
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
    """The real CPU probe, run once per test session; each test's user cache gets its verdict
    (`home`) so that every engine load does not pay for a child process
    (tests/engines/test_cpu_probe.py checks the probe itself on empty caches)."""
    from tavern.engines.cpu_probe import CACHE_NAME, check_build

    cache_dir = tmp_path_factory.mktemp("cpu-probe")
    check_build(model_path, cache_dir=cache_dir)
    return (cache_dir / CACHE_NAME).read_text(encoding="utf-8")


@pytest.fixture(scope="session", autouse=True)
def session_user_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Module- and session-scoped fixtures (a model loaded once per file) get a user cache of
    their own too; each test then gets its own (`user_cache`)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TAVERN_CACHE", str(tmp_path_factory.mktemp("user-cache")))
        yield


@pytest.fixture(autouse=True)
def user_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test's own user cache folder (`TAVERN_CACHE`, subprocesses too): no test reads or
    writes the real one (~/.cache/tavern)."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("TAVERN_CACHE", str(cache))
    return cache


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cpu_probe_verdict: str, user_cache: Path) -> Path:
    """An empty data home, exported as TAVERN_HOME for subprocesses; the user cache holds the
    CPU probe's verdict."""
    from tavern.engines.cpu_probe import CACHE_NAME

    user_cache.mkdir(exist_ok=True)
    (user_cache / CACHE_NAME).write_text(cpu_probe_verdict, encoding="utf-8")
    h = tmp_path / "home"
    h.mkdir()
    monkeypatch.setenv("TAVERN_HOME", str(h))
    return h
