"""The command line: a thin front over `tavern.session` and the domain modules.

Each subcommand parses its arguments, calls a service, and prints. Expected failures
(TavernError) become one line on stderr and exit status 1; nothing here holds logic of its own.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from tavern import __version__
from tavern.errors import TavernError
from tavern.textsafe import guard_output, json_safe, terminal_safe

if TYPE_CHECKING:
    from tavern.chat.session import ChatSession
    from tavern.engines.base import TurnStats
    from tavern.session import Tavern


def main(argv: Sequence[str] | None = None) -> int:
    args = _plain_tui_args(sys.argv[1:] if argv is None else list(argv))
    if args is None:
        args = build_parser().parse_args(argv)
    # Card, chat and server text is shown, never run by the terminal (the app renders its own).
    restore_output = None if args.func is cmd_tui else guard_output()
    try:
        return int(args.func(args) or 0)
    except TavernError as err:
        # A chat that could not be saved: this process ends now, so nothing is "kept in memory".
        print(f"tavern: error: {getattr(err, 'on_exit', err)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("tavern: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    finally:
        # A command waits for the worker's unit of work (its exit status matters to scripts);
        # the app, quit by a user, waits less (a crash after the terminal is restored loses nothing).
        while _OPENED:
            _OPENED.pop().close(timeout=2.0 if args.func is cmd_tui else 10.0)
        if restore_output is not None:
            restore_output()


_OPENED: list[Tavern] = []
"""The Tavern instances this command opened (`_open`): closed before the process exits."""


def _plain_tui_args(argv: list[str]) -> argparse.Namespace | None:
    """`tavern` alone (or with only --home/--model) opens the app: parse just that, without
    building every command's parser, which would delay the app's first frame."""
    p = argparse.ArgumentParser(prog="tavern", add_help=False)
    p.add_argument("--home")
    p.add_argument("--model")
    args, rest = p.parse_known_args(argv)
    if rest:
        return None  # a command, --help, --version or a mistake: the full parser answers
    args.func = cmd_tui
    return args


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tavern", description="Roleplay chat in the terminal, with its own llama.cpp engine."
    )
    p.add_argument("--version", action="version", version=f"tavern {__version__}")
    p.add_argument("--home", help="data home (default: $TAVERN_HOME, else the user data folder)")
    p.add_argument("--model", help="GGUF file or a name in the models folder (default: bundled SmolLM2)")
    p.set_defaults(func=cmd_tui)
    sub = p.add_subparsers(title="commands", metavar="COMMAND")

    def run_opts(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--ctx", type=int, help="context size in tokens")
        sp.add_argument("--max-tokens", type=int, help="reply length in tokens")
        sp.add_argument("--seed", type=int, help="sampler seed (default: a new one per reply)")
        sp.add_argument("--temperature", type=float, help="override the preset's temperature")
        sp.add_argument("--negative", help="a negative prompt (CFG): steer replies away from this text")
        sp.add_argument("--guidance", type=float, help="CFG guidance scale (1 = off; try 1.5)")

    sp = sub.add_parser("tui", help="open the chat app (the default)")
    sp.set_defaults(func=cmd_tui)

    sp = sub.add_parser("serve", help="serve the app to a web browser (textual-serve), behind a token")
    sp.add_argument(
        "--host", default="127.0.0.1",
        help="address to listen on (default 127.0.0.1; another needs [serve] password or $TAVERN_SERVE_PASSWORD)",
    )
    sp.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    sp.set_defaults(func=cmd_serve)

    sp = sub.add_parser("chat", help="chat headless: --message, or one message per line on stdin")
    sp.add_argument("character")
    sp.add_argument("--message", "-m", help="send one message and print the reply")
    sp.add_argument("--new", action="store_true", help="start a new chat")
    sp.add_argument("--chat", help="continue this chat (file name without .jsonl)")
    sp.add_argument("--json", action="store_true", help="one JSON object per turn, with stats")
    sp.add_argument("--backend", help="a remote connection profile (see `tavern backends`)")
    run_opts(sp)
    sp.set_defaults(func=cmd_chat)

    sp = sub.add_parser("cfg", help="a chat's negative prompt (CFG): show it, or set it with --negative/--guidance")
    sp.add_argument("character")
    sp.add_argument("--chat")
    sp.add_argument("--negative", help="the negative prompt text ('' clears it)")
    sp.add_argument("--guidance", type=float, help="guidance scale (1 = off)")
    sp.set_defaults(func=cmd_cfg)

    sp = sub.add_parser("prompt", help="print the exact prompt of the next turn")
    sp.add_argument("character")
    sp.add_argument("--chat")
    sp.add_argument("--explain", action="store_true", help="add tokens per slot and what was dropped")
    sp.add_argument("--json", action="store_true")
    sp.add_argument("--mode", choices=["normal", "continue", "impersonate"], default="normal")
    run_opts(sp)
    sp.set_defaults(func=cmd_prompt)

    sp = sub.add_parser("characters", help="list characters")
    sp.add_argument("--search")
    sp.add_argument("--tag")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_characters)

    sp = sub.add_parser("chats", help="list a character's chats")
    sp.add_argument("character")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_chats)

    sp = sub.add_parser("branch", help="start a new chat from a message of a chat (SillyTavern's branch)")
    sp.add_argument("character")
    sp.add_argument("--chat", help="the parent chat (default: the latest)")
    sp.add_argument("--at", type=int, default=-1, help="message index to branch at (default: the last)")
    sp.add_argument("--checkpoint", metavar="LABEL", help="make a named checkpoint instead")
    sp.set_defaults(func=cmd_branch)

    sp = sub.add_parser("import", help="import cards, lorebooks, chats or presets (detected by content)")
    sp.add_argument("files", nargs="+")
    sp.add_argument("--character", help="character that imported chats belong to (default: the one the chat names)")
    sp.set_defaults(func=cmd_import)

    card_parser = sub.add_parser("card", help="character cards")
    card_parser.set_defaults(func=_usage(card_parser))
    card = card_parser.add_subparsers(metavar="ACTION")
    sp = card.add_parser("show", help="print a normalized card")
    sp.add_argument("name", help="character name or a card file")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_card_show)

    export_parser = sub.add_parser("export", help="export cards and chats")
    export_parser.set_defaults(func=_usage(export_parser))
    export = export_parser.add_subparsers(metavar="WHAT")
    sp = export.add_parser("card", help="write a card as PNG (V2+V3 chunks) or JSON")
    sp.add_argument("name")
    sp.add_argument("--to", required=True, help="FILE.png or FILE.json")
    sp.set_defaults(func=cmd_export_card)
    sp = export.add_parser("chat", help="write a chat as JSONL, Markdown or text")
    sp.add_argument("character")
    sp.add_argument("--chat")
    sp.add_argument("--to", required=True, help="FILE.jsonl, FILE.md or FILE.txt")
    sp.set_defaults(func=cmd_export_chat)

    lore_parser = sub.add_parser("lore", help="lorebooks")
    lore_parser.set_defaults(func=_usage(lore_parser))
    lore = lore_parser.add_subparsers(metavar="ACTION")
    sp = lore.add_parser("scan", help="show which entries activate, and why")
    sp.add_argument("lorebook", help="a lorebook file or a name in the lorebooks folder")
    g = sp.add_mutually_exclusive_group(required=True)
    g.add_argument("--text")
    g.add_argument("--character")
    sp.add_argument("--chat")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_lore_scan)

    models_parser = sub.add_parser("models", help="GGUF models")
    models_parser.set_defaults(func=_usage(models_parser))
    models = models_parser.add_subparsers(metavar="ACTION")
    sp = models.add_parser("list", help="GGUFs in the models folder and the default")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_models_list)
    sp = models.add_parser("info", help="what a GGUF holds and what it needs")
    sp.add_argument("file")
    sp.add_argument("--ctx", type=int, default=None)
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_models_info)

    from tavern.cli_backends import register

    register(sub, _usage)
    from tavern.cli_memory import add_memory_parser

    add_memory_parser(sub, _open, _usage)
    return p


# -- helpers ---------------------------------------------------------------------------------


def _usage(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    """A command group called without its action prints its usage instead of opening the app."""

    def show(_args: argparse.Namespace) -> int:
        parser.print_help(sys.stderr)
        return 2

    return show


def _open(args: argparse.Namespace) -> Tavern:
    from tavern.session import Tavern

    overrides = {
        "model.path": getattr(args, "model", None),
        "model.n_ctx": getattr(args, "ctx", None),
        "generation.max_tokens": getattr(args, "max_tokens", None),
        "generation.seed": getattr(args, "seed", None),
        "generation.temperature": getattr(args, "temperature", None),
        "cfg.negative_prompt": getattr(args, "negative", None),
        "cfg.guidance_scale": getattr(args, "guidance", None),
    }
    app = Tavern.open(args.home, **{k: v for k, v in overrides.items() if v is not None})
    _OPENED.append(app)
    return app


def _print_json(obj: object) -> None:
    sys.stdout.write(json_safe(json.dumps(obj, ensure_ascii=False)) + "\n")
    sys.stdout.flush()


# -- commands --------------------------------------------------------------------------------


def cmd_tui(args: argparse.Namespace) -> int:
    from tavern.paths import open_home
    from tavern.tui.app import make_app
    from tavern.tui.boot import Boot
    from tavern.tui.widgets.avatar import prepare_graphics
    from tavern.ui_settings import read_ui

    # The first frame comes from `Boot` (no pydantic, no store); the Tavern opens in a thread
    # right after it, taking the home lock there (a refused lock ends the app with the error).
    home = open_home(args.home)

    def opener() -> Tavern:
        tavern = _open(args)
        tavern.lock_home()
        return tavern

    theme, keys = read_ui(home)
    prepare_graphics()  # must query the terminal before Textual takes it over
    app = make_app(boot=Boot(home, opener, theme, keys))
    app.run()
    if app.boot_error:
        # Printed after the app, outside the guard: the error may quote a card's name.
        print(f"tavern: error: {terminal_safe(app.boot_error)}", file=sys.stderr)
        return 1
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """The same app in a browser: textual-serve runs `tavern tui` per connection, behind a
    token (or the [serve] password) and an Origin check (tavern/serve.py)."""
    import shlex

    from tavern.serve import default_command, serve

    serve(shlex.join(default_command(args.home, args.model)), args.host, args.port, args.home)
    return 0


def cmd_chat(args: argparse.Namespace) -> int:
    app = _open(args)
    app.lock_home()
    app.backend_override = args.backend
    if app.memory is not None:  # said once, when recall or indexing first fails
        app.memory.on_warning = lambda w: print(f"tavern: warning: {w}", file=sys.stderr)
    session = app.open_chat(args.character, new=args.new, chat_name=args.chat)
    for warning in session.warnings:
        print(f"tavern: warning: {warning}", file=sys.stderr)
    if args.message is not None:
        messages: Iterable[str] = [args.message]
    elif not sys.stdin.isatty():
        messages = (line.rstrip("\n") for line in sys.stdin)
    else:
        raise TavernError("no message: use --message TEXT, pipe lines on stdin, or run `tavern` for the app")
    status = _StatusLine()
    if not app.engine_loaded:
        status.show("loading model…")
    try:
        app.load_engine()  # load before the first turn so a bad model fails before anything is written
    finally:
        status.clear()
    for warning in app.load_warnings:
        print(f"tavern: warning: {warning}", file=sys.stderr)
    for note in app.load_notes:  # e.g. how many layers fitted on a GPU whose free memory is unknown
        print(f"tavern: {note}", file=sys.stderr)
    turns = 0
    for text in messages:
        if args.message is None and not text.strip():
            continue  # blank lines between piped messages are not messages
        if _chat_turn(app, session, text, args.json, status) != 0:
            return 1
        turns += 1
    if turns == 0:
        raise TavernError("no message on standard input")
    return 0


class _StatusLine:
    """One line on stderr, rewritten in place (`\r`), for what happens before the reply: the
    model loading, the prompt being read. Only when stderr is a terminal: a log file or a
    pipe gets none of it."""

    def __init__(self) -> None:
        # The real stream, past `guard_output` (which would show our \r and erase-line as
        # marks); the text itself is made safe here.
        raw = sys.__stderr__
        self.out = raw if raw is not None and sys.stderr.isatty() and raw.isatty() else None
        self.shown = False

    def show(self, text: str) -> None:
        if self.out is not None:
            self.out.write(f"\r{terminal_safe(text)}\x1b[K")
            self.out.flush()
            self.shown = True

    def clear(self) -> None:
        if self.out is not None and self.shown:
            self.out.write("\r\x1b[K")
            self.out.flush()
            self.shown = False


def _prompt_eval(stats: TurnStats) -> dict[str, object]:
    """The prompt evaluation's figures for `--json`: tokens evaluated, seconds, tokens/s."""
    return {
        "tokens": stats.evaluated_tokens,
        "seconds": round(stats.prompt_ms / 1000, 3),
        "tokens_per_s": round(stats.prompt_tps, 1),
    }


