"""The library commands through the real CLI: import, show, export, lore scan, models, branch."""

from __future__ import annotations

import json
import re
from pathlib import Path

from test_cli_chat import FAST, chat_files, read_jsonl, tavern  # noqa: E402  (importlib mode: sibling)

from tavern.cards import read_card

DATA = Path(__file__).parent / "data"


def test_import_show_export_reimport_a_real_sillytavern_card(home: Path, tmp_path: Path) -> None:
    src = DATA / "cards" / "real" / "Seraphina.png"
    r = tavern(home, "import", str(src))
    assert r.returncode == 0, r.stderr
    assert "Seraphina" in r.stdout
    shown = json.loads(tavern(home, "card", "show", "Seraphina", "--json").stdout)
    assert shown["spec"] == "chara_card_v3" and shown["data"]["name"] == "Seraphina"
    assert shown["data"]["character_book"]["entries"]  # the embedded lorebook came along
    for target in (tmp_path / "out.png", tmp_path / "out.json"):
        r = tavern(home, "export", "card", "Seraphina", "--to", str(target))
        assert r.returncode == 0, r.stderr
        assert read_card(target) == read_card(src)  # every field survives the round trip
    # The exported PNG carries both chunks, as SillyTavern writes them.
    data = (tmp_path / "out.png").read_bytes()
    assert b"tEXtchara" in data and b"tEXtccv3" in data


def test_import_reports_each_bad_file_and_keeps_going(home: Path, tmp_path: Path) -> None:
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    r = tavern(home, "import", str(junk), str(DATA / "cards" / "real" / "CodingSensei.png"))
    assert r.returncode == 1
    assert "junk.png" in r.stderr and "Traceback" not in r.stderr
    assert "imported" in r.stdout  # the good card still came in
    listed = tavern(home, "characters", "--json")
    assert any(c["name"] == "Coding Sensei" for c in json.loads(listed.stdout))


def test_lore_scan_says_which_entries_fire_and_why(home: Path) -> None:
    tavern(home, "characters")  # first start: seeds the bundled lorebook
    r = tavern(
        home, "lore", "scan", "saltmere", "--text", "Is that the Kestrel moored at the skydock?", "--json"
    )
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    fired = {e["comment"]: e["reason"] for e in result["activated"]}
    assert any("Kestrel" in name for name in fired)
    assert any("kestrel" in why.lower() for why in fired.values())
    # Text that names no key: only the constant entry fires, and the report says why.
    quiet = tavern(home, "lore", "scan", "saltmere", "--text", "hello", "--json")
    assert quiet.returncode == 0, quiet.stderr
    result = json.loads(quiet.stdout)
    assert [(e["comment"], e["reason"]) for e in result["activated"]] == [
        ("The Brinewind Coast (always on)", "constant")
    ]
    text = tavern(home, "lore", "scan", "saltmere", "--text", "hello").stdout
    activated = text.split("ACTIVATED", 1)[1]
    assert re.search(r"The Brinewind Coast \(always on\)\s.*\bconstant$", activated, re.M)


def test_models_info_and_list(home: Path, model_path: Path) -> None:
    info = json.loads(tavern(home, "models", "info", str(model_path), "--json", "--ctx", "8192").stdout)
    assert info["architecture"] == "llama" and info["quant"] == "Q4_1"
    assert info["bundled_format"] == "smollm2" and info["memory"]["n_ctx"] == 8192
    assert tavern(home, "models", "list").stdout.count("SmolLM2") >= 1
    r = tavern(home, "models", "info", "/nope.gguf")
    assert r.returncode == 1 and "Traceback" not in r.stderr


def test_import_export_a_sillytavern_chat_and_branch_it(home: Path, tmp_path: Path) -> None:
    src = next((DATA / "chats" / "Seraphina").glob("*.jsonl"))
    r = tavern(home, "import", str(src), "--character", "Mira")
    assert r.returncode == 0, r.stderr
    [imported] = chat_files(home)
    out = tmp_path / "back.jsonl"
    assert tavern(home, "export", "chat", "Mira", "--chat", imported.stem, "--to", str(out)).returncode == 0
    assert read_jsonl(out) == read_jsonl(src)  # SillyTavern's chat comes back as it went in
    md = tmp_path / "chat.md"
    assert tavern(home, "export", "chat", "Mira", "--chat", imported.stem, "--to", str(md)).returncode == 0
    assert md.read_text().strip()
    r = tavern(home, "branch", "Mira", "--chat", imported.stem, "--at", "1")
    assert r.returncode == 0, r.stderr
    branch = [p for p in chat_files(home) if p != imported]
    assert len(branch) == 1 and len(read_jsonl(branch[0])) == 1 + 2
    assert read_jsonl(branch[0])[0]["chat_metadata"]["main_chat"] == imported.stem


def test_a_second_tavern_on_the_same_home_is_refused(home: Path) -> None:
    import subprocess
    import sys

    assert tavern(home, "characters").returncode == 0
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"from tavern.store.lock import acquire_home_lock; import time; l = acquire_home_lock({str(home)!r}); print('held', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        r = tavern(home, "chat", "Mira", "--message", "Hi", *FAST)
        assert r.returncode == 1 and "another Tavern" in r.stderr
    finally:
        holder.kill()


def test_a_command_group_without_its_action_prints_usage(home: Path) -> None:
    for group in ("card", "export", "lore", "models"):
        r = tavern(home, group, timeout=30)
        assert r.returncode == 2 and "usage: tavern " + group in r.stderr


def test_a_sillytavern_chat_is_imported_for_the_character_its_header_names(home: Path) -> None:
    src = next((DATA / "chats" / "Seraphina").glob("*.jsonl"))
    r = tavern(home, "import", str(src))  # no --character: the header says Seraphina
    assert r.returncode == 1 and "belongs to 'Seraphina', who is not in the library" in r.stderr
    assert not chat_files(home, "Seraphina")
    r = tavern(home, "import", str(DATA / "cards" / "real" / "Seraphina.png"), str(src))
    assert r.returncode == 0, r.stderr
    [imported] = chat_files(home, "Seraphina")
    assert read_jsonl(imported) == read_jsonl(src)
