"""Readable exports of a chat: Markdown and plain text.

`ChatStore.export_markdown` / `export_text` write these; the TUI may show them as a preview.
Plain text follows SillyTavern's own "Export as .txt": `Name: text`, a blank line between
messages, hidden (`is_system`) and empty messages left out, `extra.display_text` preferred.
Markdown adds a title, the speaker in bold with the message time, and keeps the message text
as written (roleplay text already uses Markdown's `*actions*`).
"""

from __future__ import annotations

from collections.abc import Iterable

from tavern.store.dates import parse_send_date
from tavern.store.message import ChatHeader, ChatMessage
from tavern.textsafe import terminal_safe


def render_text(messages: Iterable[ChatMessage]) -> str:
    """SillyTavern's plain-text export."""
    parts = []
    for msg in messages:
        if msg.is_system or not msg.mes:
            continue
        parts.append(f"{msg.name}: {_normal_newlines(msg.text())}\n\n")
    return terminal_safe("".join(parts))  # a file people `cat`: its escapes shown, not run


def render_markdown(
    header: ChatHeader, chat_name: str, messages: Iterable[ChatMessage], include_hidden: bool = False
) -> str:
    """A Markdown document of the chat; hidden messages only when `include_hidden`."""
    lines = [f"# {header.character_name or chat_name}", ""]
    if header.user_name:
        lines += [f"*{chat_name}, with {header.user_name}*", ""]
    for msg in messages:
        if msg.is_system and not include_hidden:
            continue
        when = parse_send_date(msg.send_date)
        stamp = f" · {when.strftime('%Y-%m-%d %H:%M')}" if when else ""
        hidden = " *(hidden from the prompt)*" if msg.is_system else ""
        lines += ["---", "", f"**{_escape(msg.name)}**{stamp}{hidden}", ""]
        lines += [_normal_newlines(msg.text()).rstrip(), ""]
    return terminal_safe("\n".join(lines).rstrip() + "\n")  # read in a terminal too (cat, glow)


def _normal_newlines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _escape(name: str) -> str:
    return name.replace("*", r"\*").replace("_", r"\_")
