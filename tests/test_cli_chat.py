"""Headless chat through the real `tavern` command, on the real model and a real data home."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

FAST = ["--max-tokens", "24", "--ctx", "2048", "--seed", "7"]


def tavern(
    home: Path, *args: str, stdin: str | None = None, timeout: int = 180
) -> subprocess.CompletedProcess:
    env = {**os.environ, "TAVERN_HOME": str(home)}
    return subprocess.run(
        [sys.executable, "-m", "tavern", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


def chat_files(home: Path, key: str = "Mira") -> list[Path]:
    return sorted((home / "chats" / key).glob("*.jsonl"))


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_one_message_streams_a_reply_with_stats_and_saves_the_chat(home: Path) -> None:
    r = tavern(home, "chat", "Mira", "--message", "Hello", "--json", *FAST)
    assert r.returncode == 0, r.stderr
    turn = json.loads(r.stdout)
    assert turn["reply"].strip()
    for key in ("prompt_tokens", "cached_tokens", "evaluated_tokens", "ttft_ms", "gen_tokens", "gen_tps"):
        assert key in turn["stats"]
    assert turn["stats"]["prompt_tokens"] > 0 and turn["stats"]["gen_tokens"] > 0
    [path] = chat_files(home)
    lines = read_jsonl(path)
    header, messages = lines[0], lines[1:]
    assert header["character_name"] == "Mira" and header["user_name"] == "User"
    assert "chat_metadata" in header and "create_date" in header
    assert [m["is_user"] for m in messages] == [False, True, False]  # greeting, Hello, reply
    assert messages[1]["mes"] == "Hello"
    assert messages[2]["mes"] == turn["reply"]
    assert all({"name", "is_user", "send_date", "mes"} <= set(m) for m in messages)

    # The next run continues the same chat; --new starts another one.
    r = tavern(home, "chat", "Mira", "--message", "How are you?", *FAST)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip()
    assert len(read_jsonl(path)) == 1 + 5
    r = tavern(home, "chat", "Mira", "--new", "--message", "Hi again", *FAST)
    assert r.returncode == 0, r.stderr
    assert len(chat_files(home)) == 2


def test_piped_lines_are_turns_in_one_process_with_the_cache_reused(home: Path) -> None:
    r = tavern(
        home, "chat", "Mira", "--json", *FAST, stdin="Hello there.\nWhat is on the menu?\nThank you!\n"
    )
    assert r.returncode == 0, r.stderr
    turns = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(turns) == 3
    assert all(t["reply"].strip() for t in turns)
    for t in turns[1:]:
        assert t["stats"]["cached_tokens"] > 0
        assert t["stats"]["evaluated_tokens"] < t["stats"]["prompt_tokens"]
    [path] = chat_files(home)
    assert len(read_jsonl(path)) == 1 + 1 + 6


@pytest.mark.parametrize(
    "args, stdin, needle",
    [
        (["chat", "Nobody", "--message", "Hi"], None, "Nobody"),
        (["chat", "Mira", "--message", "   "], None, "empty message"),
        (["chat", "Mira"], "", "no message"),
        (["--model", "/nonexistent/model.gguf", "chat", "Mira", "--message", "Hi"], None, "not found"),
    ],
)
def test_bad_input_is_one_line_on_stderr(home: Path, args: list[str], stdin: str | None, needle: str) -> None:
    r = tavern(home, *args, stdin=stdin)
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert needle in r.stderr


def test_a_corrupt_model_loses_nothing_already_written(home: Path, tmp_path: Path) -> None:
    assert tavern(home, "chat", "Mira", "--message", "Hello", *FAST).returncode == 0
    [path] = chat_files(home)
    before = path.read_bytes()
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + os.urandom(2000))
    r = tavern(home, "--model", str(bad), "chat", "Mira", "--message", "Are you there?")
    assert r.returncode == 1
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert path.read_bytes() == before  # the model failed before anything was written


def test_unwritable_data_home_is_one_clear_line(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    r = tavern(blocker / "home", "chat", "Mira", "--message", "Hi")
    assert r.returncode == 1
    assert "not writable" in r.stderr and "Traceback" not in r.stderr


def test_an_engine_failure_keeps_the_users_message(home: Path) -> None:
    # A context too small for the card itself: the engine refuses the prompt mid-turn.
    r = tavern(
        home,
        "chat",
        "Captain Ilse Varga",
        "--message",
        "Ready when you are.",
        "--ctx",
        "256",
        "--max-tokens",
        "16",
    )
    assert r.returncode == 1
    assert "your message was saved" in r.stderr and "Traceback" not in r.stderr
    [path] = chat_files(home, "Captain Ilse Varga")
    messages = read_jsonl(path)[1:]
    assert messages[-1]["mes"] == "Ready when you are." and messages[-1]["is_user"]


def test_ctrl_c_mid_reply_stops_it_and_keeps_the_partial_reply(home: Path) -> None:
    import signal

    env = {**os.environ, "TAVERN_HOME": str(home)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tavern",
            "chat",
            "Mira",
            "--message",
            "Tell me a very long story.",
            "--max-tokens",
            "400",
            "--ctx",
            "2048",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # as in a terminal
    )
    assert proc.stdout is not None
    shown = os.read(proc.stdout.fileno(), 20)  # the reply is streaming (raw read: nothing buffered)
    proc.send_signal(signal.SIGINT)
    rest, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert b"interrupted" in err and b"Traceback" not in err
    printed = (shown + rest).decode().strip()
    [path] = chat_files(home)
    last = read_jsonl(path)[-1]
    assert not last["is_user"] and last["mes"] == printed
    assert last["extra"]["tavern"]["stop_reason"] == "cancelled"
    assert 0 < last["extra"]["tavern"]["gen_tokens"] < 400


def test_background_memory_work_stops_before_the_process_exits(home: Path) -> None:
    """`tavern chat` ends (here on an engine error, within seconds) while long-term memory is
    still indexing the chat in a background thread, inside torch and Chroma. Left running while
    Python shuts down, such a thread can kill the process with SIGSEGV after the error line was
    printed (CI saw exit -11 here once); the command now stops it first."""
    import threading

    from tavern.cli import main

    rc = main(["chat", "Captain Ilse Varga", "--message", "Ready when you are.", "--ctx", "256", "--max-tokens", "16"])
    assert rc == 1  # the card alone is over the context: the engine refused the prompt
    assert not [t for t in threading.enumerate() if t.name == "tavern-memory"]


def test_a_message_the_disk_refuses_says_it_was_not_saved(home: Path) -> None:
    """The process ends with the error, so the CLI says the message was not saved (the app,
    which keeps it in memory, says "save again"). A real kernel refusal: RLIMIT_FSIZE."""
    import resource

    assert tavern(home, "chat", "Mira", "--message", "Hello", *FAST).returncode == 0  # home, probe, chat
    before = [p.read_bytes() for p in chat_files(home)]
    limit = 64 * 1024

    def small_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    env = {**os.environ, "TAVERN_HOME": str(home)}
    r = subprocess.run(
        [sys.executable, "-m", "tavern", "chat", "Mira", "--message", "word " * 20_000, *FAST],
        capture_output=True, text=True, env=env, timeout=180, preexec_fn=small_files,
    )
    assert r.returncode == 1 and "Traceback" not in r.stderr
    line = r.stderr.strip().splitlines()[-1]
    assert line.startswith("tavern: error: could not save chat 'Mira - ") and "too large" in line
    assert line.endswith("the message was not saved: free some space, then run the command again")
    assert "kept in memory" not in r.stderr
    assert [p.read_bytes() for p in chat_files(home)] == before  # the chat file is as it was
