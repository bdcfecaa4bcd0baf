"""A real terminal for tests and benchmarks: tmux on a private socket, at a fixed size.

`Tmux.start(cmd, env)` runs a command in a detached 80x24 session; `screen()` reads the pane
as text; `keys(...)` types; `wait_for(text)` polls the pane. `close()` kills the private
server (always: use it as a context manager)."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import time


class Tmux:
    def __init__(self, width: int = 80, height: int = 24) -> None:
        if shutil.which("tmux") is None:
            raise RuntimeError("tmux is not installed (apt-get install tmux)")
        self.socket = f"tavern-test-{os.getpid()}-{time.monotonic_ns()}"
        self.width, self.height = width, height

    def _run(self, *args: str) -> str:
        out = subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True, text=True)
        return out.stdout

    def start(self, command: list[str], env: dict[str, str] | None = None) -> None:
        env_args = [f"{k}={shlex.quote(v)}" for k, v in (env or {}).items()]
        line = " ".join(["env", *env_args, *map(shlex.quote, command)]) if env_args else shlex.join(command)
        subprocess.run(
            [
                "tmux",
                "-L",
                self.socket,
                "-f",
                "/dev/null",
                "new-session",
                "-d",
                "-s",
                "t",
                "-x",
                str(self.width),
                "-y",
                str(self.height),
                line,
            ],
            check=True,
            env={**os.environ, "TERM": "xterm-256color"},
        )
        self._run("set-option", "-t", "t", "remain-on-exit", "on")

    def screen(self) -> str:
        return self._run("capture-pane", "-p", "-t", "t")

    def keys(self, *keys: str, literal: bool = False) -> None:
        self._run("send-keys", "-t", "t", *(["-l"] if literal else []), *keys)

    def wait_for(self, predicate, timeout: float = 60.0, interval: float = 0.01) -> str:
        end = time.monotonic() + timeout
        while True:
            text = self.screen()
            if predicate(text):
                return text
            if time.monotonic() > end:
                raise AssertionError(f"the pane never showed what was expected; it shows:\n{text}")
            time.sleep(interval)

    def close(self) -> None:
        self._run("kill-server")

    def __enter__(self) -> Tmux:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
