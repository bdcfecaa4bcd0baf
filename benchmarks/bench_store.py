"""Chat store speed on a 10,000-message chat, beside naive baselines measured in the same run.

    .venv/bin/python benchmarks/bench_store.py [--messages 10000] [--runs 15]

1. Open the chat and read its last 40 messages (what the chat screen shows first):
   Tavern's `Chat.open(path).tail(40)` against the naive way, `json.loads` of every line
   (and, as a second baseline, building a ChatMessage for every line, as a list-of-objects
   loader would).
2. Edit one message in the middle and save it crash-safely (temp file, fsync, rename):
   `Chat.replace` (untouched lines copied as raw bytes, plus the hard-link backup) against
   re-encoding every message with `json.dumps` and writing that the same safe way.

Prints median milliseconds per operation. The file stays in the page cache (warm reads).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tavern.store import Chat, ChatMessage, ChatStore
from tavern.store.atomic import atomic_write_bytes
from tavern.store.message import encode_line

WORDS = [
    "the",
    "lantern",
    "swayed",
    "as",
    "she",
    "spoke",
    "of",
    "rivers",
    "and",
    "old",
    "roads",
    "and",
    "names",
    "half",
    "remembered",
]


def text(n_words: int, seed: int) -> str:
    return " ".join(WORDS[(seed * 7 + i * 3) % len(WORDS)] for i in range(n_words))


def build_chat(store: ChatStore, count: int) -> Chat:
    chat = store.create(
        "Seraphina", "Seraphina", "Anon", greeting=ChatMessage("Seraphina", False, text(80, 0))
    )
    lines = [chat.path.read_bytes().rstrip(b"\n")]
    for i in range(1, count):
        if i % 2:
            msg = ChatMessage(
                "Anon",
                True,
                text(40, i),
                send_date="September 15, 2024 2:03pm",
                extra={"isSmallSys": False, "token_count": 52},
            )
        else:
            extra = {
                "api": "tavern",
                "model": "SmolLM2-135M-Instruct",
                "token_count": 310,
                "gen_ms": 5400,
                "tokens_per_s": 57.4,
            }
            msg = ChatMessage(
                "Seraphina",
                False,
                text(240, i),
                send_date="September 15, 2024 2:04pm",
                extra=dict(extra),
                gen_started="2024-09-15T12:04:00.000Z",
                gen_finished="2024-09-15T12:04:05.400Z",
            )
            for s in range(i % 3):
                msg.add_swipe(
                    text(240, i + s + 1), {"send_date": "September 15, 2024 2:05pm", "extra": extra}
                )
        lines.append(encode_line(msg.to_json()))
    chat.path.write_bytes(b"\n".join(lines) + b"\n")
    return Chat.open(chat.path, backup_dir=store.backup_root / "Seraphina")


def median_ms(fn: Callable[[], object], runs: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        store = ChatStore(Path(tmp) / "home" / "chats")
        chat = build_chat(store, args.messages)
        path = chat.path
        size_mb = path.stat().st_size / 1e6
        print(f"chat: {len(chat)} messages, {size_mb:.1f} MB ({path.name})")

        def tavern_open_tail() -> list[ChatMessage]:
            return Chat.open(path, read_only=True).tail(40)

        def naive_loads() -> list[dict]:
            with open(path, "rb") as handle:
                return [json.loads(line) for line in handle if line.strip()][-40:]

        def naive_objects() -> list[ChatMessage]:
            with open(path, "rb") as handle:
                rows = [json.loads(line) for line in handle if line.strip()]
            return [ChatMessage.from_json(row) for row in rows[1:]][-40:]

        assert [m.mes for m in tavern_open_tail()] == [m.mes for m in naive_objects()]
        ours = median_ms(tavern_open_tail, args.runs)
        loads = median_ms(naive_loads, args.runs)
        objects = median_ms(naive_objects, args.runs)
        print("\nopen + tail(40)                         median ms")
        print(f"  tavern Chat.open().tail(40)            {ours:8.1f}")
        print(f"  naive json.loads of every line         {loads:8.1f}   ({loads / ours:.1f}x slower)")
        print(f"  naive ChatMessage for every line       {objects:8.1f}   ({objects / ours:.1f}x slower)")

        middle = len(chat) // 2
        edits = iter(range(10**9))

        def tavern_edit() -> None:
            msg = chat[middle]
            msg.mes = f"edited {next(edits)}"
            chat.replace(middle, msg)

        rows = [json.loads(line) for line in path.read_bytes().split(b"\n") if line.strip()]

        def naive_edit() -> None:
            rows[middle + 1]["mes"] = f"edited {next(edits)}"
            data = "\n".join(json.dumps(row, ensure_ascii=False, separators=(",", ":")) for row in rows)
            atomic_write_bytes(Path(tmp) / "naive.jsonl", (data + "\n").encode("utf-8"))

        ours_edit = median_ms(tavern_edit, args.runs)
        naive = median_ms(naive_edit, args.runs)
        print("\nedit one message in the middle, saved with fsync + rename      median ms")
        print(f"  tavern Chat.replace (raw-byte copy + backup link)             {ours_edit:8.1f}")
        print(
            f"  naive: json.dumps every message + the same atomic write       {naive:8.1f}"
            f"   ({naive / ours_edit:.1f}x slower)"
        )
        assert Chat.open(path)[middle].mes.startswith("edited")
        print(f"\n(python {sys.version.split()[0]}, {os.cpu_count()} cpus)")


if __name__ == "__main__":
    main()
