"""The chat screen: history (only the recent tail is mounted), the composer, a status line.

Generation runs in a thread worker (`group="generation"`, exclusive); the worker iterates
`ChatSession.send` and posts `ReplyDelta` batches (~every 50 ms) and one `ReplyFinished`. The
session saves the chat, so this screen only renders. Esc stops a reply (the partial text is
kept, as in SillyTavern); Esc with nothing running goes back to the library.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Button, Footer, Input, Static

from tavern.tui.messages import ReplyDelta, ReplyFailed, ReplyFinished
from tavern.tui.widgets.message import ChatMessageView

TAIL = 40
"""Messages mounted when a chat opens: Textual has no virtual list for rows of varying height."""
BATCH_SECONDS = 0.05


class ChatScreen(Screen):
    BINDINGS = [
        Binding("escape", "stop_or_back", "Stop/Back", id="chat.stop", priority=True),
        Binding("ctrl+r", "regenerate", "Swipe", id="chat.regenerate"),
        # Left/right in the composer move its cursor, so swipes take alt (or ctrl) with them.
        Binding(
            "alt+left,ctrl+left", "swipe(-1)", "Prev swipe", id="chat.swipe_prev", priority=True, show=False
        ),
        Binding(
            "alt+right,ctrl+right", "swipe(1)", "Next swipe", id="chat.swipe_next", priority=True, show=False
        ),
        Binding("ctrl+t", "continue_reply", "Continue", id="chat.continue"),
        Binding("ctrl+d", "delete_last", "Delete last", id="chat.delete_last"),
        Binding("ctrl+u", "impersonate", "Impersonate", id="chat.impersonate", show=False),
        Binding("f2", "inspect", "Prompt", id="chat.inspect"),
        Binding("f3", "lorebooks", "Lore", id="chat.lorebooks"),
    ]

    def __init__(self, session: Any) -> None:
        super().__init__()
        self.session = session
        self.cancel = threading.Event()
        self.generating = False
        self.live: ChatMessageView | None = None
        self.first_shown = 0
        """Chat index of the oldest mounted message: a long chat mounts only its recent tail."""

    def compose(self) -> ComposeResult:
        yield Static("", id="status")
        yield VerticalScroll(id="messages")
        yield Input(placeholder=f"Message {self.session.card.name}… (Enter to send)", id="composer")
        yield Footer()

    def on_mount(self) -> None:
        self._set_status()
        self.load_history()
        self.query_one("#composer", Input).focus()

    def _set_status(self, extra: str = "") -> None:
        # One line at 80 columns: the stats of the last reply replace the chat and model names.
        text = f"{self.session.card.name} · " + (
            extra or f"{self.session.chat.name} · {self.app.engine_status}"
        )
        self.query_one("#status", Static).update(text)

    def load_history(self) -> None:
        box = self.query_one("#messages", VerticalScroll)
        box.remove_children()
        self.first_shown = len(self.session.chat)
        self._mount_older(TAIL)
        box.anchor()

    def _mount_older(self, count: int) -> None:
        """Mount `count` more messages above those shown; a button at the top offers the rest."""
        box = self.query_one("#messages", VerticalScroll)
        end = self.first_shown
        start = max(0, end - count)
        chat = self.session.chat
        views = [
            ChatMessageView(m.name, m.mes, m.is_user, start + i, _swipe_label(m))
            for i, m in enumerate(chat[start:end] if end > start else [])
        ]
        self.first_shown = start
        buttons = list(box.query("#older"))
        if buttons:  # mount below the button, which stays at the top while there is more
            box.mount_all(views, after=buttons[0])
            if start:
                buttons[0].label = _older_label(start)
            else:
                buttons[0].remove()
        else:
            if start:
                views.insert(0, Button(_older_label(start), id="older"))
            box.mount_all(views)

    @on(Button.Pressed, "#older")
    def _show_older(self) -> None:
        self._mount_older(TAIL)

    # -- sending -----------------------------------------------------------------------------

    @on(Input.Submitted, "#composer")
    def _submitted(self, event: Input.Submitted) -> None:
        text = event.value
        if self.generating:
            self.app.notify("A reply is still being written (Esc stops it).", severity="warning")
            return
        if not text.strip():
            self.app.notify("Type a message first.", severity="warning")
            return
        event.input.value = ""
        box = self.query_one("#messages", VerticalScroll)
        box.mount(ChatMessageView(self.session.user_name, text, True, len(self.session.chat)))
        self._start("send", text)

    def _start(self, mode: str, text: str = "") -> None:
        box = self.query_one("#messages", VerticalScroll)
        if mode in ("send", "regenerate_new"):
            self.live = ChatMessageView(self.session.card.name, "", False, len(self.session.chat) + 1)
            box.mount(self.live)
        elif mode in ("regenerate", "continue"):
            views = list(box.query(ChatMessageView))
            self.live = views[-1] if views else None
            if self.live is not None and mode == "regenerate":
                self.live.set_text("")
        box.anchor()
        self.generating = True
        self.cancel = threading.Event()
        self._set_status("writing… (Esc to stop)")
        self.generate(mode, text)

    @work(thread=True, exclusive=True, group="generation", exit_on_error=False)
    def generate(self, mode: str, text: str) -> None:
        from tavern.engines.base import Finished

        session = self.session
        try:
            if mode == "send":
                events = session.send(text, self.cancel)
            elif mode == "impersonate":
                events = session.impersonate(self.cancel)
            elif mode in ("regenerate", "regenerate_new"):
                events = session.regenerate(self.cancel)
            else:
                events = session.continue_reply(self.cancel)
            pending = ""
            last = time.monotonic()
            for event in events:
                if isinstance(event, Finished):
                    if pending:
                        self.post_message(ReplyDelta(pending))
                    self.post_message(ReplyFinished(event.text, event.stats, event.error, mode))
                    return
                pending += event.text
                now = time.monotonic()
                if now - last >= BATCH_SECONDS:
                    self.post_message(ReplyDelta(pending))
                    pending, last = "", now
        except Exception as err:  # the message is on disk already; say what failed
            self.post_message(ReplyFailed(str(err), text))

    @on(ReplyDelta)
    def _delta(self, message: ReplyDelta) -> None:
        if self.live is not None:
            self.live.append(message.text)
        elif self.generating:  # impersonation writes into the composer, for the user to edit
            composer = self.query_one("#composer", Input)
            composer.value += message.text

    @on(ReplyFinished)
    def _finished(self, message: ReplyFinished) -> None:
        self.generating = False
        if message.mode == "impersonate":
            composer = self.query_one("#composer", Input)
            composer.value = message.text.strip()
            composer.focus()
            self._set_status("impersonated: edit and press Enter to send")
            return
        if self.live is not None:
            chat = self.session.chat
            last = chat[-1] if len(chat) else None
            if last is not None and not last.is_user:
                self.live.set_text(last.mes, _swipe_label(last))
            elif not message.text:
                self.live.remove()
        self.live = None
        s = message.stats
        info = f"{s.gen_tokens} tok · {s.gen_tps:.0f} tok/s · first {s.ttft_ms / 1000:.1f} s · cached {s.cached_tokens}/{s.prompt_tokens}"
        if s.stop_reason == "cancelled":
            info = "stopped · " + info
        self._set_status(info)
        if message.error:
            self.app.notify(f"Generation failed: {message.error}", title="Engine", severity="error")

    @on(ReplyFailed)
    def _failed(self, message: ReplyFailed) -> None:
        self.generating = False
        if self.live is not None and not self.live.body:
            self.live.remove()
        self.live = None
        self._set_status("error")
        self.app.notify(message.error, title="Error", severity="error")
        chat = self.session.chat
        saved = len(chat) and chat[-1].is_user and chat[-1].mes == message.draft
        if message.draft and not saved:
            # The message never reached the disk (full disk, read-only chat): give it back to
            # the composer so the user can retry; nothing typed is lost.
            for view in reversed(list(self.query(ChatMessageView))):
                if view.has_class("user") and view.body == message.draft:
                    view.remove()
                    break
            composer = self.query_one("#composer", Input)
            composer.value = message.draft
            composer.focus()

    # -- actions -----------------------------------------------------------------------------

    def action_stop_or_back(self) -> None:
        if self.generating:
            self.cancel.set()
            self._set_status("stopping…")
        else:
            self.app.pop_screen()

    def action_regenerate(self) -> None:
        if self.generating:
            return
        chat = self.session.chat
        mode = "regenerate" if len(chat) and not chat[-1].is_user else "regenerate_new"
        self._start(mode)

    def action_swipe(self, delta: int) -> None:
        if self.generating:
            return
        if self.session.select_swipe(delta):
            views = list(self.query_one("#messages", VerticalScroll).query(ChatMessageView))
            last = self.session.chat[-1]
            if views:
                views[-1].set_text(last.mes, _swipe_label(last))
        elif delta > 0 and len(self.session.chat) and not self.session.chat[-1].is_user:
            self._start("regenerate")  # past the last swipe: write a new one, as SillyTavern does

    def action_impersonate(self) -> None:
        """Write the user's next message with the model; it lands in the composer, unsent."""
        if self.generating:
            return
        self.query_one("#composer", Input).value = ""
        self.live = None
        self.generating = True
        self.cancel = threading.Event()
        self._set_status("impersonating… (Esc to stop)")
        self.generate("impersonate", "")

    def action_continue_reply(self) -> None:
        if not self.generating and len(self.session.chat) and not self.session.chat[-1].is_user:
            self._start("continue")

    def action_inspect(self) -> None:
        """The prompt inspector for the next turn: where every token goes, and which lore fired."""
        if self.generating:
            return
        self.inspect_prompt()

    @work(thread=True, exclusive=True, group="inspect", exit_on_error=False)
    def inspect_prompt(self) -> None:
        prompt = self.session.build_prompt(explain=True)
        fmt = self.session.app.prompt_format()
        self.app.call_from_thread(self._show_inspector, prompt, self.session.last_lore, fmt.name)

    def _show_inspector(self, prompt: Any, lore: Any, fmt_name: str) -> None:
        from tavern.tui.screens.inspector import PromptInspectorScreen

        self.app.push_screen(PromptInspectorScreen(prompt, lore, fmt_name))

    def action_lorebooks(self) -> None:
        from tavern.tui.screens.lore_editor import LoreBooksScreen, LoreEditorScreen

        world = (self.session.card.extensions or {}).get("world")
        path = self.session.app.find_lorebook(world) if world else None
        if path is not None:
            self.app.push_screen(LoreEditorScreen(self.session.app, path))
        else:
            self.app.push_screen(LoreBooksScreen(self.session.app))

    def action_delete_last(self) -> None:
        if self.generating or not len(self.session.chat):
            return
        self.session.delete_last()
        self.load_history()


def _older_label(hidden: int) -> str:
    return f"↑ {hidden} earlier messages (show {min(TAIL, hidden)} more)"


def _swipe_label(message: Any) -> str:
    swipes = getattr(message, "swipes", None)
    if swipes and len(swipes) > 1 and message.swipe_id is not None:
        return f"‹{message.swipe_id + 1}/{len(swipes)}›"
    return ""
