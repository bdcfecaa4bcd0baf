"""detect_kind: telling cards, lorebooks, chats and presets apart by content."""

from __future__ import annotations

import json

import pytest

from tavern.cards import detect_kind
from tavern.errors import CardError


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("real/Seraphina.png", "card"),
        ("real/CodingSensei.png", "card"),
        ("ztxt_card.png", "card"),
        ("v1_card.json", "card"),
        ("v2_bom_crlf.json", "card"),
        ("v3_card.json", "card"),
        ("risu_export.charx", "card"),
        ("bad/traversal.charx", "card"),  # a card archive; reading it refuses it
        ("bad/invalid_base64.png", "card"),
        ("real/Eldoria.json", "lorebook"),
        ("real/textgen_Default.json", "preset:sampler"),
        ("real/instruct_ChatML.json", "preset:instruct"),
        ("real/context_ChatML.json", "preset:context"),
        ("bad/no_card.png", "unknown"),
        ("bad/truncated.png", "unknown"),
        ("bad/notes.txt", "unknown"),
        ("bad/not_a_card.json", "unknown"),
    ],
)
def test_fixture_kinds(data_dir, name, kind):
    assert detect_kind(data_dir / name) == kind


def test_sillytavern_chat_jsonl(tmp_path):
    lines = [
        {
            "user_name": "User",
            "character_name": "Seraphina",
            "create_date": "2024-09-15@14h03m22s",
            "chat_metadata": {"note_prompt": "", "note_interval": 1},
        },
        {
            "name": "Seraphina",
            "is_user": False,
            "is_system": False,
            "send_date": "September 15, 2024 2:03pm",
            "mes": "Hello",
            "extra": {},
        },
        {"name": "User", "is_user": True, "send_date": "September 15, 2024 2:04pm", "mes": "Hi"},
    ]
    path = tmp_path / "Seraphina - 2024-09-15@14h03m22s.jsonl"
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n", "utf-8")
    assert detect_kind(path) == "chat"
    only_header = tmp_path / "new.jsonl"
    only_header.write_text(json.dumps(lines[0]) + "\n", "utf-8")
    assert detect_kind(only_header) == "chat"


def test_other_json_shapes(tmp_path):
    shapes = {
        "v3book.json": ({"spec": "lorebook_v3", "data": {"entries": []}}, "lorebook"),
        "listbook.json": ({"entries": [{"keys": ["a"], "content": "b"}]}, "lorebook"),
        "openai.json": ({"chat_completion_source": "openai", "temperature": 1, "prompts": []}, "preset:chat"),
        "kobold.json": ({"temp": 0.7, "rep_pen": 1.1, "genamt": 200}, "preset:sampler"),
        "list.json": ([1, 2, 3], "unknown"),
        "nospec.json": ({"data": {"name": "X", "first_mes": "hi"}}, "card"),
    }
    for filename, (obj, kind) in shapes.items():
        path = tmp_path / filename
        path.write_text(json.dumps(obj), "utf-8")
        assert detect_kind(path) == kind, filename


def test_unreadable_paths(tmp_path):
    with pytest.raises(CardError, match="not found"):
        detect_kind(tmp_path / "missing.png")
    with pytest.raises(CardError, match="folder"):
        detect_kind(tmp_path)
