"""One chat message on screen: a name line, then the text rendered block by block.

The text goes through `tavern.tui.render` (actions, speech, Markdown) into Textual `Content`
whose styles name theme variables, so a theme change recolours every message. The body is
cut into blocks (paragraphs; a code fence stays one block), one Static each: while a reply
streams in, batches (~every 50 ms) change only its last block, so only that block is
rendered and wrapped again, however long the reply has grown. The view can take the focus:
the chat screen moves it with up/down to pick a message to edit, delete, hide, branch from
or copy.
"""

from __future__ import annotations

import re

from textual.app import ComposeResult
from textual.content import Content, Span
from textual.widget import Widget
from textual.widgets import Collapsible, Static

from tavern.tui.render import render

STYLES = {
    "action": "italic $text-muted",
    "speech": "$text-warning",
    "bold": "bold",
    "code": "$text-accent on $boost",
    "code_block": "$text-accent",
    "fence": "$text-muted",
    "heading": "bold $text-primary",
    "quote": "italic $text-muted",
}
_FENCE = re.compile(r"^\s*(```|~~~)")


def render_content(text: str) -> Content:
    shown, spans = render(text)
    return Content(shown, spans=[Span(a, b, STYLES[kind]) for a, b, kind in spans])


def blocks(text: str) -> list[str]:
    """Paragraphs (split at blank lines), with each code fence kept whole in its block."""
    out: list[str] = []
    current: list[str] = []
    fence: str | None = None
    for line in text.split("\n"):
        m = _FENCE.match(line)
        if m:
            fence = m.group(1) if fence is None else (None if m.group(1) == fence else fence)
        if fence is None and not line.strip() and not m:
            if current:
                out.append("\n".join(current))
                current = []
            continue
        current.append(line)
    if current:
        out.append("\n".join(current))
    return out


class Block(Static):
    DEFAULT_CSS = "Block { height: auto; } Block.-later { margin-top: 1; }"

    def __init__(self, text: str, later: bool) -> None:
        super().__init__(render_content(text), classes="-later" if later else "")
        self.text = text

    def set(self, text: str) -> None:
        if text != self.text:
            self.text = text
            self.update(render_content(text))


def _thoughts(reasoning: str) -> Collapsible:
    words = len(reasoning.split())
    return Collapsible(
        Static(reasoning, classes="reasoning", markup=False),
        title=f"Thinking ({words} words)",
        collapsed=True,
        classes="thoughts",
    )


class ChatMessageView(Widget, can_focus=True):
    DEFAULT_CSS = """
    ChatMessageView { height: auto; layout: vertical; }
    ChatMessageView > .head { height: 1; }
    ChatMessageView > .thoughts { height: auto; padding: 0; margin: 0; border: none; color: $text-muted; }
    ChatMessageView > .note { height: auto; color: $text-muted; text-style: italic; display: none; }
    ChatMessageView > .note.-shown { display: block; }
    """

    def __init__(
        self,
        name: str,
        text: str,
        is_user: bool,
        index: int,
        swipe: str = "",
        hidden: bool = False,
        note: str = "",
        reasoning: str = "",
    ) -> None:
        """`note`: a dim line under the text (what the loop guard did to this reply).
        `reasoning`: a reasoning model's thoughts (`extra.reasoning`), shown collapsed above
        the reply; they are never part of the reply or the prompt."""
        super().__init__(classes="user" if is_user else "char")
        self.speaker = name
        self.body = text
        self.note = note
        self.index = index
        self.swipe = swipe
        self.hidden = hidden
        self.set_class(hidden, "hidden")
        self._head = Static("", classes="head")
        self._note = Static(note, classes="note -shown" if note else "note", markup=False)
        self.reasoning = reasoning

    def compose(self) -> ComposeResult:
        yield self._head
        if self.reasoning:
            yield _thoughts(self.reasoning)
        parts = blocks(self.body) or [""]
        for i, part in enumerate(parts):
            yield Block(part or "…", later=i > 0)
        yield self._note

    def set_reasoning(self, reasoning: str) -> None:
        """Show (collapsed) or replace the reply's reasoning, once the reply is final."""
        self.reasoning = reasoning
        for old in self.query_children(Collapsible):
            old.remove()
        if reasoning and self.is_mounted:
            self.mount(_thoughts(reasoning), after=self._head)

    def set_note(self, note: str) -> None:
        self.note = note
        self._note.update(note)
        self._note.set_class(bool(note), "-shown")

    def on_mount(self) -> None:
        self._draw_head()

    def set_text(self, text: str, swipe: str | None = None) -> None:
        self.body = text
        if swipe is not None:
            self.swipe = swipe
            self._draw_head()
        self._sync_blocks()

    def set_hidden(self, hidden: bool) -> None:
        self.hidden = hidden
        self.set_class(hidden, "hidden")
        self._draw_head()

    def append(self, delta: str) -> None:
        self.body += delta
        self._sync_blocks()

    @property
    def shown_text(self) -> str:
        """The text as rendered (markers such as `*` removed): for tests and search."""
        return render(self.body)[0]

    @property
    def head_text(self) -> str:
        return str(self._head.content)

    def _sync_blocks(self) -> None:
        """Update only the blocks whose text changed; mount or remove the difference."""
        if not self.is_mounted:
            return
        parts = blocks(self.body) or ["…"]
        views = list(self.query_children(Block))
        for view, part in zip(views, parts):
            view.set(part)
        if len(parts) > len(views):
            self.mount_all([Block(p, later=True) for p in parts[len(views) :]], before=self._note)
        for view in views[len(parts) :]:
            view.remove()

    def _draw_head(self) -> None:
        head = Content.styled(self.speaker, "bold $text-primary" if not self.has_class("user") else "bold")
        if self.swipe:
            head += Content.styled(f"  {self.swipe}", "$text-muted")
        if self.hidden:
            head += Content.styled("  (hidden from the prompt)", "$text-muted")
        self._head.update(head)
