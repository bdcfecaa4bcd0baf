"""The chat screen's view of the chat: the status bar, the history and moving between messages.

`ChatHistoryScreen` is the base of `ChatScreen` (tavern/tui/screens/chat.py): it lays out the
status bar, the history (only the recent tail is mounted: Textual has no virtual list for rows
of varying height; older messages mount above on demand) and the composer, and moves the focus
from message to message. The replies (chat_replies.py) and the actions on a message (chat.py)
build on it. It is given the `Tavern` it shows a chat of and the open `ChatSession`.

The status bar names the open chat. What is typed and not sent is the chat's draft: kept as it
changes (`Tavern.chats.state`), written when the screen closes and put back when the chat opens
again, in this run or the next. Opening the screen records the chat as the character's last
opened one, so Enter in the library comes back to it (after a branch or a pick from the list
too). The focus moves only between the composer and the messages (the scrolling box around
them takes none: Tab there was a focus nothing showed, and the next Esc left the chat).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from textual import on
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widget import AwaitMount
from textual.widgets import Button, Footer, TextArea

from tavern.errors import TavernError
from tavern.tui.widgets.composer import Composer
from tavern.tui.widgets.message import ChatMessageView
from tavern.tui.widgets.statusbar import StatusBar

if TYPE_CHECKING:
    from tavern.chat.session import ChatSession
    from tavern.engines.base import TurnStats
    from tavern.session import Tavern
    from tavern.store import ChatMessage

TAIL = 40
"""Messages mounted when a chat opens: Textual has no virtual list for rows of varying height."""
FIRST = 12
"""Of those, mounted before the first paint (more than fill 24 rows); the rest just after."""


class ChatHistoryScreen(Screen[None]):
    def __init__(self, tavern: Tavern, session: ChatSession) -> None:
        super().__init__()
        self.tavern = tavern
        self.session = session
        self.cancel = threading.Event()
        self.generating = False
        self.live: ChatMessageView | None = None
        self.first_shown = 0
        """Chat index of the oldest mounted message: a long chat mounts only its recent tail."""
        self.last_stats: TurnStats | None = None

    def compose(self) -> ComposeResult:
        yield StatusBar(self.session.card.name, chat=self.session.chat.name, id="status")
        yield VerticalScroll(id="messages", can_focus=False)
        self._composer = Composer(
            placeholder=f"Message {self.session.card.name}… (Enter sends, Ctrl+J new line)", id="composer"
        )
        yield self._composer
        yield Footer()

    @property
    def composer(self) -> Composer:
        return self.query_one("#composer", Composer)

    @property
    def status(self) -> StatusBar:
        return self.query_one("#status", StatusBar)

    def on_mount(self) -> None:
        self._set_status()
        self.load_history()
        self.composer.focus()
        for warning in self.session.warnings:
            self.app.notify(warning, title="Chat", severity="warning", timeout=8)
        self._watch_memory()
        self._open_draft()

    # -- the draft and the last opened chat -----------------------------------------------------

    def _open_draft(self) -> None:
        state = self.tavern.chats.state
        draft = state.draft(self.session.key, self.session.chat.name)
        if draft:
            self.composer.value = draft
        try:
            self.tavern.chats.remember_opened(self.session.key, self.session.chat.name)
        except TavernError as err:
            self.app.notify(str(err), title="Chat", severity="warning", timeout=8)

    @on(TextArea.Changed, "#composer")
    def _keep_draft(self) -> None:
        # Memory only: the chat's name is read now, as a rename from the chat list changes it.
        self.tavern.chats.state.keep_draft(self.session.key, self.session.chat.name, self.composer.text)

    def save_draft(self) -> None:
        """Write the drafts (the screen is closing, or the app)."""
        try:
            self.tavern.chats.state.save()
        except TavernError as err:
            self.app.notify(str(err), title="Draft", severity="warning", timeout=8)

    def on_unmount(self) -> None:
        # The box itself, not a query (its widgets are gone by now), and its text as it is: the
        # Changed of a key typed just before Esc may not have been handled yet.
        self.tavern.chats.state.keep_draft(self.session.key, self.session.chat.name, self._composer.text)
        self.save_draft()

    def _watch_memory(self) -> None:
        """Chroma or the embedder failing to load is said once, here, not only in the
        inspector's warnings (the chat goes on without recall)."""
        memory = self.tavern.memory
        if memory is None:
            return
        app = self.app

        def warn(text: str) -> None:
            # Once per app: every chat screen shares the one memory service.
            if getattr(app, "_memory_warned", False):
                return
            app._memory_warned = True  # type: ignore[attr-defined]
            app.notify(text, title="Memory", severity="warning", timeout=10)

        def on_warning(text: str) -> None:  # the memory worker's thread, or a turn's
            if app._thread_id == threading.get_ident():
                warn(text)
            else:
                app.call_from_thread(warn, text)

        memory.on_warning = on_warning
        if memory.failed:
            warn(f"long-term memory is off: {memory.failed}")

    def _set_status(self, activity: str = "") -> None:
        """The model and its context (once loaded), then the figures of the last turn."""
        n_ctx = 0
        if self.tavern.engine_loaded:
            try:
                n_ctx = self.tavern.load_engine().context_size
            except TavernError:
                n_ctx = 0
        bar = self.status
        bar.set_model(getattr(self.app, "engine_status", ""), n_ctx)
        bar.set_activity(activity)

    # -- history ---------------------------------------------------------------------------------

    def _view(self, index: int, msg: ChatMessage) -> ChatMessageView:
        return ChatMessageView(
            msg.name, msg.mes, msg.is_user, index, swipe_label(msg), msg.is_system, loop_note(msg),
            reasoning_of(msg),
        )

    def views(self) -> list[ChatMessageView]:
        return list(self.query(ChatMessageView))

    def load_history(self) -> None:
        box = self.query_one("#messages", VerticalScroll)
        box.remove_children()
        self.first_shown = len(self.session.chat)
        self._mount_older(FIRST)
        box.anchor()
        if self.first_shown:
            self.call_after_refresh(self._mount_older, TAIL - FIRST)

    def _mount_older(self, count: int) -> AwaitMount:
        """Mount `count` more messages above those shown; a button at the top offers the rest."""
        box = self.query_one("#messages", VerticalScroll)
        end = self.first_shown
        start = max(0, end - count)
        chat = self.session.chat
        views: list[ChatMessageView | Button] = [
            self._view(start + i, m) for i, m in enumerate(chat[start:end] if end > start else [])
        ]
        self.first_shown = start
        buttons = list(box.query("#older").results(Button))
        if buttons:  # mount below the button, which stays at the top while there is more
            mounted = box.mount_all(views, after=buttons[0])
            if start:
                buttons[0].label = _older_label(start)
            else:
                buttons[0].remove()
            return mounted
        if start:
            views.insert(0, Button(_older_label(start), id="older"))
        return box.mount_all(views)

    @on(Button.Pressed, "#older")
    def _show_older(self) -> None:
        self._mount_older(TAIL)

    async def _redraw_if_reloaded(self, reloads: int) -> bool:
        """Another program changed the chat and it was re-read: show it as it now is."""
        if self.session.chat.reloads == reloads:
            return False
        self.app.notify("The chat was changed by another program: reloaded.", timeout=5)
        await self.load_history_keeping(max(TAIL, len(self.session.chat) - self.first_shown))
        return True

    async def load_history_keeping(self, count: int) -> None:
        box = self.query_one("#messages", VerticalScroll)
        await box.remove_children()
        self.first_shown = len(self.session.chat)
        await self._mount_older(count)

    def show_last(self) -> None:
        """The last message as the chat now holds it (after a swipe or a finished reply)."""
        views = self.views()
        last = self.session.chat[-1]
        if views:
            views[-1].set_text(last.mes, swipe_label(last))
            views[-1].set_note(loop_note(last))
            views[-1].set_reasoning(reasoning_of(last))

    # -- moving between messages -----------------------------------------------------------------

    @on(Composer.LeaveUp)
    def _leave_composer(self) -> None:
        views = self.views()
        if views:
            views[-1].focus()

    def focused_view(self) -> ChatMessageView | None:
        return self.focused if isinstance(self.focused, ChatMessageView) else None

    def target_index(self) -> int | None:
        """The message the Ctrl keys act on: the focused one, else the last."""
        view = self.focused_view()
        if view is not None:
            return view.index
        return len(self.session.chat) - 1 if len(self.session.chat) else None

    def view_for(self, index: int) -> ChatMessageView | None:
        """The view of chat message `index`, mounting older messages if it is not shown yet."""
        if index < self.first_shown:
            self._mount_older(self.first_shown - index + 5)
        return next((v for v in self.views() if v.index == index), None)

    def move_focus(self, step: int) -> None:
        view = self.focused_view()
        if view is None:
            return
        views = self.views()
        i = views.index(view) + step
        if i < 0 and self.first_shown > 0:
            target = view.index - 1
            self._mount_older(TAIL)
            self.call_after_refresh(lambda: self._focus_index(target))
            return
        if i >= len(views):
            self.composer.focus()
        elif i >= 0:
            views[i].focus()

    def _focus_index(self, index: int) -> None:
        view = self.view_for(index)
        if view is not None:
            view.focus()


def _older_label(hidden: int) -> str:
    return f"↑ {hidden} earlier messages (show {min(TAIL, hidden)} more)"


def loop_note(message: ChatMessage) -> str:
    """What the loop guard did to this message (`extra.tavern.loop`, written by the session)."""
    tavern = (message.extra or {}).get("tavern") or {}
    loop = tavern.get("loop") if isinstance(tavern, dict) else None
    return str(loop.get("message") or "") if isinstance(loop, dict) else ""


def reasoning_of(message: ChatMessage) -> str:
    """A reasoning model's thoughts, stored apart from the reply in `extra.reasoning`."""
    value = (message.extra or {}).get("reasoning")
    return value if isinstance(value, str) else ""


def swipe_label(message: ChatMessage) -> str:
    swipes = message.swipes
    if swipes and len(swipes) > 1 and message.swipe_id is not None:
        return f"‹{message.swipe_id + 1}/{len(swipes)}›"
    return ""
