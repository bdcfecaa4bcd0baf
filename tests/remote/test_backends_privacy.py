"""backends.toml and keys.toml are valid TOML whatever a profile holds (written with tomlkit),
private (0600), and a password in a backend URL is shown as *** wherever a URL is shown: by
`tavern backends add` and `list`, and in the one error line of a failed connection."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tavern.backends import BackendStore
from tavern.errors import ConfigError

PASSWORD = "s3cret-Pa55"


def tav(home: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TAVERN_HOME": str(home)}
    return subprocess.run(
        [sys.executable, "-m", "tavern", *args], env=env, capture_output=True, text=True, timeout=120
    )


def closed_port() -> int:
    """A port on 127.0.0.1 nothing listens on: connecting is refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_profiles_with_quotes_backslashes_and_control_characters_stay_valid_toml(tmp_path: Path) -> None:
    # A hand-edited (or older) file may hold any string TOML can escape.
    (tmp_path / "backends.toml").write_text(
        '["odd\\u0001 \\"name\\""]\napi = "openai-chat"\nurl = "http://127.0.0.1:9/v1?q=\\u0007\\\\"\n'
        'model = "m\\tx"\nformat = ""\nignored = ["a\\"b"]\n',
        encoding="utf-8",
    )
    store = BackendStore(tmp_path)
    store.add('my "fast" \\ srv', "textgen", 'http://127.0.0.1:9/"v1"', key="k\"e\\y")
    data = tomllib.loads((tmp_path / "backends.toml").read_text(encoding="utf-8"))
    assert data['odd\x01 "name"']["url"] == "http://127.0.0.1:9/v1?q=\x07\\"
    assert data['odd\x01 "name"']["model"] == "m\tx" and data['odd\x01 "name"']["ignored"] == ['a"b']
    assert data['my "fast" \\ srv']["url"] == 'http://127.0.0.1:9/"v1"'
    profiles = BackendStore(tmp_path).profiles()
    assert profiles['my "fast" \\ srv'].key == 'k"e\\y'
    assert set(profiles) == {'odd\x01 "name"', 'my "fast" \\ srv'}
    keys = tmp_path / "keys.toml"
    assert tomllib.loads(keys.read_text(encoding="utf-8")) == {'my "fast" \\ srv': 'k"e\\y'}
    assert stat.S_IMODE(keys.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "backends.toml").stat().st_mode) in (0o600, 0o644)  # kept as written


def test_a_control_character_typed_in_a_name_or_url_is_one_clear_error(tmp_path: Path) -> None:
    store = BackendStore(tmp_path)
    store.add("srv", "openai-chat", "http://127.0.0.1:9")
    before = (tmp_path / "backends.toml").read_bytes()
    for name, url in (("tab\tsrv", "http://127.0.0.1:9"), ("srv2", "http://127.0.0.1:9/\x1b[2J")):
        with pytest.raises(ConfigError, match="control characters"):
            store.add(name, "openai-chat", url)
    assert (tmp_path / "backends.toml").read_bytes() == before  # nothing lost, nothing half written


def test_new_profile_files_are_private_and_a_loose_key_file_is_made_private(tmp_path: Path) -> None:
    store = BackendStore(tmp_path)
    store.add("srv", "openai-chat", "http://127.0.0.1:9", key="sk-1")
    assert stat.S_IMODE((tmp_path / "backends.toml").stat().st_mode) == 0o600
    (tmp_path / "keys.toml").chmod(0o644)  # as some older version or a careless copy left it
    store.add("srv2", "openai-chat", "http://127.0.0.1:9", key="sk-2")
    assert stat.S_IMODE((tmp_path / "keys.toml").stat().st_mode) == 0o600


def test_a_password_in_a_backend_url_is_never_shown(tmp_path: Path) -> None:
    home = tmp_path / "home"
    url = f"http://alice:{PASSWORD}@127.0.0.1:{closed_port()}/v1"

    added = tav(home, "backends", "add", "srv", "--api", "openai-chat", "--url", url)
    assert added.returncode == 0, added.stderr
    listed = tav(home, "backends", "list")
    as_json = tav(home, "backends", "list", "--json")
    for out in (added, listed, as_json):
        assert PASSWORD not in out.stdout + out.stderr
    assert "alice:***@127.0.0.1" in listed.stdout
    assert json.loads(as_json.stdout)[0]["url"].startswith("http://alice:***@127.0.0.1:")

    tested = tav(home, "backends", "test", "srv")  # a real connection, refused
    assert tested.returncode == 1
    assert "cannot connect" in tested.stderr and "alice:***@" in tested.stderr
    assert PASSWORD not in tested.stdout + tested.stderr and tested.stderr.strip().count("\n") == 0

    assert tav(home, "backends", "use", "srv").returncode == 0
    chatted = tav(home, "chat", "Mira", "--message", "Hello?")  # the chat's error line
    assert chatted.returncode == 1 and "cannot connect" in chatted.stderr and "alice:***@" in chatted.stderr
    assert PASSWORD not in chatted.stdout + chatted.stderr

    refused = tav(home, "backends", "add", "bad", "--api", "openai-chat", "--url", f"ftp://bob:{PASSWORD}@h")
    assert refused.returncode != 0 and PASSWORD not in refused.stderr and "bob:***@h" in refused.stderr
    # The profile itself keeps the URL as typed: the server still gets the password.
    assert BackendStore(home).get("srv").url == url
