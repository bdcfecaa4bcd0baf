"""Numbers no float holds (a 400-digit integer, Infinity) in a chat file read as unset or as
damaged values, never a crash on open (#26's hostile-input rule)."""

from __future__ import annotations

from pathlib import Path

from tavern.store import ChatStore
from tavern.store.metadata import ChatMeta

HUGE = "1" + "0" * 400


def _write(folder: Path, header: str, message: str) -> Path:
    chat = folder / "Mira" / "huge.jsonl"
    chat.parent.mkdir(parents=True)
    chat.write_text(header + "\n" + message + "\n", encoding="utf-8")
    return chat


def test_a_huge_send_date_and_infinite_metadata_open(tmp_path: Path) -> None:
    header = (
        '{"user_name":"You","character_name":"Mira","create_date":"2024-01-01@00h00m00s",'
        f'"chat_metadata":{{"note_depth":Infinity,"note_interval":{HUGE}.5,'
        '"cfg_guidance_scale":Infinity}}'
    )
    message = f'{{"name":"Mira","is_user":false,"send_date":{HUGE},"mes":"Hello."}}'
    _write(tmp_path, header, message)
    chat = ChatStore(tmp_path).open("Mira", "huge")
    assert [m.mes for m in chat.messages()] == ["Hello."]
    assert chat.warnings == []  # the message reads as a message, its date as unset
    note = ChatMeta(chat).note
    assert (note.depth, note.interval) == (4, 1)  # SillyTavern's defaults, as for any unreadable value
    cfg = ChatMeta(chat).cfg
    assert cfg.guidance_scale is None  # an infinite guidance would turn every logit into NaN

