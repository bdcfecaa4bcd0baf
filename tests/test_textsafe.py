"""tavern.textsafe on its own: what a terminal gets when text arrives in pieces (a streamed reply)."""

from __future__ import annotations

import io
import json

from tavern.textsafe import SafeStream, json_safe, terminal_safe


def test_an_escape_split_across_streamed_tokens_is_still_shown_not_run() -> None:
    terminal = io.StringIO()
    stream = SafeStream(terminal)
    for token in ["Beep \x1b", "[2J boop \x1b]5", "2;c;SGVsbG8=", "\x07 done\r", "\nnext\r", "x\x9b", "2J"]:
        stream.write(token)
        stream.flush()
    stream.finish()
    assert terminal.getvalue() == "Beep ␛[2J boop ␛]52;c;SGVsbG8=␇ done\nnext␍x<U+009B>2J"
    assert terminal_safe("a\u202eb\u2066c\x7f\td\n") == "a<U+202E>b<U+2066>c␡\td\n"


def test_json_stays_the_same_value_with_nothing_raw_in_it() -> None:
    value = {"name": "Eve\x1b]52;c;SGVsbG8=\x07\x9b2J\u202e\x7f\ud800"}
    dumped = json_safe(json.dumps(value, ensure_ascii=False))
    assert json.loads(dumped) == value
    assert all(c.isprintable() for c in dumped)
