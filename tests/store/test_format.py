"""Dates, file names and message lines exactly as SillyTavern reads and writes them."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from tavern.errors import ChatStoreError
from tavern.store import (
    ChatHeader,
    ChatMessage,
    chat_file_name,
    format_iso,
    format_send_date,
    parse_send_date,
)
from tavern.store.message import encode_line


def test_send_date_is_written_in_sillytaverns_meridiem_form() -> None:
    assert format_send_date(datetime(2024, 9, 15, 14, 3)) == "September 15, 2024 2:03pm"
    assert format_send_date(datetime(2024, 1, 5, 0, 7)) == "January 5, 2024 12:07am"
    assert format_send_date(datetime(2024, 1, 5, 12, 0)) == "January 5, 2024 12:00pm"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("September 15, 2024 2:03pm", datetime(2024, 9, 15, 14, 3)),
        ("June 19, 2023 12:20am", datetime(2023, 6, 19, 0, 20)),
        ("Sep 15, 2024 11:59PM", datetime(2024, 9, 15, 23, 59)),
        ("2024-09-15@14h03m22s", datetime(2024, 9, 15, 14, 3, 22)),
        ("2024-7-2@01h31m37s", datetime(2024, 7, 2, 1, 31, 37)),
        ("2023-6-2 @21h 09m 51s 363ms", datetime(2023, 6, 2, 21, 9, 51, 363000)),
    ],
)
def test_local_time_forms_are_read(value: str, expected: datetime) -> None:
    assert parse_send_date(value) == expected.astimezone()


def test_epoch_milliseconds_and_iso_8601_are_read() -> None:
    moment = datetime(2023, 1, 24, 12, 29, 31, 558000, tzinfo=UTC)
    assert parse_send_date(1674563371558) == moment
    assert parse_send_date("1674563371558") == moment
    assert parse_send_date("2025-03-02T09:15:00.000Z") == datetime(2025, 3, 2, 9, 15, tzinfo=UTC)
    assert parse_send_date(format_iso(moment)) == moment
    assert format_iso(moment) == "2023-01-24T12:29:31.558Z"


@pytest.mark.parametrize(
    "value", ["", "yesterday", None, True, [], "Smarch 3, 2024 1:00pm", "2024-02-30@10h00m00s"]
)
def test_what_is_not_a_date_reads_as_none(value: object) -> None:
    assert parse_send_date(value) is None


def test_chat_file_names_follow_sillytavern() -> None:
    when = datetime(2024, 9, 15, 14, 3, 22)
    assert chat_file_name("Seraphina", when) == "Seraphina - 2024-09-15@14h03m22s.jsonl"
    assert chat_file_name('A/B: "C"?', when) == "AB C - 2024-09-15@14h03m22s.jsonl"
    assert chat_file_name("..", when).startswith("Chat - ")


def test_a_new_message_line_has_sillytaverns_keys_and_order() -> None:
    msg = ChatMessage(name="Anon", is_user=True, mes="Hi", send_date="September 15, 2024 2:03pm")
    assert encode_line(msg.to_json()) == (
        b'{"name":"Anon","is_user":true,"is_system":false,"send_date":"September 15, 2024 2:03pm",'
        b'"mes":"Hi","extra":{}}'
    )


def test_unknown_keys_and_key_order_survive_a_round_trip() -> None:
    line = (
        '{"extra":{"api":"kobold","bias":null},"name":"Seraphina","is_user":false,"is_name":true,'
        '"send_date":1674563371558,"mes":"Привет 🌿","title":"","force_avatar":"a.png","x":{"y":[1,2.5]}}'
    )
    msg = ChatMessage.from_json(json.loads(line))
    assert msg.send_date == "1674563371558" and msg.other["is_name"] is True
    assert encode_line(msg.to_json()).decode() == line


def test_malformed_known_values_are_kept_verbatim() -> None:
    data = {"name": "c", "is_user": False, "mes": 42, "swipes": "oops", "swipe_id": "x", "extra": []}
    msg = ChatMessage.from_json(data)
    assert msg.mes == "42" and msg.swipes is None and msg.extra == {}
    back = msg.to_json()
    assert back["swipes"] == "oops" and back["swipe_id"] == "x" and back["extra"] == []


def test_from_json_refuses_what_is_not_an_object() -> None:
    with pytest.raises(ChatStoreError, match="JSON object"):
        ChatMessage.from_json(["not", "a", "message"])


def test_add_swipe_keeps_mes_equal_to_the_selected_swipe() -> None:
    msg = ChatMessage(
        name="Seraphina", is_user=False, mes="first", send_date="d1", extra={"model": "a"}, gen_started="g1"
    )
    assert msg.add_swipe("second", {"send_date": "d2", "extra": {"model": "b", "token_count": 3}}) == 1
    assert (msg.mes, msg.swipe_id, msg.swipes) == ("second", 1, ["first", "second"])
    assert msg.extra == {"model": "b", "token_count": 3} and msg.send_date == "d2"
    assert msg.swipe_info[0] == {"send_date": "d1", "gen_started": "g1", "extra": {"model": "a"}}
    msg.select_swipe(0)
    assert (msg.mes, msg.extra, msg.send_date) == ("first", {"model": "a"}, "d1")
    # An edit of the shown text is what gets saved for that swipe.
    msg.mes = "first, edited"
    data = msg.to_json()
    assert data["swipes"][data["swipe_id"]] == data["mes"] == "first, edited"
    msg.select_swipe(1)
    assert msg.swipes[0] == "first, edited"
    with pytest.raises(ChatStoreError, match="no swipe 3"):
        msg.select_swipe(2)


def test_greeting_swipes_without_swipe_info_can_be_selected() -> None:
    msg = ChatMessage.from_json(
        {"name": "S", "is_user": False, "mes": "a", "swipe_id": 0, "swipes": ["a", "b"], "swipe_info": []}
    )
    msg.select_swipe(1)
    assert msg.mes == "b"
    msg.add_swipe("c")
    assert msg.swipes == ["a", "b", "c"] and len(msg.swipe_info) == 3 and msg.mes == "c"


def test_lines_are_written_like_json_stringify() -> None:
    # NaN/Infinity become null; a lone surrogate (half an emoji) is escaped, never an error.
    assert encode_line({"a": float("nan"), "b": [float("inf")]}) == b'{"a":null,"b":[null]}'
    line = encode_line({"mes": "bad \ud83c half"})
    assert json.loads(line) == {"mes": "bad \ud83c half"}
    assert encode_line({"mes": 'é\n"\\\t'}) == '{"mes":"é\\n\\"\\\\\\t"}'.encode()


def test_header_keeps_unknown_keys_and_order() -> None:
    data = {"chat_metadata": {"integrity": "x"}, "user_name": "unused", "character_name": "unused", "z": 1}
    header = ChatHeader.from_json(data)
    assert header.chat_metadata == {"integrity": "x"} and header.other == {"z": 1}
    assert list(header.to_json()) == ["chat_metadata", "user_name", "character_name", "z"]
