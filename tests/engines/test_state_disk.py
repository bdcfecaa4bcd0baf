"""Saved KV states on disk: a chat reopened after a restart starts from its cells. Real SmolLM2,
greedy; every folder is the test's own (never the user cache, never the data home)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tavern.engines.base import Finished, GenerationRequest, TurnStats
from tavern.engines.local import LocalEngine
from tavern.engines.reuse_plan import common_prefix
from tavern.engines.samplers import SamplerSettings
from tavern.engines.state_disk import SUFFIX

GREEDY = SamplerSettings(greedy=True)
SYSTEM = (
    "<|im_start|>system\nYou are Mira, the innkeeper of the Rusty Lantern in Saltmere. "
    + "The inn is warm and smells of bread and tar, and the fishermen sing by the fire. " * 12
    + "<|im_end|>\n"
)
FIRST = SYSTEM + "<|im_start|>user\nUser: Hello! Who are you?<|im_end|>\n<|im_start|>assistant\nMira:"
NEXT = "<|im_end|>\n<|im_start|>user\nUser: And what is the ship in the harbour?<|im_end|>\n<|im_start|>assistant\nMira:"


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Anything that asks for the user cache gets a folder of this test's."""
    monkeypatch.setenv("TAVERN_CACHE", str(tmp_path / "user-cache"))


def engine(model_path: Path, folder: Path | None, **changes: int) -> LocalEngine:
    args: dict[str, int] = {"n_ctx": 1024, "side_ctx": 0, "n_threads": 2} | changes
    e = LocalEngine(model_path, **args)  # type: ignore[arg-type]  # EngineChanges by name
    e.keep_states_in(folder)
    e.load()
    return e


def send(e: LocalEngine, prompt: str, max_tokens: int = 12) -> Finished:
    final = None
    for ev in e.generate(GenerationRequest(prompt=prompt, max_tokens=max_tokens, sampler=GREEDY)):
        if isinstance(ev, Finished):
            final = ev
    assert final is not None and final.error is None, final and final.error
    return final


@pytest.fixture()
def first_session(model_path: Path, tmp_path: Path) -> Iterator[tuple[Path, str, list[int]]]:
    """Engine A answers the first message and unloads (the app quits): its cells on disk.
    Gives the folder, the next prompt (the reply and a new message) and the cells A left."""
    folder = tmp_path / "states"
    a = engine(model_path, folder)
    reply = send(a, FIRST).text
    left = a.cached_tokens
    a.unload()
    yield folder, FIRST + reply + NEXT, left


def files(folder: Path) -> list[Path]:
    return sorted(folder.glob(f"*{SUFFIX}"))


def test_a_fresh_engine_starts_from_the_state_the_last_one_left(
    model_path: Path, first_session: tuple[Path, str, list[int]]
) -> None:
    folder, prompt, left = first_session
    assert len(files(folder)) == 1 and (files(folder)[0].stat().st_mode & 0o777) == 0o600
    b = engine(model_path, folder)
    cold = engine(model_path, None)
    try:
        warm, base = send(b, prompt), send(cold, prompt)
        tokens = b.tokenize(prompt)
        st: TurnStats = warm.stats
        assert st.restored_from_disk and st.restored_state, st
        # Only what A's cells lack is evaluated: the new message (and any seam after the reply).
        assert st.evaluated_tokens == len(tokens) - common_prefix(left, tokens), st
        assert st.evaluated_tokens < 40 < len(tokens) - 100, st
        assert base.stats.evaluated_tokens == len(tokens) and not base.stats.restored_state
        assert warm.text == base.text  # the same greedy reply as a cold engine
    finally:
        b.unload()
        cold.unload()


@pytest.mark.parametrize("other", ["n_ctx", "model", "truncated", "flipped"])
def test_a_stale_or_damaged_state_is_ignored(
    model_path: Path, first_session: tuple[Path, str, list[int]], other: str, tmp_path: Path
) -> None:
    folder, prompt, _ = first_session
    (saved,) = files(folder)
    changes: dict[str, int] = {}
    path = model_path
    if other == "n_ctx":
        changes["n_ctx"] = 2048
    elif other == "model":  # the same bytes under another name: another file for all we know
        path = tmp_path / "copy.gguf"
        path.write_bytes(model_path.read_bytes())
    elif other == "truncated":
        saved.write_bytes(saved.read_bytes()[:-1000])
    else:  # one bit of the state changed, the size kept
        data = bytearray(saved.read_bytes())
        data[-5000] ^= 0x10
        saved.write_bytes(bytes(data))
    b = engine(path, folder, **changes)
    cold = engine(path, None, **changes)
    try:
        got, base = send(b, prompt), send(cold, prompt)
        assert not got.stats.restored_state and got.stats.evaluated_tokens == got.stats.prompt_tokens
        assert got.text == base.text
        notices = b.take_notices()
        assert bool(notices) == (other == "flipped"), notices  # damage is said once; a mismatch is not damage
        assert b.take_notices() == []
    finally:
        b.unload()
        cold.unload()


def test_the_disk_budget_evicts_the_least_recently_used(tmp_path: Path) -> None:
    import ctypes
    import os

    from tavern.engines.state_disk import StateDisk, StateKey

    key = StateKey("m.gguf", 1, 1, 1024, "f16", "f16", False, 0.0, "test")
    disk = StateDisk(tmp_path / "states", budget_bytes=350_000, key=key)

    def state(fill: int) -> ctypes.Array[ctypes.c_uint8]:
        return (ctypes.c_uint8 * 100_000).from_buffer_copy(bytes([fill]) * 100_000)

    saved = [disk.write([i] * 200, state(i)) for i in range(3)]
    assert all(s is not None for s in saved)
    for n, s in enumerate(saved):  # distinct, increasing times whatever the clock's resolution
        assert s is not None
        os.utime(s.path, (1_000_000 + n, 1_000_000 + n))
    assert saved[0] is not None and disk.read(saved[0]) is not None  # used: the newest now
    disk.write([9] * 200, state(9))
    kept = {s.tokens[0] for s in StateDisk(tmp_path / "states", 350_000, key).states()}
    assert kept == {0, 2, 9}  # the one used least recently went
    assert disk.write([7] * 200, (ctypes.c_uint8 * 400_000)()) is None  # over the whole budget
    off = StateDisk(tmp_path / "off", budget_bytes=0, key=key)
    assert off.write([1] * 200, state(1)) is None and not (tmp_path / "off").exists()


def test_the_app_keeps_states_in_the_user_cache_never_in_the_data_home(
    home: Path, tmp_path: Path, model_path: Path
) -> None:
    """Through the engine host, as the app loads the model: the state goes to the cache folder
    when the engine unloads or the app closes, and the data home gets no file of it."""
    from tavern.session import Tavern

    cache = tmp_path / "user-cache"
    app = Tavern.open(home, **{"model.n_ctx": 1024, "model.n_threads": 2})
    before = {p for p in home.rglob("*") if p.is_file()}
    e = app.load_engine()
    assert isinstance(e, LocalEngine)
    send(e, FIRST)
    app.engines.close(timeout=10)
    (first,) = files(cache / "kv-states")
    send(e, FIRST + "x" + NEXT)
    app.engines.unload()  # a settings change that reloads the model
    assert len(files(cache / "kv-states")) == 2 and first.exists()
    after = {p for p in home.rglob("*") if p.is_file()}
    assert after == before and not list(home.rglob(f"*{SUFFIX}"))
