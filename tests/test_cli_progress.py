"""`tavern chat` says what happens before the reply: the model loading and the prompt being
read, on one line of stderr rewritten in place, only when stderr is a terminal; `--json`
carries the prompt evaluation's figures."""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import sys
from pathlib import Path

FAST = ["--max-tokens", "8", "--ctx", "2048", "--seed", "7"]


def run(home: Path, *args: str, stderr: int | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "TAVERN_HOME": str(home)}
    return subprocess.run(
        [sys.executable, "-m", "tavern", *args],
        stdout=subprocess.PIPE,
        stderr=stderr if stderr is not None else subprocess.PIPE,
        text=True,
        env=env,
        timeout=300,
    )


def test_json_carries_the_prompt_evaluation_figures_and_a_pipe_gets_no_progress(home: Path) -> None:
    r = run(home, "chat", "Mira", "--message", "Hello", "--json", *FAST)
    assert r.returncode == 0, r.stderr
    turn = json.loads(r.stdout)
    figures = turn["prompt_eval"]
    assert figures["tokens"] == turn["stats"]["evaluated_tokens"] > 100  # the whole first prompt
    assert figures["seconds"] > 0 and figures["tokens_per_s"] > 0
    assert abs(figures["tokens_per_s"] - figures["tokens"] / figures["seconds"]) < 0.02 * figures["tokens_per_s"] + 1
    assert turn["stats"]["prompt_tps"] > 0
    # stderr is a pipe here (a log, CI): no status line, no carriage returns.
    assert "reading prompt" not in r.stderr and "loading model" not in r.stderr and "\r" not in r.stderr


def test_a_terminal_sees_loading_then_prompt_progress_cleared_before_the_reply(home: Path) -> None:
    master, slave = pty.openpty()
    try:
        r = run(home, "chat", "Mira", "--message", "Hello", *FAST, stderr=slave)
        os.close(slave)
        slave = -1
        out = b""
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the child's side is closed and everything was read
                break
            if not chunk:
                break
            out += chunk
    finally:
        if slave >= 0:
            os.close(slave)
        os.close(master)
    assert r.returncode == 0
    err = out.decode("utf-8")
    assert "\rloading model…\x1b[K" in err
    shown = re.findall(r"\rreading prompt (\d+)/(\d+)", err)
    assert shown and shown[0][0] == "0"  # at once, before any batch ran
    assert shown[-1][0] == shown[-1][1]  # ...and up to the whole prompt
    assert err.endswith("\r\x1b[K")  # cleared: the terminal is left with the reply alone
    assert r.stdout.strip() and "reading prompt" not in r.stdout and "\x1b" not in r.stdout