def _chat_turn(app: Tavern, session: ChatSession, text: str, as_json: bool, status: _StatusLine) -> int:
    from tavern.engines.base import Finished, PromptProgress

    cancel = threading.Event()
    final = None
    # Ctrl+C stops the reply within a token and the partial reply is saved, like Esc in the app:
    # the signal only sets the cancel flag (raising inside llama.cpp's callbacks would be lost).
    previous = signal.signal(signal.SIGINT, lambda _sig, _frame: cancel.set())
    try:
        for event in session.send(text, cancel):
            if isinstance(event, PromptProgress):
                status.show(event.describe())
                continue
            status.clear()  # before the reply's first text (or the turn's end)
            if isinstance(event, Finished):
                final = event
            elif not as_json:
                sys.stdout.write(event.text)
                sys.stdout.flush()
    finally:
        status.clear()
        signal.signal(signal.SIGINT, previous)
    interrupted = cancel.is_set()
    assert final is not None
    for line in app.take_notices():
        print(f"tavern: warning: {line}", file=sys.stderr)
    if as_json:
        _print_json(
            {
                "character": session.card.name,
                "chat": session.chat.name,
                "message": text,
                "reply": final.text,
                "stats": final.stats.as_dict(),
                "prompt_eval": _prompt_eval(final.stats),
                "error": final.error,
                "loop": final.stats.loop,
            }
        )
    else:
        sys.stdout.write("\n")
        sys.stdout.flush()
        if final.stats.loop:  # the reply above was trimmed or written again: say so
            print(f"tavern: {final.stats.loop['message']}", file=sys.stderr)
    if final.error:
        print(f"tavern: error: generation failed: {final.error} (your message was saved)", file=sys.stderr)
        return 1
    if interrupted:
        raise KeyboardInterrupt
    return 0


