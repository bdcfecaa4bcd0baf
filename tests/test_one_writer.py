"""One writer per data home: read-only commands beside a running Tavern (a streaming TUI)
change nothing; commands that write take the home lock."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from test_cli_chat import tavern  # noqa: E402  (importlib mode: sibling)

DATA = Path(__file__).parent / "data"


def snapshot(home: Path) -> dict[str, bytes]:
    chats = home / "chats"
    return {str(p.relative_to(chats)): p.read_bytes() for p in sorted(chats.rglob("*")) if p.is_file()}


@pytest.fixture
def streaming_home(home: Path):
    """A chat whose reply is being streamed (its sidecar holds half a reply), and another
    process holding the home lock, as a TUI in the middle of a reply does."""
    from tavern.session import Tavern
    from tavern.store import ChatMessage

    app = Tavern.open(home)
    session = app.open_chat("Mira")
    session.chat.append(ChatMessage(name="User", is_user=True, mes="Tell me about the green sails."))
    session.chat.begin_reply(ChatMessage(name="Mira", is_user=False, mes=""))
    session.chat.update_partial("The green sails belong to")
    session.chat._write_partial(force=True)
    assert session.chat.partial_path.exists()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from tavern.store.lock import acquire_home_lock; import time; "
            f"l = acquire_home_lock({str(home)!r}); print('held', flush=True); time.sleep(120)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        yield home, session.chat
    finally:
        holder.kill()
        holder.wait()


def test_read_only_commands_change_nothing_beside_a_streaming_tavern(streaming_home, tmp_path: Path) -> None:
    home, chat = streaming_home
    before = snapshot(home)
    commands = [
        ("prompt", "Mira"),
        ("export", "chat", "Mira", "--to", str(tmp_path / "out.md")),
        ("lore", "scan", "saltmere", "--character", "Mira"),
    ]
    for args in commands:
        r = tavern(home, *args)
        assert r.returncode == 0, (args, r.stderr)
        assert snapshot(home) == before, args  # not the recovered reply, not a repair: nothing
    # ...and the streaming Tavern saves its reply as if they had never run (no ChatChangedError).
    from tavern.store import ChatMessage

    chat.finish_reply(ChatMessage(name="Mira", is_user=False, mes="The green sails belong to smugglers."))
    assert chat[-1].mes == "The green sails belong to smugglers."


def test_prompt_for_a_character_without_a_chat_writes_none(home: Path) -> None:
    r = tavern(home, "prompt", "Mira")
    assert r.returncode == 0, r.stderr
    assert "Mira" in r.stdout
    assert not list((home / "chats").rglob("*.jsonl"))


def test_import_takes_the_home_lock(streaming_home) -> None:
    home, _chat = streaming_home
    before = snapshot(home)
    r = tavern(home, "import", str(DATA / "cards" / "real" / "Seraphina.png"))
    assert r.returncode == 1 and "another Tavern" in r.stderr
    assert not (home / "characters" / "Seraphina.png").exists() and snapshot(home) == before


# -- one writer for every file, one sanitizer for every file name -------------------------------
#
# Every file Tavern writes goes through tavern/store/atomic.py (temp file, fsync, rename; 0600
# for a new file, 0700 for a new folder; no temp file left on failure). The check reads the
# source: a write anywhere else fails it, unless it is listed below with its reason.

TAVERN = Path(__file__).resolve().parents[1] / "tavern"
WRITER = "store/atomic.py"

# (file under tavern/, what) -> why it may do that outside the writer.
ALLOWED_WRITES = {
    ("store/lock.py", "os.open(O_CREAT)"): "the lock file is opened in place for flock (0600, a pid)",
    ("store/chatstore.py", "os.rename"): "renames a whole chat file (rename, trash, restore): a move",
    ("cards/library.py", "os.replace"): "moves a whole card to the trash: a move, not a write",
    ("tui/terminal.py", "open(mode=w)"): "wraps the terminal's stdout descriptor, not a file",
}

_COPIES = {"copy", "copy2", "copyfile", "copytree"}


def _mode_of(call: ast.Call, position: int) -> str | None:
    node = call.args[position] if len(call.args) > position else None
    for kw in call.keywords:
        if kw.arg == "mode":
            node = kw.value
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _writes(call: ast.Call) -> str | None:
    """What kind of file write `call` is, or None."""
    func = call.func
    name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
    owner = func.value.id if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) else ""
    if name in ("write_text", "write_bytes"):
        return name
    if name == "mkdir":
        return "mkdir"
    if owner == "os" and name in ("replace", "rename"):
        return f"os.{name}"
    if owner == "shutil" and name in _COPIES:
        return "shutil.copy"
    if owner == "os" and name == "open":
        return "os.open(O_CREAT)" if "O_CREAT" in ast.dump(call) else None
    if name in ("open", "fdopen"):
        # open(path, mode) and os.fdopen(fd, mode): the mode is the 2nd argument; Path.open(mode).
        plain = isinstance(func, ast.Name) or owner in ("os", "io")
        mode = _mode_of(call, 1 if plain else 0)
        return "open(mode=w)" if mode and any(c in mode for c in "wax+") else None
    return None


def _sources() -> list[tuple[str, ast.Module]]:
    return [
        (path.relative_to(TAVERN).as_posix(), ast.parse(path.read_text(encoding="utf-8")))
        for path in sorted(TAVERN.rglob("*.py"))
    ]


def test_every_file_is_written_through_the_one_atomic_writer() -> None:
    found, used = [], set()
    for rel, tree in _sources():
        if rel == WRITER:
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                if "tempfile" in mods:
                    found.append(f"tavern/{rel}:{node.lineno}: imports tempfile")
            if not isinstance(node, ast.Call) or (kind := _writes(node)) is None:
                continue
            if (rel, kind) in ALLOWED_WRITES:
                used.add((rel, kind))
                continue
            hint = "make_dirs (0700)" if kind == "mkdir" else "tavern.store.atomic"
            found.append(f"tavern/{rel}:{node.lineno}: {kind}, not through {hint}")
    assert not found, "files written outside the one writer:\n" + "\n".join(found)
    stale = sorted(set(ALLOWED_WRITES) - used)
    assert not stale, f"allowed writes that no longer exist (remove them): {stale}"


def test_the_check_sees_the_writes_it_looks_for() -> None:
    """The static check itself: each kind of write it must catch, caught."""
    code = """
