"""kill -9 the real headless chat at random moments while it streams: nothing saved is ever lost.

Each round starts `tavern chat Mira --json` with messages on stdin and SIGKILLs it after a
random delay (during model load, prompt evaluation, streaming or the write of a reply). Then
the chat file must parse, and hold every turn the process had reported as finished, in order.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from tavern.store import ChatStore

ROUNDS = 50


def test_kill_during_streaming_never_loses_or_corrupts_a_saved_message(home: Path) -> None:
    rng = random.Random(20261125)
    env = {**os.environ, "TAVERN_HOME": str(home)}
    confirmed: list[tuple[str, str]] = []  # (user message, reply) of every turn reported done
    full_run = None  # seconds a whole 3-turn run takes here, measured by the first round
    for round_no in range(ROUNDS + 1):
        messages = [f"round {round_no} message {i}: tell me about the harbor" for i in range(3)]
        proc = subprocess.Popen(
            [sys.executable, "-m", "tavern", "chat", "Mira", "--json", "--max-tokens", "24", "--ctx", "1024"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
            text=True,
        )
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write("\n".join(messages) + "\n")
        proc.stdin.flush()
        if full_run is None:  # round 0 runs to the end: it calibrates the kill times
            started = time.monotonic()
            proc.stdin.close()
            proc.wait(timeout=300)
            full_run = time.monotonic() - started
            out = proc.stdout.read()
        else:
            time.sleep(rng.uniform(0.1, full_run))
            proc.send_signal(signal.SIGKILL)
            out, _ = proc.communicate(timeout=30)
        for line in out.splitlines():
            try:
                turn = json.loads(line)
            except ValueError:
                continue  # a line cut by the kill was never a confirmed turn
            confirmed.append((turn["message"], turn["reply"]))

        chat = ChatStore(home / "chats").latest("Mira")  # must parse after every kill
        assert chat is not None
        texts = [m.mes for m in chat]
        # Every confirmed turn is there, user message then reply, in order.
        pos = 0
        for user, reply in confirmed:
            pos = texts.index(user, pos)
            assert texts[pos + 1] == reply
            pos += 2
    assert len(confirmed) > 0, "some turns finished between kills"
