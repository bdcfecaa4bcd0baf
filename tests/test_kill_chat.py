"""kill -9 the real headless chat while it streams: nothing saved is ever lost, and the reply
that was being written is recovered.

Each round starts `tavern chat Mira --json` with three messages on stdin, waits until a reply
has streamed a random number of characters (its `.partial` sidecar holds them) and SIGKILLs it:
in the middle of the reply. One round in four waits a random part of a turn more, so that some
kills land while the reply is saved or the next turn starts. Kills are keyed to the streamed
text, not to a clock, so a machine slowed by other work still kills mid-reply.
A kill landed while a reply was streaming exactly when the sidecar is still there once the
process is dead (a live process removes it when the reply is saved). Then:
- the chat file parses and holds every turn the processes reported as finished, in order;
- most kills landed while streaming (the test would otherwise only test idle moments);
- every process that was not killed exited 0;
- every reply cut by a kill is in the chat afterwards (the next open recovers the sidecar).
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

ROUNDS = 12


def partial_files(home: Path) -> list[Path]:
    return list((home / "chats").rglob("*.partial"))


def streamed_text(home: Path) -> str | None:
    """The text of the reply streaming now (from its sidecar), or None when none is."""
    for path in partial_files(home):
        try:
            return json.loads(path.read_bytes())["message"]["mes"]
        except (OSError, ValueError):
            return ""  # being replaced this very moment: streaming all the same
    return None


def wait_for_streaming(home: Path, proc: subprocess.Popen, chars: int = 1, timeout: float = 300.0) -> bool:
    """True once a reply is streaming and has written at least `chars` characters; False if the
    process ended first (every reply too short, or too quick to save a draft)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if len(streamed_text(home) or "") >= chars:
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.003)
    raise AssertionError("no reply started streaming")


def start(home: Path, round_no: int) -> subprocess.Popen:
    messages = home.parent / f"messages-{round_no}.txt"
    messages.write_text("".join(f"round {round_no} message {i}: tell me about the harbor\n" for i in range(3)))
    with messages.open("rb") as stdin:
        return subprocess.Popen(
            [sys.executable, "-m", "tavern", "chat", "Mira", "--json", "--max-tokens", "24", "--ctx", "1024"],
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "TAVERN_HOME": str(home)},
            text=True,
        )


def test_kill_during_streaming_never_loses_or_corrupts_a_saved_message(home: Path) -> None:
    rng = random.Random(20261125)
    confirmed: list[tuple[str, str]] = []  # (user message, reply) of every turn reported done
    cut: list[str] = []  # the text of each reply a kill cut while streaming (from its sidecar)
    kills = streaming_kills = survivors = 0
    turn_time = None  # seconds one streamed turn takes here, measured by round 0
    for round_no in range(ROUNDS + 1):
        proc = start(home, round_no)
        if turn_time is None:  # round 0 runs to the end: it calibrates the kill times
            t0 = time.monotonic()
            proc.wait(timeout=600)
            turn_time = (time.monotonic() - t0) / 4  # about a model load and three turns
        elif wait_for_streaming(home, proc, chars=rng.randint(1, 40)):
            if round_no % 4 == 0:  # somewhere in the rest of this reply, or just after it
                time.sleep(rng.uniform(0.0, 0.25 * turn_time))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                kills += 1
        out = proc.communicate(timeout=60)[0]
        if proc.returncode == -signal.SIGKILL:
            text = streamed_text(home)
            if text is not None:  # the process died with a reply half written
                streaming_kills += 1
                if text:
                    cut.append(text)
        else:
            survivors += 1
            assert proc.returncode == 0, f"round {round_no}: a process that was not killed exited {proc.returncode}"
        for line in out.splitlines():
            try:
                turn = json.loads(line)
            except ValueError:
                continue  # a line cut by the kill was never a confirmed turn
            confirmed.append((turn["message"], turn["reply"]))

        chat = ChatStore(home / "chats", read_only=True).latest("Mira")  # must parse after every kill
        assert chat is not None
        texts = [m.mes for m in chat]
        pos = 0  # every confirmed turn is there, user message then reply, in order
        for user, reply in confirmed:
            pos = texts.index(user, pos)
            assert texts[pos + 1] == reply
            pos += 2

    print(f"{kills} kills, {streaming_kills} while streaming, {len(cut)} cut replies, {survivors} survivors")
    assert survivors >= 1 and confirmed, "round 0 ran to the end and reported its turns"
    assert kills >= ROUNDS * 3 // 4, f"only {kills} of {ROUNDS} rounds were killed"
    assert streaming_kills >= kills * 2 // 3, f"only {streaming_kills} of {kills} kills landed while a reply streamed"
    assert len(cut) >= kills // 3, f"only {len(cut)} of {kills} kills cut a reply after its first tokens"

    # The next Tavern to open the chat (as `tavern chat` or the app) recovers the cut reply.
    from tavern.session import Tavern

    session = Tavern.open(home).open_chat("Mira")
    replies = [m.mes for m in session.chat if not m.is_user]
    recovered = [text for text in cut if any(r.startswith(text) for r in replies)]
    assert recovered == cut, f"{len(cut) - len(recovered)} cut replies were lost"
    assert not partial_files(home)
