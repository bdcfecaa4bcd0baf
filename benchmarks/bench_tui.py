"""The TUI's speed, each figure beside a baseline measured in the same run.

    .venv/bin/python benchmarks/bench_tui.py [--runs 5] [--messages 10000]

1. Cold start to the first frame in a real terminal: `tavern` in tmux at 80x24, from the
   process start until the pane shows the library ("characters"); beside it a bare Textual
   app (one Static) until its text shows. Median of --runs each, interleaved.
2. Opening a 10,000-message chat in the app (headless, 80x24): from opening the chat until
   the first frame of the chat screen showing its newest messages is handed to the driver;
   beside it a 40-message chat.
3. Streaming: a 1,500-token reply posted from a thread at 300 tokens/s in 15-token batches
   (as the generation worker sends them), into the rendered message view (actions, speech,
   Markdown, re-rendered per paragraph) beside a plain Static updated with the raw text.
   Reported: the delay from a batch being posted to the frame that shows it (median, worst).
   The same event loop serves keypresses, so this is also how long a key could wait.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

BARE_APP = """
from textual.app import App
from textual.widgets import Static
class Bare(App):
    def compose(self):
        yield Static("bare textual app is up")
Bare().run()
"""


def first_frame(command: list[str], marker: str, env: dict[str, str]) -> float:
    from e2e.tmux_driver import Tmux

    with Tmux(80, 24) as tmux:
        t0 = time.perf_counter()
        tmux.start(command, env)
        tmux.wait_for(lambda s: marker in s, timeout=60, interval=0.005)
        return time.perf_counter() - t0


def bench_cold_start(runs: int, home: Path) -> None:
    if shutil.which("tmux") is None:
        print("1. cold start: skipped (tmux is not installed)")
        return
    env = {"TAVERN_HOME": str(home), "TAVERN_GRAPHICS": "0", "PYTHONPATH": str(ROOT)}
    # Tavern's bytecode as an install leaves it (Textual's came compiled with the wheel). Where
    # PYTHONDONTWRITEBYTECODE is set, as on CI machines, every start would compile Tavern's
    # modules from source again (~40 ms) and the figure would be of a start no user has.
    import subprocess

    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "tavern")], check=True,
                   env={k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"})  # fmt: skip
    # First start seeds the home; not measured.
    first_frame([sys.executable, "-m", "tavern"], "characters", env)
    # With textual-image installed (optional: not a dependency), the start also asks the
    # terminal whether it draws pictures; a user who installed it pays for that query, so it is
    # measured too.
    import importlib.util

    probing = {**env, "TAVERN_GRAPHICS": "1"} if importlib.util.find_spec("textual_image") else None
    tavern_times, bare_times, probe_times = [], [], []
    for _ in range(runs):
        bare_times.append(first_frame([sys.executable, "-c", BARE_APP], "bare textual app", env))
        tavern_times.append(first_frame([sys.executable, "-m", "tavern"], "characters", env))
        if probing is not None:
            probe_times.append(first_frame([sys.executable, "-m", "tavern"], "characters", probing))
    probe = (
        f" (with textual-image's terminal-graphics query {statistics.median(probe_times):.2f} s)"
        if probe_times
        else " (textual-image is not installed: half-block avatars, no terminal query)"
    )
    print(
        f"1. first frame in tmux at 80x24 (median of {runs}): tavern {statistics.median(tavern_times):.2f} s{probe}"
        f" | bare Textual app {statistics.median(bare_times):.2f} s"
        f"  (tavern min {min(tavern_times):.2f}, bare min {min(bare_times):.2f}; goal 0.5 s)"
    )


def write_chat(home: Path, count: int) -> str:
    """A chat file of `count` messages written directly (as SillyTavern would leave one)."""
    from tavern.session import Tavern

    tavern = Tavern.open(home)
    key, card = tavern.cards.find("Mira")
    chat = tavern.chats.new(key, card)
    lines = chat.path.read_text(encoding="utf-8").splitlines()[:2]
    words = 'the lantern swayed as *she* spoke of "rivers" and old roads and names half remembered'
    with chat.path.open("w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
        for i in range(1, count):
            user = i % 2 == 1
            msg = {
                "name": "User" if user else "Mira",
                "is_user": user,
                "is_system": False,
                "send_date": "2025-01-01T00:00:00.000Z",
                "mes": f"{i}: " + words * (1 + i % 4),
                "extra": {},
            }
            f.write(json.dumps(msg) + "\n")
    return chat.name


async def open_chat_time(home: Path, chat_name: str) -> float:
    from tavern.session import Tavern
    from tavern.tui.app import make_app
    from tavern.tui.screens.chat import ChatScreen

    tavern = Tavern.open(home, **{"model.path": str(home / "no-model.gguf")})
    app = make_app(tavern)
    painted: list[float] = []
    display = app._display

    def spy(screen, renderable):  # the compositor hands a frame to the driver
        if isinstance(screen, ChatScreen) and renderable is not None and screen.views() and not painted:
            painted.append(time.perf_counter())
        return display(screen, renderable)

    app._display = spy  # type: ignore[method-assign]
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause(0.3)
        t0 = time.perf_counter()
        session = tavern.open_chat("Mira", chat_name=chat_name)
        app.push_screen(ChatScreen(tavern, session))
        while not painted:
            await asyncio.sleep(0.001)
        assert app.screen.views()[-1].index == len(session.chat) - 1  # the newest message
        return painted[0] - t0


def bench_open_chat(runs: int, messages: int, tmp: Path) -> None:
    big_home, small_home = tmp / "big", tmp / "small"
    big = write_chat(big_home, messages)
    small = write_chat(small_home, 40)
    big_t, small_t = [], []
    for _ in range(runs):
        big_t.append(asyncio.run(open_chat_time(big_home, big)))
        small_t.append(asyncio.run(open_chat_time(small_home, small)))
    print(
        f"2. open a {messages:,}-message chat (median of {runs}): {statistics.median(big_t) * 1000:.0f} ms"
        f" | a 40-message chat {statistics.median(small_t) * 1000:.0f} ms (goal < 300 ms)"
    )


async def stream_lag(rendered: bool, tokens: int, tps: float, per_batch: int = 15) -> tuple[float, float]:
    """Feed a reply from a thread at `tps` tokens/s in `per_batch`-token batches, as the
    generation worker does, while the screen renders each. Returns (median, worst) delay in
    ms from a batch being posted to its frame being handed to the driver: when the screen
    keeps up, every batch shows within a frame or two, and so would a keypress."""
    import threading

    from textual.app import App
    from textual.containers import VerticalScroll
    from textual.message import Message
    from textual.widgets import Static

    from tavern.tui.widgets.message import ChatMessageView

    # Roleplay prose: an action and a line of speech per sentence, a paragraph break every
    # ~60 tokens (what replies look like).
    sentence = '*She sets the lantern down and looks at the map.* "We leave at dawn, then."'.split(" ")
    pieces = [(" " + sentence[i % len(sentence)]) + ("\n\n" if i % 60 == 59 else "") for i in range(tokens)]

    class Delta(Message):
        def __init__(self, text: str, posted: float) -> None:
            super().__init__()
            self.text, self.posted = text, posted

    lags: list[float] = []
    pending: list[float] = []

    class Host(App):
        def compose(self):
            with VerticalScroll():
                yield (ChatMessageView("Mira", "", False, 1) if rendered else Static("", id="plain"))

        def on_delta(self, message: Delta) -> None:
            if rendered:
                self.query_one(ChatMessageView).append(message.text)
            else:
                self.plain += message.text
                self.query_one("#plain", Static).update(self.plain)
            pending.append(message.posted)

    app = Host()
    app.plain = ""
    display = app._display

    def spy(screen, renderable):
        if renderable is not None and pending:
            now = time.perf_counter()
            lags.extend(now - p for p in pending)
            pending.clear()
        return display(screen, renderable)

    app._display = spy  # type: ignore[method-assign]
    async with app.run_test(size=(80, 24)) as pilot:
        target = ChatMessageView if rendered else "#plain"
        while not app.query(target):  # composed (a loaded machine can take a while)
            await pilot.pause(0.05)
        await pilot.pause(0.2)

        def feed() -> None:
            step = per_batch / tps
            t_next = time.perf_counter()
            for i in range(0, tokens, per_batch):
                app.post_message(Delta("".join(pieces[i : i + per_batch]), time.perf_counter()))
                t_next += step
                time.sleep(max(0.0, t_next - time.perf_counter()))

        thread = threading.Thread(target=feed)
        thread.start()
        while thread.is_alive() or pending:
            await pilot.pause(0.01)
        thread.join()
    return statistics.median(lags) * 1000, max(lags) * 1000


def bench_stream(runs: int, tokens: int = 1500, tps: float = 300.0) -> None:
    rendered = [asyncio.run(stream_lag(True, tokens, tps)) for _ in range(runs)]
    plain = [asyncio.run(stream_lag(False, tokens, tps)) for _ in range(runs)]
    r_med = statistics.median(m for m, _ in rendered)
    r_max = statistics.median(w for _, w in rendered)
    p_med = statistics.median(m for m, _ in plain)
    p_max = statistics.median(w for _, w in plain)
    print(
        f"3. streaming a {tokens:,}-token reply at {tps:.0f} tok/s in 15-token batches (median of {runs}):"
        f" batch to frame {r_med:.0f} ms median, {r_max:.0f} ms worst"
        f" | plain Static with the raw text: {p_med:.0f} ms median, {p_max:.0f} ms worst"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--only", choices=["start", "open", "stream"])
    args = parser.parse_args()
    os.environ.setdefault("TAVERN_GRAPHICS", "0")
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        if args.only in (None, "start"):
            bench_cold_start(args.runs, tmp_path / "start-home")
        if args.only in (None, "open"):
            bench_open_chat(args.runs, args.messages, tmp_path)
        if args.only in (None, "stream"):
            bench_stream(args.runs)


if __name__ == "__main__":
    main()