def cmd_cfg(args: argparse.Namespace) -> int:
    app = _open(args)
    writes = args.negative is not None or args.guidance is not None
    if writes:
        app.lock_home()
    session = app.open_chat(args.character, chat_name=args.chat, read_only=not writes)
    session.set_cfg(scale=args.guidance, negative=args.negative)
    scale, negative, depth = session.cfg()
    state = "off" if scale == 1.0 or not negative.strip() else "on"
    print(f"CFG {state}: guidance {scale:g}, depth {depth}, negative prompt: {negative or '(none)'}")
    return 0


def cmd_prompt(args: argparse.Namespace) -> int:
    app = _open(args)
    session = app.open_chat(args.character, chat_name=args.chat, read_only=True)
    prompt = session.build_prompt(args.mode, explain=args.explain or args.json)
    if args.json:
        data = prompt.to_json()
        data["format"] = app.prompt_format().id
        data["format_reason"] = app.format_reason
        data["negative_prompt"] = session.last_negative
        if session.last_lore is not None:
            from tavern.lore.report import scan_result_to_json

            data["lore"] = scan_result_to_json(session.last_lore)
        _print_json(data)
        return 0
    sys.stdout.write(prompt.text)
    if args.explain:
        sys.stdout.write("\n\n" + "-" * 60 + "\n")
        sys.stdout.write(f"format: {app.prompt_format().id} ({app.format_reason})\n")
        sys.stdout.write(prompt.explain() + "\n")
    return 0


