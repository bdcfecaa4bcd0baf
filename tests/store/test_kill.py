"""kill -9 at random moments while a chat is being written: nothing acknowledged is ever lost.

A real child process drives the Chat API the way a session does (user messages, streamed
replies through the partial sidecar, edits and swipes of old messages, metadata changes) and
prints an acknowledgement after each call returns. The parent kills it with SIGKILL after a
random delay, 50 times in a row on the same chat, and after every kill checks that the chat
opens, every line of the file parses, and every acknowledged message and edit is there. At most
the one operation in flight at the kill may or may not have landed, whole.

Kills rarely land inside a write() of a normal-sized line, so a second test appends 12 MB lines
until a kill really tears one, and checks that opening the chat sets it aside and repairs the file.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from tavern.store import Chat, ChatStore

from .conftest import bot

ROOT = Path(__file__).resolve().parents[2]
KILLS = 50

CHILD = r"""
import random, sys
from pathlib import Path
from tavern.store import ChatMessage, ChatStore

root, name, next_id, seed = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
rng = random.Random(seed)
chat = ChatStore(root).open("Kestrel", name)
chat.partial_interval = 0
print("ready", flush=True)

def filler():
    return "x" * rng.choice([10, 10, 200, 200, 2000, 20000, 150000])

while True:
    op = rng.random()
    if op < 0.4:
        chat.append(ChatMessage("Captain", True, f"m{next_id} {filler()}", extra={"tid": next_id, "v": 0}))
        print("A", next_id, flush=True)
        next_id += 1
    elif op < 0.75:
        chat.begin_reply(ChatMessage("Nova", False, "", extra={"tid": next_id, "v": 0}))
        text = f"m{next_id}"
        for _ in range(rng.randint(1, 6)):
            text += " tok" * rng.randint(1, 400)
            chat.update_partial(text)
        chat.finish_reply()
        print("A", next_id, flush=True)
        next_id += 1
    elif op < 0.92 and len(chat) > 1:
        i = rng.randrange(1, len(chat))
        msg = chat[i]
        tid, version = msg.extra["tid"], msg.extra["v"] + 1
        text = f"m{tid} v{version} {filler()[:3000]}"
        if i == len(chat) - 1 and not msg.is_user:
            msg.add_swipe(text, {"extra": {"tid": tid, "v": version}})
        else:
            msg.mes, msg.extra["v"] = text, version
        chat.replace(i, msg)
        print("E", tid, version, flush=True)
    else:
        counter = chat.header.chat_metadata.get("counter", 0) + 1
        chat.set_metadata(counter=counter)
        print("M", counter, flush=True)
