"""Tavern's files are the user's own (issue #26 items 6, 9, 10): a new data home, its folders
and every file in it are 0700/0600, a rewrite never loosens a file, a failed write leaves no
temporary file behind, and odd names (".hidden", "Anna.") still make files that are listed
and kept apart. Real files, real writers; the full disk is a real RLIMIT_FSIZE."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tavern.store.atomic import USER_FILE, atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
SERAPHINA = ROOT / "tests" / "data" / "cards" / "real" / "Seraphina.png"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def temp_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.name.endswith(".tmp"))


@pytest.fixture
def fresh_home(tmp_path: Path) -> Iterator[Path]:
    """A data home that does not exist yet: Tavern creates all of it."""
    old = os.umask(0o022)  # the usual umask, so "private" cannot come from the test's own
    try:
        yield tmp_path / "fresh" / "home"
    finally:
        os.umask(old)


def test_a_fresh_data_home_and_what_tavern_writes_in_it_are_the_users_own(fresh_home: Path) -> None:
    from tavern.session import Tavern

    app = Tavern.open(fresh_home)
    assert mode(fresh_home) == 0o700
    for sub in ("characters", "chats", "lorebooks", "presets", "memory", "backups", "trash"):
        assert mode(fresh_home / sub) == 0o700, sub

    cards = sorted((fresh_home / "characters").glob("*.png"))
    assert cards and {mode(c) for c in cards} == {0o600}  # the bundled cards, imported

    session = app.open_chat("Mira")
    assert mode(session.chat.path.parent) == 0o700 and mode(session.chat.path) == 0o600

    book = app.lorebooks.create("Harbour")
    assert mode(book) == 0o600

    key = app.cards.library.import_file(SERAPHINA)
    assert mode(app.cards.library.path(key)) == 0o600

    seeded = mode(fresh_home / "settings.toml")
    app.update_settings({"chat.user_name": "Anon"})
    assert mode(fresh_home / "settings.toml") == seeded  # a rewrite keeps the file's mode


def test_the_seeded_settings_and_lorebooks_are_the_users_own(fresh_home: Path) -> None:
    from tavern.session import Tavern

    Tavern.open(fresh_home)
    assert mode(fresh_home / "settings.toml") == 0o600
    assert {mode(p) for p in (fresh_home / "lorebooks").glob("*.json")} == {0o600}


def test_the_chroma_store_folder_is_the_users_own(tmp_path: Path) -> None:
    pytest.importorskip("chromadb")
    from tavern.memory.vector import VectorStore

    store = VectorStore(embedder=None, path=tmp_path / "home" / "memory" / "chroma")  # type: ignore[arg-type]
    store.connect()
    assert mode(tmp_path / "home" / "memory" / "chroma") == 0o700


def test_a_rewrite_keeps_a_files_mode_and_a_new_file_is_private(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        shared = tmp_path / "shared.json"
        shared.write_text("{}")
        shared.chmod(0o640)  # the user opened it to a group: a rewrite keeps that
        atomic_write_text(shared, '{"a": 1}')
        assert mode(shared) == 0o640 and shared.read_text() == '{"a": 1}'

        private = tmp_path / "private.json"
        atomic_write_text(private, "{}")
        assert mode(private) == 0o600
        atomic_write_text(private, '{"b": 2}')
        assert mode(private) == 0o600  # never loosened to the umask's 0644 on a rewrite

        export = tmp_path / "export.md"
        atomic_write_text(export, "# chat", mode=USER_FILE)
        assert mode(export) == 0o644  # an export outside the home: the usual permissions

        keys = tmp_path / "keys.toml"
        keys.write_text("")
        keys.chmod(0o644)
        atomic_write_text(keys, 'a = "k"', keep_mode=False)
        assert mode(keys) == 0o600
    finally:
        os.umask(old)


# Each writer in a child process whose file-size limit is 16 KiB: the kernel refuses the rest of
# the write with EFBIG, as a full disk refuses it with ENOSPC (works for any user, root too).
_FULL_DISK = r"""
import json, resource, signal, sys
from pathlib import Path
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (16384, 16384))
home = Path(sys.argv[1])
big = "word " * 20_000
results = {}

