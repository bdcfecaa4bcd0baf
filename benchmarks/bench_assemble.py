"""Assembling one turn of a 10,000-message chat with a 2,000-entry lorebook at 8k context.

    python benchmarks/bench_assemble.py [--messages 10000] [--entries 2000] [--turns 20] [--memory]

Runs the real path: a data home with a real 10,000-message SillyTavern chat file, a 2,000-entry
world lorebook attached globally, `ChatSession.build_prompt` (read the chat tail, scan the lore,
substitute macros, count tokens with the GGUF's own tokenizer, fit the budget) after each new
user message. Printed beside the baseline measured in the same run: what a frontend such as
SillyTavern does each turn to fill the history, walking the messages newest first, tokenizing
each as it appears in a text-completion prompt (`Name: text` plus a newline) with the same
tokenizer, and stopping at the first one that no longer fits the history budget Tavern had that
turn. (SillyTavern's browser-side token cache can spare it re-counting; without it this is its
per-turn cost.) Goal: 30 ms or less per turn.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

from bench_lore import NOUNS, make_book, make_chat, make_names  # same folder: realistic lore data


def history_budget(prompt) -> int:
    """The tokens the history could take this turn: the budget less everything else."""
    history = next(slot.tokens for slot in prompt.slots if slot.slot == "history")
    return prompt.budget - (prompt.prompt_tokens - history)


def frontend_history_walk(messages, engine, budget: int) -> tuple[int, int]:
    """SillyTavern's way to fill the history: newest message first, each tokenized as it goes
    into the prompt, until the next one would not fit. `messages` are parsed already, as a
    frontend holds its chat in memory. Returns (messages, tokens)."""
    used = taken = 0
    for msg in reversed(messages):
        if msg.is_system:
            continue
        cost = engine.count_tokens(f"{msg.name}: {msg.mes}\n")
        if used + cost > budget:
            break
        used += cost
        taken += 1
    return taken, used


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=10_000)
    ap.add_argument("--entries", type=int, default=2_000)
    ap.add_argument("--turns", type=int, default=20)
    ap.add_argument(
        "--memory", action="store_true",
        help="keep vector recall on: each turn also embeds the new message and the queries with "
        "MiniLM and asks Chroma (bench_memory.py measures that part on its own)",
    )
    args = ap.parse_args()
    rng = random.Random(1)

    from tavern.session import Tavern
    from tavern.store import ChatMessage

    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        app = Tavern.open(
            home, **{"model.n_ctx": 8192, "lore.global_books": ["big"], "memory.enabled": args.memory}
        )
        # The same realistic generators as bench_lore.py: invented names, nouns and adjective
        # phrases as keys; chat text that mentions a name or a noun now and then.
        names = make_names(rng, 3000)
        (home / "lorebooks" / "big.json").write_text(
            json.dumps(make_book(rng, args.entries, names)), encoding="utf-8"
        )
        chat_text = make_chat(rng, args.messages, names)

        session = app.open_chat("Mira", new=True)
        path = session.chat.path
        lines = [path.read_text(encoding="utf-8").splitlines()[0]]
        for i, said in enumerate(chat_text):
            user, text = i % 2 == 1, said.text
            lines.append(
                json.dumps(
                    {
                        "name": "User" if user else "Mira",
                        "is_user": user,
                        "is_system": False,
                        "send_date": "November 25, 2026 1:00pm",
                        "mes": text,
                        "extra": {},
                    }
                )
            )
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        session = app.open_chat("Mira", chat_name=path.stem)
        engine = app.load_engine()
        assert len(session.chat) == args.messages

        times, base = [], []
        prompt = None
        for t in range(args.turns):
            text = f"Tell me about {rng.choice(names)} and the {rng.choice(NOUNS)} ({t})"
            session.chat.append(ChatMessage(name="User", is_user=True, mes=text))
            t0 = time.perf_counter()
            prompt = session.build_prompt()
            times.append((time.perf_counter() - t0) * 1000)
            in_memory = session.chat.messages()  # not timed: a frontend holds its chat parsed
            t0 = time.perf_counter()
            walked, n = frontend_history_walk(in_memory, engine, history_budget(prompt))
            base.append((time.perf_counter() - t0) * 1000)
        assert prompt is not None and prompt.prompt_tokens <= prompt.budget
        print(
            f"chat {args.messages} messages, lorebook {args.entries} entries, n_ctx 8192, {args.turns} turns"
        )
        print(f"first turn (cold caches): {times[0]:.1f} ms")
        print(
            f"tavern build_prompt: {statistics.median(times[1:]):.1f} ms/turn (median of turns 2-{args.turns}), "
            f"p90 {sorted(times[1:])[int(0.9 * (len(times) - 1))]:.1f} ms"
        )
        print(
            f"baseline frontend walk (newest first, tokenize each until the budget is full): "
            f"{statistics.median(base):.1f} ms/turn (median of {args.turns}; {walked} messages, {n} tokens)"
        )
        print(
            f"prompt: {prompt.prompt_tokens} tokens, {prompt.slots[-2].detail}; lore fired: "
            f"{len(session.last_lore.activated) if session.last_lore else 0}"
        )


if __name__ == "__main__":
    main()