import os, shutil
from pathlib import Path
open(p, "w"); open(p, mode="ab"); Path(p).open("w"); os.fdopen(fd, "wb")
Path(p).write_text("x"); Path(p).write_bytes(b"x"); os.replace(a, b); shutil.copyfile(a, b)
os.open(p, os.O_WRONLY | os.O_CREAT, 0o644); Path(p).mkdir(parents=True)
open(p); open(p, "rb"); Path(p).open(); os.open(p, os.O_RDONLY)
"""
    kinds = [k for n in ast.walk(ast.parse(code)) if isinstance(n, ast.Call) and (k := _writes(n))]
    assert kinds.count("open(mode=w)") == 4 and "os.open(O_CREAT)" in kinds and "mkdir" in kinds
    assert {"write_text", "write_bytes", "os.replace", "shutil.copy"} <= set(kinds) and len(kinds) == 10


# A character class of the characters file names may not hold ("?<>:*|): a sanitizer of its own.
ALLOWED_SANITIZERS = {
    "store/names.py": "the one sanitizer",
}


def test_there_is_one_file_name_sanitizer() -> None:
    own = []
    for rel, tree in _sources():
        for node in ast.walk(tree):
            text = node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else ""
            if "<>" in text and "|" in text and ":" in text and rel not in ALLOWED_SANITIZERS:
                own.append(f"tavern/{rel}:{node.lineno}: {text!r}")
    assert not own, "file-name sanitizers besides tavern.store.names:\n" + "\n".join(own)


ODD_NAMES = [
    ".hidden", "Anna.", "  ..Mira.. ", "a/b\\c", 'Q?<>:*|"', "CON", "tab\there", "Сера\x7f", "", "...",
]


def test_every_store_names_files_with_the_one_sanitizer() -> None:
    """A character key, a chat file, an imported lorebook or preset and a persona made from the
    same odd names: one set of rules, so none starts with "." (a hidden file no list shows)."""
    from tavern.cards.library import key_for_name
    from tavern.importing import safe_stem
    from tavern.store.dates import chat_file_name
    from tavern.store.names import sanitize_file_name

    for name in ODD_NAMES:
        clean = sanitize_file_name(name, "")
        assert key_for_name(name) == (clean or "character")
        assert safe_stem(name) == (clean or "unnamed")
        assert chat_file_name(name).startswith(f"{clean or 'Chat'} - ")
        for made in (key_for_name(name), safe_stem(name), chat_file_name(name)):
            assert not made.startswith(".") and not made.endswith((".", " ")), (name, made)
            assert not set(made) & set('/\\?<>:*|"\t\x7f'), (name, made)
    assert sanitize_file_name(".hidden") == "hidden" and sanitize_file_name("CON") == "_CON"
