"""Loops: how many replies loop with loop detection off (the baseline) and on, same run.

A fixed set of seeded chats with the bundled characters on the bundled SmolLM2-135M, greedy
and low-temperature, in which replies loop readily (built from real runs: "He was a
blacksmith, and he made swords." twenty times over). Each chat is played twice from a fresh
data home, `[loops] enabled = false` then `true`; the saved replies are judged by a measure
independent of the detector's own rules:

- a reply loops when some word 5-gram occurs 3+ times in it, one character runs 20+ times, it
  starts with the same 5 words as one of the 3 replies before it, or a third of its word
  8-grams are in one of them;
- quality: distinct-2 (unique word bigrams / bigrams, per reply, averaged) and mean length in
  words, so that "fewer loops" cannot come from empty replies.

    python benchmarks/bench_loops.py [--max-tokens 120] [--turns 4] [--verbose] [--save replies.json] [--threads 1]

`--verbose` prints each reply's verdict (which of the judge's rules it breaks) and what the loop
guard did; `--save` writes every reply with the replies before it, its verdict and the guard's
record, so that detection can be studied offline without the model.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tavern.engines.base import Finished  # noqa: E402
from tavern.loops import ngram_overlap, opening, words  # noqa: E402
from tavern.session import Tavern  # noqa: E402

# (character, temperature, seed, user messages): replies from these loop on SmolLM2-135M.
CHATS = [
    ("Mira", 0.0, 1, ["Tell me a story.", "Why?", "What happened next?", "And then?"]),
    ("Captain", 0.0, 1, ["Tell me a story.", "What happened next?", "And then?", "Why?"]),
    ("Mira", 0.0, 1, ["What do you do here?", "Tell me more.", "And then?", "Tell me more."]),
    ("Captain", 0.0, 1, ["What do you do here?", "Tell me about your crew.", "Tell me more.", "Why?"]),
    ("Mira", 0.3, 7, ["Tell me a story.", "Tell me another one.", "And then?", "Tell me more."]),
    ("Captain", 0.3, 7, ["Tell me a story.", "Tell me another one.", "What happened next?", "And then?"]),
]


def loop_reasons(reply: str, earlier: list[str]) -> list[str]:
    """Which of the judge's rules `reply` breaks (empty: it does not loop). `earlier`: the
    character's replies before it, oldest first, the greeting included."""
    reasons = []
    ws = words(reply)
    grams = Counter(tuple(ws[i : i + 5]) for i in range(len(ws) - 4))
    if grams and max(grams.values()) >= 3:
        reasons.append("5-gram x3")
    if re.search(r"(.)\1{19,}", reply):
        reasons.append("char run")
    recent = earlier[-3:]
    head = opening(reply, 5)
    if len(head) == 5 and any(opening(e, 5) == head for e in recent):
        reasons.append("same opening")
    if any(ngram_overlap(reply, e, 8) >= 1 / 3 for e in recent):
        reasons.append("8-gram overlap")
    return reasons


def loops(reply: str, earlier: list[str]) -> bool:
    return bool(loop_reasons(reply, earlier))


def distinct2(reply: str) -> float:
    ws = words(reply)
    grams = [tuple(ws[i : i + 2]) for i in range(len(ws) - 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def play(enabled: bool, max_tokens: int, turns: int, verbose: bool = False, threads: int = 0) -> dict:
    replies: list[tuple[str, list[str]]] = []
    records: list[dict] = []
    actions: Counter[str] = Counter()
    start = time.perf_counter()
    for chat_no, (character, temperature, seed, messages) in enumerate(CHATS):
        home = tempfile.mkdtemp(prefix="bench-loops-")
        app = Tavern.open(
            home,
            **{
                "model.n_ctx": 2048,
                "generation.max_tokens": max_tokens,
                "generation.temperature": temperature,
                "generation.seed": seed,
                "loops.enabled": enabled,
                "model.n_threads": threads,
            },
        )
        session = app.open_chat(character, new=True)
        earlier = [session.chat[-1].mes] if len(session.chat) else []
        for text in messages[:turns]:
            final = None
            for event in session.send(text):
                if isinstance(event, Finished):
                    final = event
            assert final is not None
            if final.stats.loop:
                actions[final.stats.loop["action"]] += 1
            reply = session.chat[-1].mes
            replies.append((reply, list(earlier)))
            verdict = loop_reasons(reply, earlier)
            guard = final.stats.loop
            records.append(
                {"chat": chat_no, "character": character, "user": text, "reply": reply,
                 "earlier": list(earlier), "judge": verdict, "guard": guard}
            )
            if verbose:
                did = guard["action"] if guard else "-"
                found = guard.get("message", "") if guard else ""
                print(
                    f"[{'on ' if enabled else 'off'}] chat {chat_no} {character:8} {text[:20]!r:23} "
                    f"{'LOOPS ' + ', '.join(verdict) if verdict else 'ok':40} guard: {did} {found}",
                    flush=True,
                )
            earlier.append(reply)
        app.engines.current.unload()
    looped = sum(loops(r, e) for r, e in replies)
    return {
        "replies": len(replies),
        "looped": looped,
        "share": looped / len(replies),
        "distinct2": statistics.mean(distinct2(r) for r, _ in replies),
        "words": statistics.mean(len(words(r)) for r, _ in replies),
        "actions": dict(actions),
        "records": records,
        "seconds": time.perf_counter() - start,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--max-tokens", type=int, default=120)
    ap.add_argument("--turns", type=int, default=4)
    ap.add_argument("--verbose", action="store_true", help="print each reply's verdict and the guard's action")
    ap.add_argument("--save", type=Path, help="write every reply, its verdict and the guard's record to this JSON file")
    ap.add_argument("--threads", type=int, default=0, help="llama.cpp threads (0: all cores; 1 on a busy machine)")
    args = ap.parse_args()
    off = play(False, args.max_tokens, args.turns, args.verbose, args.threads)
    on = play(True, args.max_tokens, args.turns, args.verbose, args.threads)
    if args.save:
        args.save.write_text(json.dumps({"off": off["records"], "on": on["records"]}, indent=1, ensure_ascii=False))
    for name, r in (("loops off (baseline)", off), ("loops on", on)):
        print(
            f"{name:22} {r['looped']:2}/{r['replies']} replies loop ({r['share']:.0%}); "
            f"distinct-2 {r['distinct2']:.3f}; {r['words']:.0f} words/reply; "
            f"actions {r['actions'] or '-'}; {r['seconds']:.0f} s"
        )
    if off["looped"]:
        print(f"looping replies: {1 - on['looped'] / off['looped']:.0%} fewer with loop detection on (goal: >= 80%)")


if __name__ == "__main__":
    main()