"""


def run_and_kill(script: str, args: list[object], delay: float) -> list[list[str]]:
    """Start a writer, kill -9 it `delay` seconds after it is ready; return its acks."""
    proc = subprocess.Popen(
        [sys.executable, "-c", script, *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    lines: list[str] = []
    ready = threading.Event()

    def read() -> None:
        for line in proc.stdout:
            lines.append(line)
            ready.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert ready.wait(30), proc.stderr.read() if proc.poll() is not None else "writer never ready"
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    reader.join(10)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read()
    assert lines[0] == "ready\n"
    return [line.split() for line in lines[1:] if line.endswith("\n")]


def test_kill_minus_nine_never_loses_an_acknowledged_write(tmp_path: Path) -> None:
    store = ChatStore(tmp_path / "home" / "chats")
    chat = store.create(
        "Kestrel", "Nova", "Captain", greeting=bot("m0 Welcome aboard.", name="Nova", tid=0, v=0)
    )
    name = chat.name
    order = [0]  # message ids in chat order, as acknowledged
    versions = {0: 0}  # acknowledged edit version per message id
    counter = 0
    rng = random.Random(20240915)
    seen = {"acks": 0, "torn": 0, "partials": 0, "in_flight_landed": 0}

    for kill in range(KILLS):
        args = [store.root, name, (kill + 1) * 1_000_000, rng.randrange(1 << 30)]
        acks = run_and_kill(CHILD, args, rng.uniform(0, 0.12))
        seen["acks"] += len(acks)
        for ack in acks:
            if ack[0] == "A":
                order.append(int(ack[1]))
                versions[int(ack[1])] = 0
            elif ack[0] == "E":
                versions[int(ack[1])] = int(ack[2])
            else:
                counter = int(ack[1])

        chat = Chat.open(store.root / "Kestrel" / f"{name}.jsonl")  # repairs a torn line, if any
        context = f"after kill {kill + 1} (acks {acks[-3:]}, warnings {chat.warnings})"
        ids = [m.extra["tid"] for m in chat]
        assert ids[: len(order)] == order, context
        assert len(ids) <= len(order) + 1, context
        if len(ids) > len(order):  # the append in flight landed whole: it is part of the chat now
            order.append(ids[-1])
            versions[ids[-1]] = 0
            seen["in_flight_landed"] += 1
        for msg in chat:
            tid, version = msg.extra["tid"], msg.extra["v"]
            assert versions[tid] <= version <= versions[tid] + 1, context
            assert msg.mes.startswith(f"m{tid} "), context
            if msg.swipes is not None:
                assert msg.mes == msg.swipes[msg.swipe_id], context
            versions[tid] = version
        assert counter <= chat.header.chat_metadata.get("counter", 0) <= counter + 1, context
        counter = chat.header.chat_metadata.get("counter", 0)

        data = chat.path.read_bytes()
        assert data.endswith(b"\n") and all(json.loads(line) for line in data.split(b"\n")[:-1]), context
        assert not list(chat.path.parent.glob("*.tmp")), context
        seen["torn"] += any("cut short" in w for w in chat.warnings)
        if chat.recovered_reply is not None:
            tid = chat.recovered_reply.extra["tid"]
            assert chat.recovered_reply.mes.startswith(f"m{tid} tok") and tid not in ids, context
            seen["partials"] += 1
            chat.discard_reply()

    assert seen["acks"] > KILLS  # the writer really got work done between kills
    print(f"\n{KILLS} kills: {seen}")


HUGE_CHILD = r"""
import sys
from pathlib import Path
from tavern.store import ChatMessage, ChatStore

chat = ChatStore(Path(sys.argv[1]), keep_backups=0).open("Kestrel", sys.argv[2])
huge = "y" * (12 << 20)  # writing a line this long takes milliseconds: kills land inside it
print("ready", flush=True)
for n in range(1, 6):
    chat.append(ChatMessage("Captain", True, f"m{n} {huge}", extra={"tid": n}))
    print("A", n, flush=True)
import time
time.sleep(120)  # on a fast machine all five appends finish before the kill: wait for it
"""


def test_a_line_torn_by_kill_minus_nine_is_set_aside(tmp_path: Path) -> None:
    """Kills inside the write of a 12 MB line leave a real torn line; opening repairs it."""
    store = ChatStore(tmp_path / "home" / "chats", keep_backups=0)
    rng = random.Random(7)
    torn = kills = 0
    while kills < 20 and torn < 1:
        kills += 1
        chat = store.create("Kestrel", "Nova", "Captain", greeting=bot("m0 hi", name="Nova", tid=0))
        acks = run_and_kill(HUGE_CHILD, [store.root, chat.name], rng.uniform(0.15, 0.6))
        acked = [0, *(int(ack[1]) for ack in acks)]
        raw = chat.path.read_bytes()
        # Torn, on disk: the kill landed inside a write and the last line has no newline.
        cut = raw.rfind(b"\n") + 1
        tail = raw[cut:]
        reopened = Chat.open(chat.path)
        ids = [m.extra["tid"] for m in reopened]
        context = f"after kill {kills}: acks {acks}, warnings {reopened.warnings}"
        # Every acknowledged append is there; the one in flight landed whole or not at all.
        assert ids in (acked, [*acked, len(acked)]), context
        assert all(m.mes == f"m{m.extra['tid']} " + "y" * (12 << 20) for m in reopened[1:]), context
        assert reopened.path.read_bytes().endswith(b"\n"), context
        reported = any("cut short" in w for w in reopened.warnings)
        assert reported == bool(tail), context  # a torn line is reported, and only then
        if tail:
            torn += 1
            # Repaired: the file is what it held up to the torn line, which was set aside whole.
            assert reopened.path.read_bytes() == raw[:cut], context
            assert reopened.rescued_path.read_bytes().endswith(tail + b"\n"), context
        store.delete(reopened)
    print(f"\ntorn lines repaired: {torn} in {kills} kills")
    assert torn >= 1, f"no kill in {kills} tore a line: nothing was repaired, so nothing was tested"
