"""Over real SSH: a private sshd on 127.0.0.1 (its own host key, config and port, started and
stopped by the test), `ssh -tt` into it from a tmux pane at 80x24, and `tavern` on the other
side: the library shows, typing searches, a chat opens."""

from __future__ import annotations

import getpass
import os
import shlex
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from e2e.tmux_driver import Tmux

SSHD = shutil.which("sshd") or ("/usr/sbin/sshd" if Path("/usr/sbin/sshd").exists() else None)
pytestmark = pytest.mark.skipif(
    SSHD is None or shutil.which("tmux") is None or shutil.which("ssh") is None,
    reason="needs sshd, ssh and tmux (apt-get install openssh-server tmux)",
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, timeout: float = 20) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise AssertionError("sshd never listened")


def test_tavern_over_ssh_in_tmux(tmp_path: Path, home: Path) -> None:
    ssh_dir = tmp_path / "ssh"
    ssh_dir.mkdir(mode=0o700)
    for name in ("host", "client"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(ssh_dir / name)], check=True)
    (ssh_dir / "authorized_keys").write_text((ssh_dir / "client.pub").read_text())
    os.chmod(ssh_dir / "authorized_keys", 0o600)
    port = _free_port()
    user = getpass.getuser()
    config = ssh_dir / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {ssh_dir / 'host'}\n"
        f"AuthorizedKeysFile {ssh_dir / 'authorized_keys'}\nPasswordAuthentication no\n"
        f"KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nPermitRootLogin yes\n"
        f"PidFile {ssh_dir / 'sshd.pid'}\nAcceptEnv LANG LC_*\n"
    )
    try:
        Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege separation folder
    except PermissionError:
        pytest.skip("sshd needs /run/sshd, which only root can make here")
    sshd = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stderr=subprocess.DEVNULL)
    try:
        _wait_port(port)
        remote = (
            f"cd {shlex.quote(os.getcwd())} && TAVERN_HOME={shlex.quote(str(home))} TAVERN_GRAPHICS=0 "
            f"PYTHONPATH={shlex.quote(os.getcwd())} TERM=xterm-256color "
            f"{shlex.quote(sys.executable)} -m tavern --model {shlex.quote(str(home / 'none.gguf'))}"
        )
        with Tmux(80, 24) as tmux:
            tmux.start(
                [
                    "ssh",
                    "-tt",
                    "-p",
                    str(port),
                    "-i",
                    str(ssh_dir / "client"),
                    "-o",
                    "StrictHostKeyChecking=no",
                    "-o",
                    f"UserKnownHostsFile={ssh_dir / 'known_hosts'}",
                    "-o",
                    "LogLevel=ERROR",
                    f"{user}@127.0.0.1",
                    remote,
                ]
            )
            tmux.wait_for(lambda s: "2 characters" in s, timeout=90)
            tmux.keys("Mira", literal=True)
            tmux.wait_for(lambda s: "1 of 2 characters" in s)
            tmux.keys("Enter")
            # The chat: Mira's greeting and the composer, through the SSH session.
            tmux.wait_for(lambda s: "Message Mira" in s and "dripping" in s)
            tmux.keys("C-q")
    finally:
        sshd.terminate()
        sshd.wait(10)
