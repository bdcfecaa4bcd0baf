"""How soon the chat screen shows that a long prompt is being read, beside the time to the
first token of the same runs (before prompt progress, that was the first sign of the reply).

    .venv/bin/python benchmarks/bench_first_progress.py [--runs 3] [--tokens 2000] [--threads N]

The real app, headless at 80x24 (as bench_tui.py drives it), on the bundled Mira card and the
bundled SmolLM2: a new chat each run, a message that brings the prompt to about --tokens
tokens, Enter. Measured from Enter to the first frame handed to the terminal whose status bar
reads "reading prompt N/M", and to the first frame showing the reply's first text. The model's
caches are emptied between runs (reloaded with host-memory and disk states and the bank off),
so each run evaluates the whole prompt, as the first reply after a start does.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

READING = re.compile(r"reading prompt \d+/\d+")


def build_message(tavern, target: int) -> str:  # noqa: ANN001 - a benchmark script
    """A user message that brings Mira's first prompt to about `target` tokens."""
    session = tavern.open_chat("Mira", new=True)
    base = session.build_prompt().text
    engine = tavern.load_engine()
    sentence = "The harbor bell rang twice while the gulls argued over a crate of herring. "
    per = engine.count_tokens(sentence * 20) / 20  # as it tokenizes repeated
    n = max(1, int((target - engine.count_tokens(base)) / per))
    return sentence * n


async def one_run(pilot, seen: list, message: str, run: int) -> tuple[float, float, int, float]:  # noqa: ANN001
    """(ms to the first progress frame, ms to the first text frame, prompt tokens evaluated,
    prompt tok/s) of one reply."""
    from tavern.tui.messages import ReplyFinished
    from tavern.tui.screens.chat import ChatScreen

    app = pilot.app
    app.open_character("Mira", new=True)
    while not (isinstance(app.screen, ChatScreen) and app.screen.query("#composer")):
        await pilot.pause(0.01)
    screen = app.screen
    marks: dict[str, float] = {}
    t0: list[float] = []
    display = app._display

    def spy(scr, renderable):  # noqa: ANN001, ANN202 - the compositor hands a frame to the driver
        result = display(scr, renderable)
        if renderable is not None and t0:
            now = time.perf_counter()
            if "progress" not in marks and READING.search(str(screen.status.content)):
                marks["progress"] = now
            live = screen.live
            if "token" not in marks and live is not None and live.body.strip():
                marks["token"] = now
        return result

    app._display = spy
    seen.clear()
    finished = [m for m in seen if isinstance(m, ReplyFinished)]  # filled as the app's messages arrive
    screen.composer.value = f"Run {run}. {message}"
    screen.composer.focus()
    await pilot.pause(0.1)
    t0.append(time.perf_counter())
    await pilot.press("enter")
    while not finished or screen.generating:
        await pilot.pause(0.01)
        finished = [m for m in seen if isinstance(m, ReplyFinished)]
    await pilot.pause(0.1)
    app._display = display
    stats = finished[0].stats
    if "progress" not in marks or "token" not in marks:
        raise SystemExit(f"run {run}: no progress or no reply was shown ({marks}, error {finished[0].error})")
    return (marks["progress"] - t0[0]) * 1000, (marks["token"] - t0[0]) * 1000, stats.evaluated_tokens, stats.prompt_tps


async def bench(runs: int, tokens: int, threads: int) -> None:
    from tavern.session import Tavern
    from tavern.tui.app import make_app

    overrides: dict[str, object] = {
        "model.n_ctx": max(4096, tokens + 512), "generation.max_tokens": 8, "generation.seed": 1,
        "model.cache_ram_mib": 0, "model.bank_cells": 0, "memory.enabled": False,
    }
    from tavern.config import ModelSettings

    if "cache_disk_mib" in ModelSettings.model_fields:  # saved states on disk, where there are any
        overrides["model.cache_disk_mib"] = 0
    if threads:
        overrides["model.n_threads"] = threads
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["TAVERN_CACHE"] = str(Path(tmp) / "cache")  # not the user's own cache
        tavern = Tavern.open(Path(tmp) / "home", **overrides)
        message = build_message(tavern, tokens)
        app = make_app(tavern)
        results = []
        seen: list[object] = []
        async with app.run_test(size=(80, 24), message_hook=seen.append) as pilot:
            while "loading" in app.engine_status:
                await pilot.pause(0.05)
            for run in range(runs):
                engine = tavern.load_engine()
                engine.unload()  # an empty cache: the whole prompt is evaluated
                engine.load()
                results.append(await one_run(pilot, seen, message, run))
                app.pop_screen()
                await pilot.pause(0.1)
    progress = [r[0] for r in results]
    first = [r[1] for r in results]
    evaluated = statistics.median(r[2] for r in results)
    tps = statistics.median(r[3] for r in results)
    print(
        f"Enter to the first prompt progress on screen ('reading prompt N/M'), {evaluated:,.0f}-token prompt "
        f"(median of {runs}): {statistics.median(progress):.0f} ms (runs: {', '.join(f'{p:.0f}' for p in progress)})"
        f" | Enter to the first token on screen, same runs: {statistics.median(first) / 1000:.2f} s"
        f" (runs: {', '.join(f'{f / 1000:.2f}' for f in first)}); prompt read at {tps:.0f} tok/s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=0, help="llama.cpp threads (0: every core)")
    args = parser.parse_args()
    os.environ.setdefault("TAVERN_GRAPHICS", "0")
    asyncio.run(bench(args.runs, args.tokens, args.threads))


if __name__ == "__main__":
    main()