def cmd_characters(args: argparse.Namespace) -> int:
    app = _open(args)
    entries = (
        app.cards.library.search(text=args.search, tag=args.tag)
        if (args.search or args.tag)
        else app.cards.library.list()
    )
    if args.json:
        _print_json([{"key": e.key, "name": e.name, "tags": e.tags, "creator": e.creator} for e in entries])
    else:
        for e in entries:
            tags = f"  [{', '.join(e.tags)}]" if e.tags else ""
            print(f"{e.key}\t{e.name}{tags}")
    return 0


def cmd_chats(args: argparse.Namespace) -> int:
    app = _open(args)
    key, _card = app.cards.find(args.character)
    infos = app.chats.store.list_chats(key)
    if args.json:
        _print_json([{"name": i.name, "messages": i.message_count} for i in infos])
    else:
        for i in infos:
            print(f"{i.name}\t{i.message_count} messages")
    return 0


def cmd_branch(args: argparse.Namespace) -> int:
    app = _open(args)
    app.lock_home()
    session = app.open_chat(args.character, chat_name=args.chat)
    if not -len(session.chat) <= args.at < len(session.chat):
        raise TavernError(
            f"--at {args.at}: the chat has {len(session.chat)} messages (0..{len(session.chat) - 1})"
        )
    if args.checkpoint is not None:
        child = app.chats.store.checkpoint(session.chat, args.at, args.checkpoint)
    else:
        child = app.chats.store.branch(session.chat, args.at)
    for warning in child.warnings:
        print(f"tavern: warning: {warning}", file=sys.stderr)
    print(f"{child.name}\t{len(child)} messages (from '{session.chat.name}')")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    app = _open(args)
    app.lock_home()  # import writes cards, lorebooks and chats: one writer per data home
    report = app.import_files(args.files, character=args.character)
    for item in report.items:
        if item.error is not None:
            print(f"tavern: error: {item.error}", file=sys.stderr)
            continue
        print(f"{item.source}: {item.summary}")
        for warning in item.warnings:
            print(f"tavern: warning: {item.source}: {warning}", file=sys.stderr)
    return 1 if report.failed else 0


