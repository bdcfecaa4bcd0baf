"""The chat screen's replies: sending, streaming, stopping, swipes, continue and impersonation.

Generation runs in a thread worker (`group="generation"`, exclusive); the worker iterates
`ChatSession.send` (or regenerate, continue, impersonate) and posts `ReplyDelta` batches
(~every 50 ms) and one `ReplyFinished`, or `ReplyFailed`. The session saves the chat, so this
only renders. Esc stops a reply (the partial text is kept, as in SillyTavern).
`ChatRepliesScreen` is the middle of `ChatScreen` (tavern/tui/screens/chat.py), over the
history (chat_history.py).
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

from textual import on, work
from textual.containers import VerticalScroll
from textual.message import Message

from tavern.tui.messages import ReplyDelta, ReplyFailed, ReplyFinished
from tavern.tui.screens.chat_history import ChatHistoryScreen, loop_note, reasoning_of, swipe_label
from tavern.tui.widgets.composer import Composer
from tavern.tui.widgets.message import ChatMessageView

if TYPE_CHECKING:
    from tavern.engines.base import PromptProgress

BATCH_SECONDS = 0.05
WRITING = "writing… (Esc to stop)"


class ReplyProgress(Message):
    """How far the engine has read the prompt (one per decoded batch)."""

    def __init__(self, progress: PromptProgress) -> None:
        super().__init__()
        self.progress = progress


class ChatRepliesScreen(ChatHistoryScreen):
    _writing = WRITING
    """The status once the reply's first text arrives."""

    # -- sending -----------------------------------------------------------------------------

    @on(Composer.Submitted, "#composer")
    def _submitted(self, event: Composer.Submitted) -> None:
        text = event.value
        if self.generating:
            self.app.notify("A reply is still being written (Esc stops it).", severity="warning")
            return
        if not text.strip():
            self.app.notify("Type a message first.", severity="warning")
            return
        self.composer.value = ""
        box = self.query_one("#messages", VerticalScroll)
        box.mount(ChatMessageView(self.session.user_name, text, True, len(self.session.chat)))
        self._start("send", text)

    def _start(self, mode: str, text: str = "") -> None:
        box = self.query_one("#messages", VerticalScroll)
        if mode in ("send", "regenerate_new"):
            self.live = ChatMessageView(self.session.card.name, "", False, len(self.session.chat) + 1)
            box.mount(self.live)
        elif mode in ("regenerate", "continue"):
            views = self.views()
            self.live = views[-1] if views else None
            if self.live is not None and mode == "regenerate":
                self.live.set_text("")
        box.anchor()
        self.generating = True
        self.cancel = threading.Event()
        self._writing = WRITING
        self._set_status(self._waiting_status())
        self.generate(mode, text)

    def _waiting_status(self) -> str:
        """Before the first token: the model is still loading, or the prompt is being read
        (its figures follow as `ReplyProgress`)."""
        if not self.tavern.engine_loaded:
            return "loading model… (Esc to stop)"
        return "reading prompt… (Esc to stop)"

    @work(thread=True, exclusive=True, group="generation", exit_on_error=False)
    def generate(self, mode: str, text: str) -> None:
        from tavern.engines.base import Finished, PromptProgress

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
                if isinstance(event, PromptProgress):
                    self.post_message(ReplyProgress(event))
                    continue
                pending += event.text
                now = time.monotonic()
                if now - last >= BATCH_SECONDS:
                    self.post_message(ReplyDelta(pending))
                    pending, last = "", now
        except Exception as err:  # the message is on disk already; say what failed
            self.post_message(ReplyFailed(str(err), text))

    @on(ReplyProgress)
    def _progress(self, message: ReplyProgress) -> None:
        if self.generating and not self.cancel.is_set():
            self._set_status(f"{message.progress.describe()} (Esc to stop)")

    @on(ReplyDelta)
    def _delta(self, message: ReplyDelta) -> None:
        if self.generating and not self.cancel.is_set() and self.status.activity != self._writing:
            self._set_status(self._writing)
        if self.live is not None:
            self.live.append(message.text)
        elif self.generating:  # impersonation writes into the composer, for the user to edit
            self.composer.append(message.text)

    @on(ReplyFinished)
    def _finished(self, message: ReplyFinished) -> None:
        self.generating = False
        if message.mode == "impersonate":
            self.composer.value = message.text.strip()
            self.composer.focus()
            self.last_stats = message.stats
            self.status.set_stats(message.stats)
            self.app.notify("Impersonated: edit it and press Enter to send", timeout=4)
            return
        if self.live is not None:
            chat = self.session.chat
            last = chat[-1] if len(chat) else None
            if last is not None and not last.is_user:
                self.live.set_text(last.mes, swipe_label(last))
                self.live.set_note(loop_note(last))
                self.live.set_reasoning(reasoning_of(last))
            elif not message.text:
                self.live.remove()
        self.live = None
        self.last_stats = message.stats
        self._set_status()
        self.status.set_stats(message.stats)
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
            for view in reversed(self.views()):
                if view.has_class("user") and view.body == message.draft:
                    view.remove()
                    break
            self.composer.value = message.draft
            self.composer.focus()

    # -- turns -----------------------------------------------------------------------------------

    def action_stop_or_back(self) -> None:
        if self.generating:
            self.cancel.set()
            self._set_status("stopping…")
        elif self.focused_view() is not None:
            self.composer.focus()
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
            self.show_last()
        elif delta > 0 and len(self.session.chat) and not self.session.chat[-1].is_user:
            self._start("regenerate")  # past the last swipe: write a new one, as SillyTavern does

    def action_impersonate(self) -> None:
        """Write the user's next message with the model; it lands in the composer, unsent."""
        if self.generating:
            return
        self.composer.value = ""
        self.composer.focus()
        self.live = None
        self.generating = True
        self.cancel = threading.Event()
        self._writing = "impersonating… (Esc to stop)"
        self._set_status(self._waiting_status())
        self.generate("impersonate", "")

    def action_continue_reply(self) -> None:
        if not self.generating and len(self.session.chat) and not self.session.chat[-1].is_user:
            self._start("continue")
