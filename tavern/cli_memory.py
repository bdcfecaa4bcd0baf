"""`tavern memory ...`: the summary, recall search and reindexing, headless.

A CLI front beside tavern/cli.py, which only registers it (`add_memory_parser`), as it does
tavern/cli_backends.py; the work is tavern.memory's. Everything heavy (chromadb, torch, the
engine) loads inside the commands.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from tavern.errors import MemoryError_, TavernError
from tavern.textsafe import json_safe

if TYPE_CHECKING:
    from tavern.memory.service import MemoryService
    from tavern.session import Tavern

Command = Callable[[argparse.Namespace], int]
Opener = Callable[[argparse.Namespace], "Tavern"]
"""Opens the Tavern the arguments name (tavern/cli.py's `_open`, with --home and overrides)."""


def add_memory_parser(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], open_app: Opener,
    usage: Callable[[argparse.ArgumentParser], Command],
) -> None:
    parser = sub.add_parser("memory", help="long-term memory: the summary, recall, the index")
    parser.set_defaults(func=usage(parser))
    memory = parser.add_subparsers(metavar="ACTION")

    sp = memory.add_parser("summary", help="show, edit, regenerate or switch off a chat's summary")
    sp.add_argument("character")
    sp.add_argument("--chat")
    g = sp.add_mutually_exclusive_group()
    g.add_argument("--show", action="store_true", help="print it (the default)")
    g.add_argument("--set", metavar="TEXT", help="replace its text with yours")
    g.add_argument("--regenerate", action="store_true", help="write it again from the first message")
    g.add_argument("--off", action="store_true", help="keep it out of the prompt")
    g.add_argument("--on", action="store_true", help="put it back into the prompt")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=lambda a: cmd_summary(a, open_app))

    sp = memory.add_parser("search", help="what recall finds for a text, with scores")
    sp.add_argument("character")
    sp.add_argument("text")
    sp.add_argument("--chat")
    sp.add_argument("-k", type=int, default=None, help="how many (default: [memory] top_k)")
    sp.add_argument("--all", action="store_true", help="search the whole chat, the window too")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=lambda a: cmd_search(a, open_app))

    sp = memory.add_parser("reindex", help="rebuild a chat's vector index")
    sp.add_argument("character")
    sp.add_argument("--chat")
    sp.set_defaults(func=lambda a: cmd_reindex(a, open_app))


def _memory(app: Tavern) -> MemoryService:
    memory = app.memory
    if memory is None:
        raise MemoryError_("long-term memory is switched off ([memory] enabled = false)")
    return memory


def _ready(memory: MemoryService) -> None:
    """Wait for the background index to catch up; memory that failed is an error here."""
    memory.wait_idle()
    if memory.failed:
        raise MemoryError_(memory.failed)


def cmd_summary(args: argparse.Namespace, open_app: Opener) -> int:
    from tavern.chat import summary as chat_summary
    from tavern.memory import summary

    app = open_app(args)
    session = app.open_chat(args.character, chat_name=args.chat)
    chat = session.chat
    if args.set is not None:
        app.lock_home()
        summary.set_text(chat, args.set)
    elif args.off or args.on:
        app.lock_home()
        summary.set_off(chat, args.off)
    elif args.regenerate:
        app.lock_home()
        window_start = max(0, session.build_prompt().first_message_index)
        if window_start == 0:
            raise TavernError("nothing has left the prompt window yet: no summary to write")
        summary.regenerate(session.link, app.settings.memory, window_start)
    shown = chat_summary.read(session)
    if args.json:
        meta = summary.summary_meta(chat)
        dumped = json.dumps({"chat": chat.name, "summary": shown.text, **meta}, ensure_ascii=False)
        sys.stdout.write(json_safe(dumped) + "\n")
        return 0
    state = " (off: not in the prompt)" if shown.off else ""
    print(f"chat: {chat.name}\ncovers messages {shown.start}-{max(0, shown.end - 1)}{state}")
    print(shown.text or "(no summary yet)")
    return 0


def cmd_search(args: argparse.Namespace, open_app: Opener) -> int:
    app = open_app(args)
    session = app.open_chat(args.character, chat_name=args.chat)
    memory = _memory(app)
    _ready(memory)
    try:
        memory.sync_full(session.link)  # an imported chat may not be indexed yet
    except Exception as err:
        raise MemoryError_(f"cannot index the chat: {err}") from None
    before = None if args.all else max(0, session.build_prompt().first_message_index)
    hits = memory.search(session.link, args.text, k=args.k, before=before)
    threshold = app.settings.memory.score_threshold
    rows = [
        {"score": round(h.score, 4), "index": h.index, "keyword": h.keyword,
         "recalled": h.score >= threshold or h.keyword, "text": h.text}
        for h in hits
    ]
    if args.json:
        out = {"chat": session.chat.name, "window_start": before, "threshold": threshold, "hits": rows}
        sys.stdout.write(json_safe(json.dumps(out, ensure_ascii=False)) + "\n")
        return 0
    where = "the whole chat" if before is None else f"messages before #{before} (outside the window)"
    print(f"chat: {session.chat.name}; searched {where}; threshold {threshold}")
    for h in hits:
        mark = "*" if h.score >= threshold or h.keyword else " "  # a name's match is recalled too
        text = h.text.replace("\n", " ")
        print(f"{mark} {round(h.score, 4):.3f}  #{h.index:<5} {text[:100]}")
    if not hits:
        print("(nothing indexed there)")
    return 0


def cmd_reindex(args: argparse.Namespace, open_app: Opener) -> int:
    app = open_app(args)
    app.lock_home()
    session = app.open_chat(args.character, chat_name=args.chat)
    memory = _memory(app)
    memory.wait_idle()
    try:
        n = memory.reindex(session.link)
    except MemoryError_:
        raise
    except Exception as err:  # Chroma's own errors: one line
        raise MemoryError_(f"reindex failed: {err}") from None
    print(f"{session.chat.name}: {len(session.chat)} messages, {n} chunks indexed")
    return 0
