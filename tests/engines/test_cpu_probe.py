"""The one-time CPU probe: a llama.cpp build that dies of SIGILL (a CPU that reports AMX but
does not run it) is caught in a child process and named, once per build."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tavern.engines import cpu_probe
from tavern.engines.cpu_probe import CACHE_NAME, CPUProbeError, check_build

# A child that really dies of SIGILL, as the AMX crash does (this machine has no AMX).
SIGILL_CHILD = [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGILL)"]
FINE_CHILD = [sys.executable, "-c", "pass"]


def test_the_real_probe_passes_here_and_is_cached(tmp_path: Path, model_path: Path) -> None:
    first = check_build(tmp_path, model_path)
    assert first.ok and not first.cached
    saved = json.loads((tmp_path / CACHE_NAME).read_text(encoding="utf-8"))
    assert saved["ok"] is True and saved["build"] == cpu_probe.build_id()
    # The second start reads the verdict instead of running a child (a crashing child proves it).
    second = check_build(tmp_path, model_path, command=SIGILL_CHILD)
    assert second.ok and second.cached


def test_a_sigill_child_gives_one_clear_error_with_the_fix(tmp_path: Path, model_path: Path) -> None:
    with pytest.raises(CPUProbeError) as err:
        check_build(tmp_path, model_path, command=SIGILL_CHILD)
    message = str(err.value)
    assert "\n" not in message
    assert "SIGILL" in message and "AMX" in message
    assert 'CFLAGS="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"' in message
    assert "-m pip install --no-cache-dir --force-reinstall --no-deps llama-cpp-python==0." in message
    # Cached for this build: the next start says so again without running the probe...
    with pytest.raises(CPUProbeError):
        check_build(tmp_path, model_path, command=FINE_CHILD)


def test_a_rebuild_runs_the_probe_again(
    tmp_path: Path, model_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(CPUProbeError):
        check_build(tmp_path, model_path, command=SIGILL_CHILD)
    monkeypatch.setattr(cpu_probe, "build_id", lambda: "rebuilt-without-amx")
    result = check_build(tmp_path, model_path, command=FINE_CHILD)
    assert result.ok and not result.cached


def test_a_probe_that_fails_for_another_reason_is_not_blamed_on_the_cpu(
    tmp_path: Path, model_path: Path
) -> None:
    broken = [sys.executable, "-c", "raise SystemExit('cannot read model')"]
    result = check_build(tmp_path, model_path, command=broken)
    assert not result.ok and "cannot read model" in result.detail
    assert not (tmp_path / CACHE_NAME).exists()  # the next start tries again


def test_the_session_refuses_to_load_and_keeps_the_users_message(tmp_path: Path) -> None:
    from tavern.session import Tavern

    tavern = Tavern.open(tmp_path / "fresh-home")
    tavern.engines.cpu_probe_command = SIGILL_CHILD
    chat = tavern.open_chat("Mira")
    with pytest.raises(CPUProbeError, match="SIGILL"):
        list(chat.send("Hello there, a long first message"))
    reopened = Tavern.open(tmp_path / "fresh-home").open_chat("Mira")
    assert any(m.is_user and m.mes == "Hello there, a long first message" for m in reopened.chat)
