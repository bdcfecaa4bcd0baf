"""A long roleplay that overflows the context many times: Tavern's engine against a naive one.

Both sides use Tavern's real assembler (system prompt and card kept, oldest messages dropped
newest-first to the budget) and the same llama.cpp engine on the bundled SmolLM2; the only
difference is the KV cache: Tavern shifts it (cache reuse), the naive side reuses only the
common prefix, as `Llama.create_completion` and a naive frontend do. Greedy sampling, so both
sides see the same conversation as long as their replies agree.

    python benchmarks/bench_context_shift.py [--turns 300] [--ctx 2048] [--reply 48]

Prints, per side: total prompt tokens evaluated, total prompt-evaluation seconds, the share of
turns after the first with >= 90% of the prompt served from the cache, and the ratio.

With a lorebook (the workloads users have): the whole Tavern stack (session, lore scan,
assembler, engine) chats with a character whose book fires and lapses as the talk moves on,
in both prompt layouts, against the same engine driven with llama-server's cache-reuse walk
(an insertion re-evaluates everything after it) in the same run:

    python benchmarks/bench_context_shift.py --workload mira --turns 40 --ctx 1024
    python benchmarks/bench_context_shift.py --workload seraphina --turns 40 --ctx 2048
    ... --save-prompts prompts.json   # the prompts Tavern built, for bench_llama_server.py

Sampled replies (`--temperature 0.9`, the Default preset, seed 1) are often written in other
tokens than the tokenizer gives for their text; `--sides own` runs Tavern's engine against itself
tokenizing every prompt from text alone (`LocalEngine.own_tokens` off), which evaluates such a
reply again from where it differs:

    python benchmarks/bench_context_shift.py --workload mira --turns 40 --ctx 1024 --sides own --temperature 0.9

Mira is bundled with her Saltmere book (14 entries); Seraphina is SillyTavern's default card
with its embedded Eldoria book (tests/data/cards/real/Seraphina.png), whose entries go before
the card, near the top, in SillyTavern's layout.

Each line also prints two floors: what a cache with one state cannot avoid under SillyTavern's
lore rules (each new message and each entry that fires after a turn without it, plus memory's
notes when their text changed), and what no cache at all can avoid (new messages and each
entry's first firing in the chat): Tavern's bank of removed text serves an entry that fires
again, so it can go below the first floor but never the second. A new message counts with
the template text around it (the end of the reply before it, the next reply's header), as
the prompt format writes them. A turn where the loop guard regenerates counts every call's
evaluated tokens, not only the last one's. Long-term memory is on by
default (`--memory off`: the lore workload alone); its background work (the summary) runs
between turns, as while a user types, and is counted apart.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

from tavern.engines.base import SEQ_CHAT, Finished, GenerationRequest
from tavern.engines.local import LocalEngine
from tavern.engines.models import default_model_path
from tavern.engines.samplers import SamplerSettings
from tavern.prompt.assemble import assemble_prompt
from tavern.prompt.inputs import CardFields, HistoryMessage, PromptInputs
from tavern.prompt.templates import get_format
from tavern.prompt.token_counter import TokenCounter

USER_LINES = [
    "Good evening! Is there a room free tonight?",
    "What's the best thing on the menu?",
    "Tell me about the ship with green sails.",
    "Who is that old sailor in the corner?",
    "I heard there's a storm coming. Is it true?",
    "Can you tell me a story about Saltmere?",
    "How long have you run this inn?",
    "What do the fishermen talk about these days?",
    "Is the harbor master a fair man?",
    "I'll have another cider, please.",
    "Have you ever left Saltmere?",
    "What's behind the locked door upstairs?",
]

CARD = CardFields(
    name="Mira",
    description=(
        "Mira is the cheerful keeper of the Rusty Lantern, an inn on the harbor of Saltmere. She is in her "
        "thirties, freckled, with a red scarf. She knows every sailor's name and every rumor on the docks."
    ),
    personality="warm, curious, quick to laugh, a little nosy",
    scenario="User has just stepped into the Rusty Lantern out of the rain.",
)


def run_side(engine: LocalEngine, turns: int, ctx: int, reply: int) -> list:
    fmt = get_format("chatml")
    count = TokenCounter(engine.count_tokens)
    history: list[HistoryMessage] = [
        HistoryMessage("Mira", "Come in, you're dripping all over my floor!", False, index=0)
    ]
    stats = []
    sampler = SamplerSettings(greedy=True)
    for t in range(turns):
        history.append(
            HistoryMessage("User", USER_LINES[t % len(USER_LINES)] + f" ({t})", True, index=len(history))
        )
        inputs = PromptInputs(
            card=CARD, user_name="User", history=history, system_prompt="Write Mira's next reply."
        )
        prompt = assemble_prompt(inputs, fmt, count, ctx, reply)
        req = GenerationRequest(
            prompt=prompt.text, max_tokens=reply, stop=prompt.stop, sampler=sampler, add_bos=prompt.add_bos
        )
        final = None
        for ev in engine.generate(req):
            if isinstance(ev, Finished):
                final = ev
        assert final is not None and final.error is None, final and final.error
        stats.append(final.stats)
        history.append(HistoryMessage("Mira", final.text.strip() or "...", False, index=len(history)))
    return stats


def summarize(name: str, stats: list) -> dict:
    after_first = stats[1:]
    served = [s.cached_tokens / s.prompt_tokens for s in after_first]
    good = sum(1 for x in served if x >= 0.9)
    return {
        "name": name,
        "evaluated": sum(s.evaluated_tokens for s in stats),
        "prompt_s": sum(s.prompt_ms for s in stats) / 1000,
        "median_turn_s": statistics.median(s.total_ms for s in stats) / 1000,
        "good_share": good / max(1, len(after_first)),
        "prompt_tokens": sum(s.prompt_tokens for s in stats),
    }


LORE_LINES = {
    "mira": [
        "Good evening, Mira! Is there a warm room free at the inn tonight?",
        "What is cooking in the kitchen? I could eat a whole bowl of stew.",
        "I saw a skyship moored at the cliff. Who is its captain, and why?",
        "Tell me more about this town and the people who live along the harbor.",
        "Someone said smugglers bring contraband through the fog. Is that just gossip?",
        "Thanks for the cider. Do you ever get tired of running this place?",
        "The harbormaster looked at me strangely today. Should I be worried about him?",
        "Have you heard the legend of the Drowned Bell that rings under the sea?",
        "My feet are sore from walking all day in the rain and cold wind.",
        "Do sailors ever speak of sea serpents out past the old lighthouse rocks?",
    ],
    "seraphina": [
        "Where am I? The last thing I remember is the dark forest around me.",
        "Thank you for saving me. What were those creatures that attacked me there?",
        "Is this glade really safe? It feels like a refuge from everything outside.",
        "How did you heal my wounds so quickly? Was that some kind of magic?",
        "I am still tired. Could I rest here a little longer, if you allow?",
        "Tell me about Eldoria. How long have you been guarding these ancient woods?",
        "Do the shadowfang beasts ever come close to this place at night?",
        "Your power is incredible. Can anyone learn such an ability, or only you?",
        "The tea is wonderful, thank you. What herbs did you put in it?",
        "I would like to help you protect the forest, if you will teach me.",
    ],
}


def exchange_tokens(session, previous: str, line: str, count) -> int:
    """What a new exchange costs any cache: the end of the reply now in the cache, the user's
    message and the header of the next reply, as the prompt format writes them."""
    fmt = session.link.prompt_format()
    user, char = session.user_name, session.card.name
    reply = {"role": "assistant", "content": f"{char}: {previous}"}
    kept = fmt.render([reply], continue_final=True)
    full = fmt.render([reply, {"role": "user", "content": f"{user}: {line}"}], prefill=f"{char}:")
    assert full.startswith(kept), (kept, full)
    return count(full[len(kept):])


def lore_workload(args: argparse.Namespace) -> None:
    import json
    import tempfile
    from pathlib import Path

    from tavern.session import Tavern

    lines = LORE_LINES[args.workload]
    sides = [("tavern (insert reuse)", dict(insert_reuse=True)), ("llama-server walk", dict(insert_reuse=False))]
    if args.sides == "tavern":
        sides = sides[:1]
    elif args.sides == "own":  # the engine that re-tokenizes every reply from its text
        sides = [sides[0], ("tavern, tokenizer's tokens", dict(insert_reuse=True, own_tokens=False))]
    sampling = {"generation.preset": "Deterministic"}
    if args.temperature is not None:  # the Default preset at this temperature, one seed for every reply
        sampling = {
            "generation.preset": "Default", "generation.temperature": args.temperature, "generation.seed": 1,
        }  # fmt: skip
    layouts = ["cache_friendly", "sillytavern"] if args.layout == "both" else [args.layout]
    saved: dict[str, list[str]] = {}
    replies: dict[str, list[str]] = {}
    recurring: dict[str, list[list[str]]] = {}
    print(
        f"workload {args.workload}: {args.turns} turns, ctx {args.ctx}, replies <= {args.reply} tokens, "
        f"{'greedy' if args.temperature is None else f'temperature {args.temperature}'}; "
        f"evaluated = prompt tokens evaluated in turns 2-{args.turns}",
        flush=True,
    )
    for layout in layouts:
        for name, kw in sides:
            home = Path(tempfile.mkdtemp(prefix="tavern-bench-"))
            app = Tavern.open(
                home,
                **{
                    "model.n_ctx": args.ctx,
                    "generation.max_tokens": args.reply,
                    **sampling,
                    "prompt.layout": layout,
                    "loops.enabled": not args.no_loops,
                    "memory.enabled": args.memory == "on",
                },
            )
            # Tavern's default engine (side cells for background jobs), with the walk swapped
            # on the reference side.
            kw = dict(kw)
            own = kw.pop("own_tokens", True)
            engine = LocalEngine(
                default_model_path(), n_ctx=args.ctx, cache_reuse=32, n_threads=args.threads,
                bank_cells=args.bank_cells, **kw,
            )  # fmt: skip
            if not own:
                engine.own_tokens.limit = 0  # it remembers no reply's tokens
            engine.load()
            app.use_engine(engine)
            background = [0, 0]  # the summary's prompt tokens evaluated, and jobs run
            # A turn where the loop guard regenerates the reply makes several calls; its Finished
            # reports the last one only, so the chat's evaluated tokens are summed here.
            on_chat = [0, 0]  # prompt tokens evaluated on the chat's sequence, and calls
            chat_generate = engine.generate

            def generate(request, cancel=None, _chat=chat_generate, _bg=background, _turn=on_chat):
                for ev in _chat(request, cancel):
                    if isinstance(ev, Finished):
                        tally = _turn if request.seq_id == SEQ_CHAT else _bg
                        tally[0] += ev.stats.evaluated_tokens
                        tally[1] += 1
                    yield ev

            engine.generate = generate
            if args.workload == "seraphina":
                card = Path(__file__).resolve().parent.parent / "tests/data/cards/real/Seraphina.png"
                key = app.cards.library.import_file(card)
            else:
                key = "Mira"
            session = app.open_chat(str(key), new=True)
            stats, prompts, hints = [], [], []
            # What no cache can avoid: each new message, each entry that just fired, and memory's
            # notes (the summary, the recalled messages) when their text changed.
            floor = floor_memory = 0
            firsts: list[int] = []  # per turn after the first: what no cache can avoid
            active: set = set()
            ever: set = set()  # entries that fired at least once: a bank of removed text can serve them again
            notes: dict = {}
            count = app.engines.current.count_tokens
            t0 = time.perf_counter()
            for t in range(args.turns):
                final = None
                before = session.history(limit=1)
                previous = before[-1].text if before else ""  # the reply now in the cache
                on_chat[:] = [0, 0]
                for ev in session.send(lines[t % len(lines)]):
                    if isinstance(ev, Finished):
                        final = ev
                assert final is not None and final.error is None, final and final.error
                if app.memory is not None:  # the user reads and types; background work finishes
                    app.memory.wait_idle(timeout=900)
                evaluated = on_chat[0]
                stats.append(
                    dataclasses.replace(
                        final.stats, evaluated_tokens=evaluated, cached_tokens=final.stats.prompt_tokens - evaluated
                    )
                )
                prompts.append(session.last_prompt.text)
                hints.append(session.prompts.last.recurring())
                anchors = session.last_prompt.note_anchors
                changed = [v[1] for k, v in anchors.items() if k in ("summary", "memory") and notes.get(k) != v[1]]
                notes = {k: v[1] for k, v in anchors.items()}
                fired = {(e.book, e.uid): e.content for e in getattr(session.last_lore, "activated", [])}
                if t:
                    exchange = exchange_tokens(session, previous, lines[t % len(lines)], count)
                    floor += exchange
                    floor += sum(count(text) + 1 for key, text in fired.items() if key not in active)
                    turn_first = exchange
                    turn_first += sum(count(text) + 1 for key, text in fired.items() if key not in ever)
                    firsts.append(turn_first)
                    floor_memory += sum(count(text) + 1 for text in changed)
                if args.per_turn:
                    st = stats[-1]
                    first = sorted(uid for (_book, uid) in fired if (_book, uid) not in ever)
                    print(
                        f"  turn {t:>3}: prompt {st.prompt_tokens:>5}  evaluated {st.evaluated_tokens:>4}  "
                        f"any cache {firsts[-1] if t else st.prompt_tokens:>4}  "
                        f"from the bank {st.banked_tokens:>4}  first firings {first}"
                        + (f"  ({on_chat[1]} calls: the loop guard regenerated)" if on_chat[1] > 1 else ""),
                        flush=True,
                    )
                active = set(fired)
                ever |= active
            wall = time.perf_counter() - t0
            app.engines.current.unload()
            saved.setdefault(layout, prompts)  # the first side: Tavern's own engine
            replies.setdefault(layout, [h.text for h in session.history() if not h.is_user][1:])
            recurring.setdefault(layout, hints)
            later = stats[1:]
            floor_first = sum(firsts)
            evaluated = sum(s.evaluated_tokens for s in later)
            total = sum(s.prompt_tokens for s in later)
            budget = args.ctx - args.reply
            full = [s for s in later if s.prompt_tokens > 0.8 * budget]
            good = sum(1 for s in full if s.cached_tokens >= 0.9 * s.prompt_tokens)
            # A turn where an entry fires for the first time in the chat may leave more than 10%
            # to evaluate in any cache: the most the >=90% rule can reach on this script.
            reachable = sum(
                1 for s, f in zip(later, firsts) if s.prompt_tokens > 0.8 * budget and f <= 0.1 * s.prompt_tokens
            )
            print(
                f"{layout:15s} {name:22s} evaluated {evaluated:>6} of {total:>6} prompt tokens "
                f"({100 * evaluated / max(1, total):5.1f}%; floor {100 * (floor + floor_memory) / max(1, total):.1f}%: "
                f"new messages and newly fired entries {100 * floor / max(1, total):.1f}%, memory's changed notes "
                f"{100 * floor_memory / max(1, total):.1f}%; only new messages and first firings "
                f"{100 * floor_first / max(1, total):.1f}%, {evaluated - floor_first:+} tokens); "
                f"turns at a near-full window: {len(full)}, "
                f">=90% cached on {100 * good / max(1, len(full)):5.1f}% of them (any cache: at most "
                f"{100 * reachable / max(1, len(full)):.1f}%, first firings); "
                f"median turn {statistics.median(s.total_ms for s in stats) / 1000:.2f} s; wall {wall:.0f} s; "
                f"background summaries: {background[1]}, {background[0]} tokens evaluated on their own sequence",
                flush=True,
            )
    if args.save_prompts:
        data = {"ctx": args.ctx, "prompts": saved, "replies": replies, "recurring": recurring}
        Path(args.save_prompts).write_text(json.dumps(data), encoding="utf-8")
        print(f"prompts saved to {args.save_prompts}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--turns", type=int, default=300)
    ap.add_argument("--ctx", type=int, default=2048)
    ap.add_argument("--reply", type=int, default=48)
    ap.add_argument("--workload", choices=["plain", "mira", "seraphina"], default="plain")
    ap.add_argument("--layout", choices=["both", "cache_friendly", "sillytavern"], default="both")
    ap.add_argument("--save-prompts", default="")
    ap.add_argument("--no-loops", action="store_true", help="loop guard off (its trims change the replies)")
    ap.add_argument(
        "--memory", choices=["on", "off"], default="on", help="long-term memory (summary, recall): on by default"
    )
    ap.add_argument("--bank-cells", type=int, default=-1, help="the engine's bank of removed text (-1: default, 0: off)")
    ap.add_argument("--threads", type=int, default=0, help="llama.cpp threads (0: all cores)")
    ap.add_argument(
        "--sides",
        choices=["both", "tavern", "own"],
        default="both",
        help="tavern: skip the walk's side; own: Tavern against itself re-tokenizing each reply from its text",
    )
    ap.add_argument(
        "--temperature",
        type=float,
        help="sample with the Default preset at this temperature (seed 1); default greedy",
    )
    ap.add_argument(
        "--per-turn",
        action="store_true",
        help="a line per turn: prompt, evaluated, what any cache must evaluate, from the bank, first firings",
    )
    args = ap.parse_args()
    if args.workload != "plain":
        lore_workload(args)
        return
    path = default_model_path()
    results = []
    for name, reuse in (("tavern (context shift)", 32), ("naive (prefix cache only)", 0)):
        engine = LocalEngine(path, n_ctx=args.ctx, cache_reuse=reuse)
        engine.load()
        t0 = time.perf_counter()
        stats = run_side(engine, args.turns, args.ctx, args.reply)
        engine.unload()
        r = summarize(name, stats)
        r["wall_s"] = time.perf_counter() - t0
        full = [s for s in stats if s.prompt_tokens > (args.ctx - args.reply) * 0.8]
        short = stats[:10]
        r["full_window_turns"] = len(full)
        r["short_median_s"] = statistics.median(s.total_ms for s in short) / 1000
        r["full_median_s"] = statistics.median(s.total_ms for s in full) / 1000 if full else float("nan")
        results.append(r)
        print(
            f"{name:28s} turns {args.turns}  evaluated {r['evaluated']:>7} of {r['prompt_tokens']} prompt tokens  "
            f"prompt eval {r['prompt_s']:7.1f} s  median turn {r['median_turn_s']:.2f} s  "
            f">=90% cached on {100 * r['good_share']:.1f}% of turns after the first  "
            f"(turns at a near-full window: {r['full_window_turns']}; median turn there "
            f"{r['full_median_s']:.2f} s vs {r['short_median_s']:.2f} s in the first 10 turns)",
            flush=True,
        )
    t, n = results
    print(
        f"ratio: naive evaluated {n['evaluated'] / max(1, t['evaluated']):.1f}x more prompt tokens, "
        f"spent {n['prompt_s'] / max(1e-9, t['prompt_s']):.1f}x more time on prompt evaluation"
    )


if __name__ == "__main__":
    main()
