"""The chat's status bar: which chat, the model, context used of total, cache reuse and speed.

One line, fitted to the width: at 80 columns it reads
`Mira · 2024-09-15@14h03m22s · SmolLM2-135M · ctx 812/2048 · cache 790/812 · 128 tok/s` (the
chat's name without the character's name it starts with); narrower, the model name goes
first, then the chat's name is shortened (to 8 columns at the least). While something is
running (writing, loading the model) the activity replaces the figures of the last turn. It renders what it is given: the chat screen feeds it the
`TurnStats` of each `Finished` event (prompt_tokens, cached_tokens, gen_tokens, gen_tps and,
when the engine reports them, restored_state and banked_tokens).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual.widgets import Static

if TYPE_CHECKING:
    from tavern.engines.base import TurnStats


CHAT_MIN = 8
"""The fewest columns the chat's name is shortened to."""


class StatusBar(Static):
    DEFAULT_CSS = """
    StatusBar { height: 1; background: $panel; color: $text-muted; padding: 0 1; }
    """

    def __init__(self, character: str, chat: str = "", id: str | None = None) -> None:
        super().__init__("", id=id)
        self.character = character
        self.chat = chat
        self.model = ""
        self.n_ctx = 0
        self.stats: TurnStats | None = None
        self.activity = ""

    def set_model(self, model: str, n_ctx: int = 0) -> None:
        self.model, self.n_ctx = model, n_ctx
        self._draw()

    def set_stats(self, stats: TurnStats | None) -> None:
        self.stats = stats
        self.activity = ""
        self._draw()

    def set_activity(self, text: str) -> None:
        self.activity = text
        self._draw()

    def set_chat(self, chat: str) -> None:
        self.chat = chat
        self._draw()

    def chat_label(self) -> str:
        """The chat's name as shown: SillyTavern names chats `<character> - <date>`."""
        prefix = f"{self.character} - "
        label = self.chat[len(prefix) :] if self.chat.startswith(prefix) else self.chat
        return label or self.chat

    def fields(self) -> list[str]:
        parts = [self.character]
        if self.chat:
            parts.append(self.chat_label())
        if self.model:
            parts.append(self.model)
        if self.activity:
            parts.append(self.activity)
            return parts
        s = self.stats
        if s is not None:
            used = s.prompt_tokens + s.gen_tokens
            parts.append(f"ctx {used}/{self.n_ctx}" if self.n_ctx else f"ctx {used}")
            parts.append(f"cache {s.cached_tokens}/{s.prompt_tokens}")
            parts.append(f"{s.gen_tps:.0f} tok/s")
            restored = getattr(s, "restored_state", "")
            if restored:
                parts.append(f"state {restored}")
            banked = getattr(s, "banked_tokens", 0)
            if banked:  # cells of text that came back (tavern/engines/cell_bank.py)
                parts.append(f"bank {banked}")
            if s.stop_reason == "cancelled":
                parts.append("stopped")
            loop = getattr(s, "loop", None)
            if loop:  # the loop guard acted on this reply (tavern/loop_guard.py)
                parts.append(f"loop {loop.get('action', 'found')}")
        elif self.n_ctx:
            parts.append(f"ctx -/{self.n_ctx}")
        return parts

    def _draw(self) -> None:
        parts = self.fields()
        width = max(20, self.size.width or 78)  # the content width: the padding is outside it
        text = " · ".join(parts)
        has_chat = bool(self.chat)
        model_at = 2 if has_chat else 1
        if len(text) > width and self.model and len(parts) > model_at + 1:  # drop the model name first
            del parts[model_at]
            text = " · ".join(parts)
        if len(text) > width and has_chat:  # then shorten the chat's name, keeping the figures
            room = max(CHAT_MIN, len(parts[1]) - (len(text) - width))
            if room < len(parts[1]):
                parts[1] = parts[1][: room - 1] + "…"
                text = " · ".join(parts)
        self.update(text if len(text) <= width else text[: width - 1] + "…")

    def on_resize(self) -> None:
        self._draw()
