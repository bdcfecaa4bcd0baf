"""Editing or deleting a message of a chat that another program changed since Tavern read it:
the chat is reloaded and the action retried on the same message, keeping the other program's
work; only a change to that very message is a conflict (one clear error, nothing lost).

The other program is a second real Python process writing the file through its own store
handle, as a second Tavern or a script would."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tavern.session import Tavern
from tavern.store import ChatMessage
from tavern.store.errors import ChatChangedError

REPO = Path(__file__).resolve().parents[2]


def other_program(path: Path, action: str) -> None:
    """Change the chat file from a separate process through a separate store handle."""
    code = (
        "import sys\n"
        "from tavern.store.chatfile import Chat\n"
        "from tavern.store import ChatMessage\n"
        "chat = Chat.open(sys.argv[1])\n"
        f"{action}\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(path)], capture_output=True, text=True, cwd=REPO, timeout=60, check=False
    )
    assert out.returncode == 0, out.stderr


def texts(path: Path) -> list[str]:
    lines = path.read_text(encoding="utf-8").splitlines()[1:]
    return [json.loads(line)["mes"] for line in lines]


@pytest.fixture
def session(tmp_path: Path):
    tavern = Tavern.open(tmp_path / "home")
    s = tavern.open_chat("Mira", new=True)
    for i in range(1, 5):
        s.chat.append(ChatMessage(name="User" if i % 2 else "Mira", is_user=bool(i % 2), mes=f"m{i}"))
    return s


APPEND = "chat.append(ChatMessage(name='User', is_user=True, mes='from elsewhere'))"


def test_edit_after_another_program_appended(session) -> None:
    path = session.chat.path
    greeting = texts(path)[0]
    other_program(path, APPEND)
    session.edit_message(2, "m2 edited")  # ChatChangedError before the fix
    assert texts(path) == [greeting, "m1", "m2 edited", "m3", "m4", "from elsewhere"]
    assert [m.mes for m in session.chat][-1] == "from elsewhere"  # the session sees it too
    assert any("changed by another program" in w for w in session.chat.warnings)


def test_delete_after_another_program_appended(session) -> None:
    path = session.chat.path
    greeting = texts(path)[0]
    other_program(path, APPEND)
    session.delete_message(3)
    assert texts(path) == [greeting, "m1", "m2", "m4", "from elsewhere"]
    # And again, now that the other program removed a message before the one deleted here:
    other_program(path, "chat.delete(1)")
    session.delete_message(3)  # "m4" as this session shows it, now at index 2 on disk
    assert texts(path) == [greeting, "m2", "from elsewhere"]


def test_hide_after_another_program_appended(session) -> None:
    path = session.chat.path
    other_program(path, APPEND)
    session.set_hidden(1, True)
    lines = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()[1:]]
    assert lines[1]["mes"] == "m1" and lines[1]["is_system"] is True
    assert lines[-1]["mes"] == "from elsewhere"


def test_editing_a_message_the_other_program_also_edited_is_one_clear_error(session) -> None:
    path = session.chat.path
    other_program(path, "m = chat[2]; m.mes = 'their edit'; chat.replace(2, m)")
    before = path.read_bytes()
    with pytest.raises(ChatChangedError) as err:
        session.edit_message(2, "my edit")
    assert "\n" not in str(err.value) and "message 3" in str(err.value)
    assert path.read_bytes() == before  # their edit stands
    assert session.chat[2].mes == "their edit"  # reloaded: the retry edits what is there now
    session.edit_message(2, "my edit")
    assert texts(path)[2] == "my edit"
