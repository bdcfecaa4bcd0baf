"""The one-time CPU probe: a llama.cpp build that dies of SIGILL (a CPU that reports AMX but
does not run it) is caught in a child process and named, once per build."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tavern.engines import cpu_probe
from tavern.engines.cpu_probe import CACHE_NAME, CPUProbeError, check_build

# A child that really dies of SIGILL, as the AMX crash does (this machine has no AMX).
SIGILL_CHILD = [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGILL)"]
FINE_CHILD = [sys.executable, "-c", "pass"]


def test_the_real_probe_passes_here_and_is_cached(tmp_path: Path, model_path: Path) -> None:
    first = check_build(model_path, cache_dir=tmp_path)
    assert first.ok and not first.cached
    saved = json.loads((tmp_path / CACHE_NAME).read_text(encoding="utf-8"))
    assert saved["ok"] is True and saved["build"] == cpu_probe.build_id()
    # The second start reads the verdict instead of running a child (a crashing child proves it).
    second = check_build(model_path, command=SIGILL_CHILD, cache_dir=tmp_path)
    assert second.ok and second.cached


def test_a_sigill_child_gives_one_clear_error_with_the_fix(tmp_path: Path, model_path: Path) -> None:
    with pytest.raises(CPUProbeError) as err:
        check_build(model_path, command=SIGILL_CHILD, cache_dir=tmp_path)
    message = str(err.value)
    assert "\n" not in message
    assert "SIGILL" in message and "AMX" in message
    assert 'CFLAGS="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"' in message
    assert "-m pip install --no-cache-dir --force-reinstall --no-deps llama-cpp-python==0." in message
    # Cached for this build: the next start says so again without running the probe...
    with pytest.raises(CPUProbeError):
        check_build(model_path, command=FINE_CHILD, cache_dir=tmp_path)


def test_a_rebuild_runs_the_probe_again(
    tmp_path: Path, model_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(CPUProbeError):
        check_build(model_path, command=SIGILL_CHILD, cache_dir=tmp_path)
    monkeypatch.setattr(cpu_probe, "build_id", lambda: "rebuilt-without-amx")
    result = check_build(model_path, command=FINE_CHILD, cache_dir=tmp_path)
    assert result.ok and not result.cached


def test_a_probe_that_fails_for_another_reason_is_not_blamed_on_the_cpu(
    tmp_path: Path, model_path: Path
) -> None:
    broken = [sys.executable, "-c", "raise SystemExit('cannot read model')"]
    result = check_build(model_path, command=broken, cache_dir=tmp_path)
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


def test_a_read_only_command_leaves_the_data_home_as_it_was(tmp_path: Path, user_cache: Path) -> None:
    """The verdict goes to the user cache folder: `tavern prompt` (which loads the model to
    count tokens) changes nothing in the data home, not even on the first run."""
    from tavern.session import Tavern

    home = tmp_path / "home"
    Tavern.open(home)  # the first start: bundled characters and lorebooks copied in

    def snapshot() -> dict[str, tuple[int, bytes]]:
        return {str(p.relative_to(home)): (p.stat().st_mtime_ns, p.read_bytes()) for p in home.rglob("*") if p.is_file()}

    before = snapshot()
    env = {**os.environ, "TAVERN_HOME": str(home)}  # TAVERN_CACHE: this test's own (conftest)
    r = subprocess.run(
        [sys.executable, "-m", "tavern", "prompt", "Mira"], capture_output=True, text=True, env=env, timeout=300
    )
    assert r.returncode == 0, r.stderr
    assert "Mira" in r.stdout
    assert snapshot() == before
    assert not (home / CACHE_NAME).exists()
    saved = json.loads((user_cache / CACHE_NAME).read_text(encoding="utf-8"))
    assert saved["ok"] is True and saved["build"] == cpu_probe.build_id()


def test_the_verdict_is_kept_in_the_user_cache_folder_by_default(model_path: Path, user_cache: Path) -> None:
    assert os.environ["TAVERN_CACHE"] == str(user_cache)  # never the real ~/.cache in tests
    check_build(model_path, command=FINE_CHILD)  # a folder that does not exist yet is made
    assert json.loads((user_cache / CACHE_NAME).read_text(encoding="utf-8"))["ok"] is True
    assert check_build(model_path, command=SIGILL_CHILD).cached
