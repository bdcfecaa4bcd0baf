"""A card's terminal escapes through the real `tavern` commands: shown as marks, never sent raw
(issue #26). OSC 52 would write the user's clipboard, `ESC [ 2J` clear the screen."""

from __future__ import annotations

import json
from pathlib import Path

from test_cli_chat import FAST, chat_files, read_jsonl, tavern  # noqa: E402  (importlib mode: sibling)

from tavern.session import Tavern
from tavern.store import ChatMessage
from tavern.textsafe import terminal_safe

REPO = Path(__file__).resolve().parents[1]
OSC52 = "\x1b]52;c;SGVsbG8=\x07"
CLEAR = "\x1b[2J"
CSI8 = "\x9b2J"  # the 8-bit CSI: a C1 control to terminals that read them in UTF-8
RLO = "\u202e"  # right-to-left override
# What a terminal would act on: ESC, BEL, every other C0 control but newline and tab, DEL, C1, bidi.
CONTROLS = (*range(0x20), 0x7F, *range(0x80, 0xA0), *range(0x202A, 0x202F), *range(0x2066, 0x206A))
RAW = {chr(c) for c in CONTROLS} - {"\n", "\t"}
OSC52_SHOWN = "␛]52;c;SGVsbG8=␇"
CLEAR_SHOWN = "␛[2J"


def hostile_card(folder: Path) -> Path:
    data = {
        "name": f"Eve{OSC52}{CLEAR}",
        "description": f"{{{{char}}}} is a spy. {OSC52} {CLEAR} {CSI8} {RLO}evil",
        "personality": f"sly{CLEAR}",
        "scenario": "",
        "first_mes": f"Hello there {OSC52} and {CLEAR}.",
        "mes_example": "",
        "creator_notes": "",
        "creator": f"mallory{CLEAR}",
        "tags": [f"spy{OSC52}"],
        "system_prompt": "",
        "post_history_instructions": "",
        "alternate_greetings": [],
        "extensions": {},
    }
    path = folder / "eve.json"
    path.write_text(json.dumps({"spec": "chara_card_v2", "spec_version": "2.0", "data": data}))
    return path


def imported(home: Path, tmp_path: Path) -> str:
    """Imports the card through `tavern import`; returns the key the library gave it."""
    r = tavern(home, "import", str(hostile_card(tmp_path)))
    assert r.returncode == 0, r.stderr
    listed = json.loads(tavern(home, "characters", "--json").stdout)
    [entry] = [e for e in listed if e["name"].startswith("Eve")]
    return entry["key"]


def assert_shown_not_sent(text: str) -> None:
    raw = sorted({c for c in text if c in RAW})
    assert not raw, f"raw control characters reached the terminal: {raw!r}"


def test_characters_and_card_show_print_the_escapes_as_marks(home: Path, tmp_path: Path) -> None:
    key = imported(home, tmp_path)
    r = tavern(home, "characters")
    assert r.returncode == 0, r.stderr
    assert_shown_not_sent(r.stdout)
    assert f"Eve{OSC52_SHOWN}{CLEAR_SHOWN}" in r.stdout and f"spy{OSC52_SHOWN}" in r.stdout

    r = tavern(home, "card", "show", key)
    assert r.returncode == 0, r.stderr
    assert_shown_not_sent(r.stdout)
    for shown in (f"Eve{OSC52_SHOWN}{CLEAR_SHOWN}", f"mallory{CLEAR_SHOWN}", f"spy{OSC52_SHOWN}"):
        assert shown in r.stdout  # the name, creator and tags line
    assert f"{OSC52_SHOWN} {CLEAR_SHOWN} <U+009B>2J <U+202E>evil" in r.stdout  # the description
    assert f"Hello there {OSC52_SHOWN} and {CLEAR_SHOWN}." in r.stdout  # the greeting

    # A card file shown straight from disk goes through the same gate.
    r = tavern(home, "card", "show", str(tmp_path / "eve.json"))
    assert_shown_not_sent(r.stdout)
    assert f"Eve{OSC52_SHOWN}" in r.stdout

    # --json is exact: the same text once parsed, with every control escaped by JSON itself.
    r = tavern(home, "characters", "--json")
    assert_shown_not_sent(r.stdout.rstrip("\n"))
    [eve] = [e for e in json.loads(r.stdout) if e["key"] == key]
    assert eve["name"] == f"Eve{OSC52}{CLEAR}" and eve["tags"] == [f"spy{OSC52}"]
    r = tavern(home, "card", "show", key, "--json")
    assert_shown_not_sent(r.stdout.rstrip("\n"))
    assert json.loads(r.stdout)["data"]["description"].endswith(f"{OSC52} {CLEAR} {CSI8} {RLO}evil")