def attempt(name, write):
    try:
        write()
        results[name] = "written"
    except Exception as err:
        results[name] = f"{type(err).__name__}: {err}"

from tavern.cards.library import CardLibrary
from tavern.engines.presets import save_preset
from tavern.engines.samplers import SamplerSettings
from tavern.lore import Lorebook, LoreEntry, save_lorebook
from tavern.personas import Persona, PersonaStore
from tavern.backends import BackendStore
from tavern.store.atomic import atomic_write_text

attempt("card", lambda: CardLibrary(home / "characters").import_file(sys.argv[2]))
book = Lorebook(name="Big", entries=[LoreEntry(uid=0, key=["x"], content=big)])
attempt("lorebook", lambda: save_lorebook(book, home / "lorebooks" / "Big.json"))
sampler = SamplerSettings(dry_sequence_breakers=[big])
attempt("preset", lambda: save_preset(sampler, home / "presets" / "Big.json"))
attempt("persona", lambda: PersonaStore(home / "personas").save(Persona("Big", big)))
attempt("backend", lambda: BackendStore(home).add("srv" * 6000, "openai-chat", "http://127.0.0.1:9"))
attempt("settings", lambda: atomic_write_text(home / "settings.toml", big))
print(json.dumps(results))
"""


def test_a_full_disk_leaves_no_temporary_file_behind(tmp_path: Path) -> None:
    home = tmp_path / "home"
    for sub in ("characters", "lorebooks", "presets"):
        (home / sub).mkdir(parents=True)
    out = subprocess.run(
        [sys.executable, "-c", _FULL_DISK, str(home), str(SERAPHINA)],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr
    results = json.loads(out.stdout)
    assert all(r != "written" for r in results.values()), results  # each one hit the limit...
    assert "too large" in results["card"] or "File too large" in results["card"], results
    assert temp_files(home) == []  # ...and none left a temporary file (the card import did)
    assert not any(p.is_file() for p in home.rglob("*")), sorted(home.rglob("*"))


def test_a_card_whose_name_starts_with_a_dot_gets_a_chat_that_is_listed_and_continued(tmp_path: Path) -> None:
    from tavern.cards.model import Card
    from tavern.session import Tavern

    app = Tavern.open(tmp_path / "home")
    app.cards.library.save("hidden", Card(name=".hidden", first_mes="Hello from the dark."))
    first = app.open_chat("hidden")
    assert not first.chat.path.name.startswith(".")
    assert [c.name for c in app.chats.list("hidden")] == [first.chat.name]
    again = app.open_chat("hidden")  # the latest chat is continued, not a new one made
    assert again.chat.path == first.chat.path
    checkpoint = app.chats.store.checkpoint(first.chat, 0, ".before the storm")
    assert checkpoint.name.startswith("before the storm - ")
    assert checkpoint.name in {c.name for c in app.chats.list("hidden")}


def test_personas_anna_and_anna_dot_are_two_personas_in_two_files(tmp_path: Path) -> None:
    from tavern.personas import Persona, PersonaStore

    store = PersonaStore(tmp_path / "personas")
    store.save(Persona("Anna", "a sailor"))
    store.save(Persona("Anna.", "a lighthouse keeper"))
    assert [(p.name, p.description) for p in store.list()] == [
        ("Anna", "a sailor"),
        ("Anna.", "a lighthouse keeper"),
    ]
    assert len(list((tmp_path / "personas").glob("*.json"))) == 2
    store.save(Persona("Anna", "a captain now"))  # saving one again changes only that one
    store.delete("Anna.")
    assert [(p.name, p.description) for p in store.list()] == [("Anna", "a captain now")]
    assert not any(p.name.startswith(".") for p in (tmp_path / "personas").iterdir())