def cmd_card_show(args: argparse.Namespace) -> int:
    from tavern.cards import read_card

    path = Path(args.name)
    if path.is_file():
        card = read_card(path)
    else:
        card = _open(args).cards.find(args.name)[1]
    data = card.to_v3_dict()
    if args.json:
        _print_json(data)
        return 0
    d = data["data"]
    assert isinstance(d, dict)  # a V3 card keeps its fields under "data"
    print(f"{d['name']}  (by {d.get('creator') or 'unknown'}, tags: {', '.join(d.get('tags', []))})")
    for field in ("description", "personality", "scenario", "first_mes"):
        if d.get(field):
            print(f"\n[{field}]\n{d[field]}")
    if d.get("alternate_greetings"):
        print(f"\n[alternate_greetings] {len(d['alternate_greetings'])}")
    return 0


def cmd_export_card(args: argparse.Namespace) -> int:
    from tavern.cards import read_avatar, write_card_json, write_card_png

    app = _open(args)
    key, card = app.cards.find(args.name)
    to = Path(args.to)
    if to.suffix.lower() == ".png":
        write_card_png(card, to, read_avatar(app.cards.library.path(key)))
    elif to.suffix.lower() == ".json":
        write_card_json(card, to, version=3 if card.spec.endswith("v3") else 2)
    else:
        raise TavernError(f"{to}: use a .png or .json file name")
    print(f"{key} -> {to}")
    return 0


