"""The first reply after a restart: what it costs with the KV states on disk, beside a warm turn
and a cold start, in the same run.

The user chats with Mira (her Saltmere lorebook attached) for `--turns` turns, then quits; the
app saves the chat's KV state to the cache folder (`[model] cache_disk_mib`). The next turn is
played three ways from the same chat, each the whole Tavern stack (session, lore, assembler,
embedded engine) on the bundled SmolLM2, greedy:

- warm: the same process and engine, never restarted (what a turn costs anyway);
- restart: a new Tavern and a new engine on a copy of the home, the state read from disk;
- cold: the same restart without the disk tier (the whole prompt evaluated again).

    python benchmarks/bench_restart.py [--turns 12] [--ctx 2048] [--threads 2]

Prints per side: the time from sending to the first token (`send`, as the user sees it), the
engine's own time to the first token, and the prompt tokens evaluated. The state file was just
written, so it is read from the OS page cache, as after quitting and starting again; after a
reboot add the disk's read time for its size (printed).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_context_shift import LORE_LINES  # noqa: E402

from tavern.engines.base import Finished, Token, TurnStats  # noqa: E402
from tavern.engines.local import LocalEngine  # noqa: E402
from tavern.engines.models import default_model_path  # noqa: E402
from tavern.engines.state_disk import SUFFIX  # noqa: E402


def open_app(home: Path, args: argparse.Namespace, states: Path | None):  # -> (Tavern, LocalEngine)
    from tavern.session import Tavern

    app = Tavern.open(
        home,
        **{
            "model.n_ctx": args.ctx,
            "generation.max_tokens": args.reply,
            "generation.preset": "Deterministic",
            "memory.enabled": False,
        },
    )
    engine = LocalEngine(default_model_path(), n_ctx=args.ctx, cache_reuse=32, n_threads=args.threads)
    engine.keep_states_in(states)
    engine.load()
    app.use_engine(engine)
    return app, engine


def timed_send(session, line: str) -> tuple[float, TurnStats]:
    """(ms from send to the first token, the turn's stats)."""
    t0 = time.perf_counter()
    first = None
    stats = None
    for ev in session.send(line):
        if isinstance(ev, Token) and first is None:
            first = time.perf_counter()
        elif isinstance(ev, Finished):
            stats = ev.stats
    assert stats is not None
    return ((first or time.perf_counter()) - t0) * 1000, stats


def restarted(home: Path, args: argparse.Namespace, states: Path | None, line: str) -> tuple[float, TurnStats]:
    app, engine = open_app(home, args, states)
    try:
        return timed_send(app.open_chat("Mira"), line)  # the latest chat, as the library opens it
    finally:
        engine.keep_states_in(None)  # this side's state is not the next side's to find
        engine.unload()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--turns", type=int, default=12, help="turns with Mira before the restart")
    ap.add_argument("--ctx", type=int, default=2048)
    ap.add_argument("--reply", type=int, default=48)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    lines = LORE_LINES["mira"]
    work = Path(tempfile.mkdtemp(prefix="tavern-bench-restart-"))
    states = work / "cache" / "kv-states"
    try:
        app, engine = open_app(work / "home", args, states)
        mira = app.open_chat("Mira", new=True)
        for t in range(args.turns):
            timed_send(mira, lines[t % len(lines)])
        engine.save_states()  # the app quits here: its live chat state to disk
        for side in ("restart", "cold"):  # the chat as the quit left it, for each restart
            shutil.copytree(work / "home", work / side)
        line = lines[args.turns % len(lines)]
        warm = timed_send(mira, line)
        engine.keep_states_in(None)
        engine.unload()
        saved = sum(p.stat().st_size for p in states.glob(f"*{SUFFIX}"))
        restart = restarted(work / "restart", args, states, line)
        cold = restarted(work / "cold", args, None, line)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(
        f"Mira, {args.turns} turns, then a restart; ctx {args.ctx}, {args.threads} threads, greedy; "
        f"state on disk {saved / 2**20:.1f} MiB"
    )
    for name, (ms, st) in (("warm (never restarted)", warm), ("restart, state from disk", restart),
                           ("cold restart (no disk)", cold)):
        source = f" (restored {st.restored_state}{' from disk' if st.restored_from_disk else ''})" if st.restored_state else ""
        print(
            f"{name:26s} first token {ms:7.0f} ms after send (engine {st.ttft_ms:7.0f} ms); "
            f"evaluated {st.evaluated_tokens:>4} of {st.prompt_tokens}{source}",
            flush=True,
        )
    print(f"restart / warm, first token after send: {restart[0] / warm[0]:.2f}x; cold / warm: {cold[0] / warm[0]:.2f}x")


if __name__ == "__main__":
    main()
