"""`tavern backends add|list|remove|test|use`: connection profiles for remote servers.

Every action is a call into tavern/backends.py, the same services the TUI's backends screen
uses."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from tavern.errors import ConfigError
from tavern.masking import mask_url

if TYPE_CHECKING:
    from tavern.backends import BackendStore


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    usage: Callable[[argparse.ArgumentParser], Callable[[argparse.Namespace], int]],
) -> None:
    parser = sub.add_parser("backends", help="remote servers (OpenAI-compatible, llama.cpp, KoboldCpp, Ollama)")
    parser.set_defaults(func=usage(parser))
    act = parser.add_subparsers(metavar="ACTION")
    from tavern.backends import APIS

    sp = act.add_parser("add", help="add or replace a connection profile")
    sp.add_argument("name")
    sp.add_argument("--api", required=True, choices=APIS)
    sp.add_argument("--url", required=True)
    sp.add_argument("--model", default="")
    sp.add_argument("--format", default="", help="prompt format id for text APIs (default: the server's)")
    sp.add_argument("--key-env", help="read the API key from this environment variable (stored 0600)")
    sp.set_defaults(func=cmd_add)
    sp = act.add_parser("list", help="the profiles (never their keys)")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_list)
    sp = act.add_parser("remove", help="forget a profile and its key")
    sp.add_argument("name")
    sp.set_defaults(func=cmd_remove)
    sp = act.add_parser("test", help="connect and list the server's models")
    sp.add_argument("name")
    sp.set_defaults(func=cmd_test)
    sp = act.add_parser("use", help="the backend for every chat, a character, or one chat")
    sp.add_argument("name", nargs="?", default="", help="a profile, or 'embedded' for the embedded llama.cpp engine")
    sp.add_argument("--character", help="only for this character (its card's extensions)")
    sp.add_argument("--chat", help="only for this chat of --character (its metadata)")
    sp.add_argument("--clear", action="store_true",
                    help="forget the character's or chat's choice (it inherits again)")
    sp.set_defaults(func=cmd_use)


def _store(args: argparse.Namespace) -> BackendStore:
    from tavern.backends import BackendStore
    from tavern.paths import open_home

    return BackendStore(open_home(args.home).ensure().root)


def cmd_add(args: argparse.Namespace) -> int:
    p = _store(args).add(args.name, args.api, args.url, args.model, args.format, key_env=args.key_env or "")
    print(f"backend {p.name}: {p.api} at {mask_url(p.url)}" + (" (key stored)" if p.key else ""))
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    profiles = list(_store(args).profiles().values())
    if args.json:
        rows = [
            {"name": p.name, "api": p.api, "url": mask_url(p.url), "model": p.model, "format": p.format,
             "key": bool(p.key), "ignored": p.ignored}
            for p in profiles
        ]
        print(json.dumps(rows))
        return 0
    for p in profiles:
        extra = (" key" if p.key else "") + (f" ignores {','.join(p.ignored)}" if p.ignored else "")
        print(f"{p.name}\t{p.api}\t{mask_url(p.url)}\t{p.model or '-'}{extra}")
    if not profiles:
        print("no backends (add one with `tavern backends add NAME --api ... --url ...`)", file=sys.stderr)
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    _store(args).remove(args.name)
    return 0


def cmd_test(args: argparse.Namespace) -> int:
    from tavern.backends import test_backend

    models = test_backend(_store(args), args.name)
    print(f"backend {args.name}: connected, {len(models)} model(s)")
    for m in models:
        print(f"  {m}")
    return 0


def cmd_use(args: argparse.Namespace) -> int:
    from tavern.backends import choose_backend
    from tavern.session import Tavern

    if args.chat and not args.character:
        raise ConfigError("--chat needs --character")
    if args.clear and not args.character:
        raise ConfigError("--clear needs --character (globally, use `tavern backends use embedded`)")
    if not args.name and not args.clear:
        raise ConfigError("name a backend (or 'embedded'), or --clear a character's or chat's choice")
    app = Tavern.open(args.home)
    app.lock_home()
    session, scope = None, "global"
    if args.chat:
        session, scope = app.open_chat(args.character, chat_name=args.chat), "chat"
    elif args.character:
        scope = "character"
    name = "" if args.clear else args.name
    choose_backend(app, name, scope, session, character=args.character or "")
    where = {"global": "every chat", "character": f"character {args.character}", "chat": f"chat {args.chat}"}[scope]
    print(f"backend for {where}: {name or '(inherited)'}")
    return 0