def test_prompt_shows_the_cards_escapes_as_marks(home: Path, tmp_path: Path) -> None:
    key = imported(home, tmp_path)
    r = tavern(home, "prompt", key)
    assert r.returncode == 0, r.stderr
    assert_shown_not_sent(r.stdout)
    assert f"{OSC52_SHOWN} {CLEAR_SHOWN} <U+009B>2J <U+202E>evil" in r.stdout  # the description
    r = tavern(home, "prompt", key, "--json")
    assert_shown_not_sent(r.stdout.rstrip("\n"))
    assert f"{OSC52} {CLEAR} {CSI8} {RLO}evil" in json.loads(r.stdout)["prompt"]  # exact


def test_text_and_markdown_exports_show_the_escapes_jsonl_keeps_them(home: Path, tmp_path: Path) -> None:
    key = imported(home, tmp_path)
    app = Tavern.open(home)
    chat = app.chats.new(key, app.cards.find(key)[1])  # the greeting is its first message
    chat.append(ChatMessage(name="User", is_user=True, mes=f"What is {OSC52} this {CLEAR}?\r\nTell me."))
    for suffix in (".txt", ".md"):
        out = tmp_path / f"chat{suffix}"
        r = tavern(home, "export", "chat", key, "--to", str(out))
        assert r.returncode == 0, r.stderr
        assert_shown_not_sent(r.stdout)
        text = out.read_text(encoding="utf-8")  # a file people `cat`
        assert_shown_not_sent(text)
        assert f"Hello there {OSC52_SHOWN} and {CLEAR_SHOWN}." in text
        assert f"What is {OSC52_SHOWN} this {CLEAR_SHOWN}?\nTell me." in text
        assert f"Eve{OSC52_SHOWN}{CLEAR_SHOWN}" in text  # the speaker
    out = tmp_path / "chat.jsonl"
    assert tavern(home, "export", "chat", key, "--to", str(out)).returncode == 0
    assert read_jsonl(out)[-1]["mes"] == f"What is {OSC52} this {CLEAR}?\r\nTell me."  # byte for byte


def escape_preset(home: Path) -> None:
    """The bundled Deterministic preset (greedy) with a SillyTavern logit bias towards ESC: the
    small model then copies the escapes of the chat's earlier replies into its own, streaming
    ESC as a token of its own and `[2J` after it. Loops off: the repeated line is the point."""
    preset = json.loads((REPO / "presets" / "Deterministic.json").read_text(encoding="utf-8"))
    preset["logit_bias"] = [{"text": "{\x1b}", "value": 4}]
    (home / "presets").mkdir(exist_ok=True)
    (home / "presets" / "Escapes.json").write_text(json.dumps(preset), encoding="utf-8")
    (home / "settings.toml").write_text(
        '[generation]\npreset = "Escapes"\n\n[loops]\nenabled = false\n\n[memory]\nenabled = false\n',
        encoding="utf-8",
    )


def test_chat_streams_a_reply_with_escapes_as_marks(home: Path, tmp_path: Path) -> None:
    """The reply is the real model's; the stream shows each ESC it wrote as a mark, even one that
    came as a token apart from the rest of its sequence, and the chat file keeps what it wrote."""
    escape_preset(home)
    key = imported(home, tmp_path)
    app = Tavern.open(home)
    chat = app.chats.new(key, app.cards.find(key)[1])
    line = f"Beep {CLEAR} boop {OSC52} done."
    for _ in range(5):
        chat.append(ChatMessage(name="User", is_user=True, mes="Say the line."))
        chat.append(ChatMessage(name=f"Eve{OSC52}{CLEAR}", is_user=False, mes=line))
    r = tavern(home, "chat", key, "--message", "Say the line.", *FAST)
    assert r.returncode == 0, r.stderr
    [path] = chat_files(home, key)
    reply = read_jsonl(path)[-1]["mes"]
    assert "\x1b" in reply, f"the model wrote no escape this time: {reply!r}"
    assert_shown_not_sent(r.stdout)
    assert_shown_not_sent(r.stderr)
    assert r.stdout.count("␛") == reply.count("\x1b")  # each one the model wrote is on screen, as a mark
    assert terminal_safe(reply).strip() in r.stdout
