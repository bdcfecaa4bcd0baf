"""`tavern import` through the real CLI: what it prints for each kind, the no-overwrite rule,
a torn chat line's warning, a folder. No model is loaded (import never needs one)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_cli_chat import tavern

from tavern.session import Tavern

DATA = Path(__file__).parent / "data"
SERAPHINA_CHAT = DATA / "chats" / "Seraphina" / "Seraphina - 2024-09-15@14h03m22s.jsonl"


@pytest.fixture
def data_home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    assert tavern(home, "characters").returncode == 0  # first start: seeds Mira and saltmere
    return home


def test_each_kind_prints_what_it_became(data_home: Path) -> None:
    files = [
        DATA / "cards" / "real" / "Seraphina.png",
        SERAPHINA_CHAT,
        DATA / "lore" / "Eldoria.json",
        DATA / "presets" / "sillytavern" / "TFS-with-Top-A.json",
        DATA / "cards" / "real" / "instruct_ChatML.json",
    ]
    r = tavern(data_home, "import", *map(str, files))
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [
        f"{files[0]}: character 'Seraphina' imported",
        f"{files[1]}: chat 'Seraphina - 2024-09-15@14h03m22s' imported for Seraphina (9 messages)",
        f"{files[2]}: lorebook 'Eldoria' imported (4 entries)",
        f"{files[3]}: sampler preset 'TFS-with-Top-A' imported; not supported: tfs",
        f"{files[4]}: instruct preset 'instruct_ChatML' imported",
    ]


def test_a_lorebook_named_like_the_bundled_one_is_saved_beside_it(data_home: Path, tmp_path: Path) -> None:
    bundled = data_home / "lorebooks" / "saltmere.json"
    before = bundled.read_bytes()
    incoming = tmp_path / "saltmere.json"
    incoming.write_text(json.dumps({"entries": {"0": {"uid": 0, "key": ["x"], "content": "X."}}}))
    r = tavern(data_home, "import", str(incoming))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == (
        f"{incoming}: lorebook 'saltmere_1' imported (1 entry; a lorebook named 'saltmere' exists: kept both)"
    )
    assert bundled.read_bytes() == before
    assert (
        json.loads((data_home / "lorebooks" / "saltmere_1.json").read_text())["entries"]["0"]["content"]
        == "X."
    )
    # The bundled book still answers to its name.
    assert Tavern.open(data_home).lorebooks.find("saltmere") == bundled


def test_a_torn_chat_line_is_printed_as_a_warning(data_home: Path, tmp_path: Path) -> None:
    torn = tmp_path / "torn.jsonl"
    torn.write_bytes(SERAPHINA_CHAT.read_bytes() + b'\n{"name": "Mira", "is_user": false, "mes": "Hal')
    r = tavern(data_home, "import", str(torn), "--character", "Mira")
    assert r.returncode == 0, r.stderr
    assert "chat 'torn' imported for Mira (9 messages)" in r.stdout
    [warning] = [line for line in r.stderr.splitlines() if line.startswith("tavern: warning:")]
    assert str(torn) in warning and "cut short" in warning


def test_a_folder_is_imported_and_a_bad_file_is_one_error_line(data_home: Path, tmp_path: Path) -> None:
    junk = tmp_path / "junk.json"
    junk.write_text('{"hello": "world"}')
    r = tavern(data_home, "import", str(DATA / "cards" / "real"), str(junk))
    assert r.returncode == 1
    assert r.stderr.splitlines() == [f"tavern: error: {junk}: not a card, lorebook, chat or preset"]
    assert len(r.stdout.splitlines()) == 6  # every file of the folder came in
    assert (data_home / "lorebooks" / "Eldoria.json").is_file()
    assert (data_home / "characters" / "Coding Sensei.png").is_file()
