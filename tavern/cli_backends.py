"""`tavern backends add|list|remove|test`: connection profiles for remote servers."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from tavern.errors import ConfigError


def register(sub: Any, usage: Any) -> None:
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


def _store(args: argparse.Namespace) -> Any:
    from tavern.backends import BackendStore
    from tavern.paths import open_home

    return BackendStore(open_home(args.home).ensure().root)


def cmd_add(args: argparse.Namespace) -> int:
    from tavern.backends import Profile

    key = ""
    if args.key_env:
        key = os.environ.get(args.key_env, "")
        if not key:
            raise ConfigError(f"environment variable {args.key_env} is empty or unset")
    store = _store(args)
    store.save(Profile(name=args.name, api=args.api, url=args.url, model=args.model, format=args.format, key=key))
    print(f"backend {args.name}: {args.api} at {args.url}" + (" (key stored)" if key else ""))
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    rows = [
        {"name": p.name, "api": p.api, "url": p.url, "model": p.model, "format": p.format,
         "key": bool(p.key), "ignored": p.ignored}
        for p in _store(args).profiles().values()
    ]
    if args.json:
        print(json.dumps(rows))
        return 0
    for r in rows:
        extra = (" key" if r["key"] else "") + (f" ignores {','.join(r['ignored'])}" if r["ignored"] else "")
        print(f"{r['name']}\t{r['api']}\t{r['url']}\t{r['model'] or '-'}{extra}")
    if not rows:
        print("no backends (add one with `tavern backends add NAME --api ... --url ...`)", file=sys.stderr)
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    _store(args).remove(args.name)
    return 0


def cmd_test(args: argparse.Namespace) -> int:
    from tavern.engines.remote.engine import RemoteEngine

    store = _store(args)
    engine = RemoteEngine(store.get(args.name), store=store)
    try:
        models = engine.list_models()
    finally:
        engine.unload()
    print(f"backend {args.name}: connected, {len(models)} model(s)")
    for m in models:
        print(f"  {m}")
    return 0