def cmd_export_chat(args: argparse.Namespace) -> int:
    app = _open(args)
    session = app.open_chat(args.character, chat_name=args.chat, read_only=True)
    to = Path(args.to)
    suffix = to.suffix.lower()
    if suffix == ".jsonl":
        app.chats.store.export_jsonl(session.chat, to)
    elif suffix == ".md":
        app.chats.store.export_markdown(session.chat, to)
    elif suffix == ".txt":
        app.chats.store.export_text(session.chat, to)
    else:
        raise TavernError(f"{to}: use .jsonl, .md or .txt")
    print(f"{session.chat.name} -> {to}")
    return 0


def cmd_lore_scan(args: argparse.Namespace) -> int:
    from tavern.lore import load_lorebook
    from tavern.lore.report import format_scan_report, scan_result_to_json

    app = _open(args)
    path = Path(args.lorebook)
    if not path.is_file():
        found = app.lorebooks.find(args.lorebook)
        if found is None:
            raise TavernError(f"{args.lorebook}: no such lorebook file or name in {app.home.lorebooks}")
        path = found
    book = load_lorebook(path)
    if args.text is not None:
        result = app.scan_lore_text([("global", book)], args.text)
    else:
        # The chat's own scan, as its next prompt runs it (tokenizer, macros, timed state).
        session = app.open_chat(args.character, chat_name=args.chat, read_only=True)
        scanned = session.scan_lore([("global", book)])
        assert scanned is not None  # a scan given a book always runs
        result = scanned
    if args.json:
        _print_json(scan_result_to_json(result))
    else:
        print(format_scan_report(result))
    return 0


def cmd_models_list(args: argparse.Namespace) -> int:
    from tavern.engines.models import find_models

    app = _open(args)
    entries = find_models(app.home.models)
    if args.json:
        _print_json([{k: str(v) if isinstance(v, Path) else v for k, v in vars(e).items()} for e in entries])
    else:
        for e in entries:
            print(f"{e.name}\t{e.path}")
    return 0


def cmd_models_info(args: argparse.Namespace) -> int:
    from tavern.engines.gguf_info import read_gguf
    from tavern.engines.gpu import detect_free_vram
    from tavern.engines.models import format_info, info_to_json

    app = _open(args)
    path = Path(args.file)
    if not path.exists():
        from tavern.engines.models import resolve_model

        path = resolve_model(args.file, app.home.models)
    info = read_gguf(path)
    n_ctx = args.ctx or app.settings.model.n_ctx
    fmt_id = None
    try:
        from tavern.prompt.templates import select_format

        fmt, _reason = select_format(info.name or path.name, info.chat_template, None)
        fmt_id = fmt.id
    except (ImportError, TavernError):
        pass
    from tavern.engines.gpu import backend_report, format_backend

    vram = detect_free_vram()
    from tavern.engines.config import EngineConfig, cache_plan

    cache = cache_plan(info, EngineConfig.from_settings(app.settings.model).with_changes(n_ctx=n_ctx))
    backend = backend_report()
    if args.json:
        _print_json({**info_to_json(info, n_ctx, fmt_id, vram, gpu_backend=backend["gpu_offload"]), "prompt_cache": cache, "llama_cpp": backend})
    else:
        print(format_info(info, n_ctx, fmt_id, vram, gpu_backend=backend["gpu_offload"]))
        for key, value in format_backend(backend):
            print(f"{key + ':':<16}{value}")
        print(
            f"KV cells:       {cache['chat_cells']} for the chat + {cache['side_cells']} for side sequences "
            f"(CFG, background) = {cache['kv_mib']:.0f} MiB"
        )
        print(f"saved states:   up to {cache['ram_budget_mib']} MiB of host memory (~{cache['state_mib']:.0f} MiB each at a full window)")
        bank = cache["bank_cells"]
        print(f"bank:           {f'{bank} side cells keep text that left the prompt' if bank else 'off'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
