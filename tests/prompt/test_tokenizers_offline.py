"""tiktoken counts OpenAI-style tokens with no network at all."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_tiktoken_works_offline_in_a_fresh_cache(tmp_path: Path) -> None:
    # A child process with an empty cache and every network route refused: any download attempt
    # raises, so a pass proves the BPE files came from the installed package.
    code = """
import socket
def refuse(*a, **k):
    raise OSError("network disabled in this test")
socket.socket.connect = refuse
socket.create_connection = refuse
from tavern.prompt.tokenizers import tiktoken_encoding, count_tiktoken
enc = tiktoken_encoding("cl100k_base")
assert enc.encode("hello world") == [15339, 1917], enc.encode("hello world")
assert tiktoken_encoding("o200k_base").decode(tiktoken_encoding("o200k_base").encode("Привет, мир")) == "Привет, мир"
print(count_tiktoken("The Rusty Lantern is warm tonight.", "gpt-4"))
"""
    env = {"TIKTOKEN_CACHE_DIR": str(tmp_path / "tk"), "PATH": "/usr/bin:/bin"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert int(r.stdout.strip()) == 8
