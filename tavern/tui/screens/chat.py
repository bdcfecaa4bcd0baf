"""The chat screen: a status bar, the history (only the recent tail is mounted), the composer.

Generation runs in a thread worker (`group="generation"`, exclusive); the worker iterates
`ChatSession.send` and posts `ReplyDelta` batches (~every 50 ms) and one `ReplyFinished`. The
session saves the chat, so this screen only renders and calls session services (edit,
delete, hide, branch, rename, author's note). Esc stops a reply (the partial text is kept, as
in SillyTavern), leaves a focused message for the composer, or goes back to the library.

Any message can be acted on: Up on the composer's first line (or Shift+Tab) focuses the last
message, Up/Down move between messages (older ones are mounted as needed), and then e/Enter
edits, d/Delete deletes, h hides or shows, b branches, k makes a checkpoint, c copies (OSC 52).
The Ctrl keys act on the focused message, or on the last one while typing.
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
from textual.widgets import Button, Footer

from tavern.errors import TavernError
from tavern.tui.messages import ReplyDelta, ReplyFailed, ReplyFinished
from tavern.tui.widgets.composer import Composer
from tavern.tui.widgets.message import ChatMessageView
from tavern.tui.widgets.statusbar import StatusBar

TAIL = 40
"""Messages mounted when a chat opens: Textual has no virtual list for rows of varying height."""
FIRST = 12
"""Of those, mounted before the first paint (more than fill 24 rows); the rest just after."""
BATCH_SECONDS = 0.05


class ChatScreen(Screen):
    BINDINGS = [
        Binding("escape", "stop_or_back", "Stop/Back", id="chat.stop", priority=True, show=False),
        Binding("ctrl+r", "regenerate", "Swipe", id="chat.regenerate", priority=True),
        # Left/right in the composer move its cursor, so swipes take alt (or ctrl) with them.
        Binding(
            "alt+left,ctrl+left", "swipe(-1)", "Prev swipe", id="chat.swipe_prev", priority=True, show=False
        ),
        Binding(
            "alt+right,ctrl+right", "swipe(1)", "Next swipe", id="chat.swipe_next", priority=True, show=False
        ),
        Binding("ctrl+t", "continue_reply", "Continue", id="chat.continue", priority=True, show=False),
        Binding("ctrl+u", "impersonate", "Impersonate", id="chat.impersonate", priority=True, show=False),
        Binding("ctrl+e", "edit", "Edit", id="chat.edit", priority=True),
        Binding("ctrl+d", "delete", "Delete", id="chat.delete", priority=True),
        Binding("ctrl+b", "branch", "Branch", id="chat.branch", priority=True, show=False),
        Binding("ctrl+l", "chats", "Chats", id="chat.chats", priority=True),
        Binding("ctrl+f", "search", "Find", id="chat.search", priority=True, show=False),
        Binding("ctrl+n", "author_note", "Author's note", id="chat.note", priority=True, show=False),
        Binding("f2", "inspect", "Prompt", id="chat.inspect"),
        Binding("f5", "summary", "Summary", id="chat.summary", priority=True, show=False),
        Binding("f6", "cfg", "Negative prompt", id="chat.cfg", priority=True, show=False),
        Binding("f3", "lorebooks", "Lore", id="chat.lorebooks"),
    ]
    MESSAGE_KEYS = [
        # On a focused message (listed in the help screen).
        ("up / down", "previous / next message"),
        ("e, Enter", "edit the message"),
        ("d, Delete", "delete the message"),
        ("h", "hide it from the prompt / show it again"),
        ("b", "branch: a new chat up to this message"),
        ("k", "checkpoint: a named branch"),
        ("c", "copy the text (OSC 52)"),
        ("Esc", "back to the composer"),
    ]

    def __init__(self, session: Any) -> None:
        super().__init__()
        self.session = session
        self.cancel = threading.Event()
        self.generating = False
        self.live: ChatMessageView | None = None
        self.first_shown = 0
        """Chat index of the oldest mounted message: a long chat mounts only its recent tail."""
        self.last_stats: Any = None

    def compose(self) -> ComposeResult:
        yield StatusBar(self.session.card.name, id="status")
        yield VerticalScroll(id="messages")
        yield Composer(
            placeholder=f"Message {self.session.card.name}… (Enter sends, Ctrl+J new line)", id="composer"
        )
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

    def _watch_memory(self) -> None:
        """Chroma or the embedder failing to load is said once, here, not only in the
        inspector's warnings (the chat goes on without recall)."""
        memory = self.session.app.memory
        if memory is None:
            return
        app = self.app

        def warn(text: str) -> None:
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
        app = self.session.app
        n_ctx = 0
        if app.engine_loaded:
            try:
                n_ctx = app.load_engine().context_size
            except TavernError:
                n_ctx = 0
        bar = self.status
        bar.set_model(getattr(self.app, "engine_status", ""), n_ctx)
        bar.set_activity(activity)

    # -- history ---------------------------------------------------------------------------------

    def _view(self, index: int, msg: Any) -> ChatMessageView:
        return ChatMessageView(
            msg.name, msg.mes, msg.is_user, index, _swipe_label(msg), msg.is_system, loop_note(msg),
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

    def _mount_older(self, count: int) -> Any:
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
                self.live.set_text(last.mes, _swipe_label(last))
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

    def on_key(self, event: Any) -> None:
        view = self.focused_view()
        if view is None or self.generating:
            return
        actions = {
            "up": lambda: self.move_focus(-1),
            "down": lambda: self.move_focus(1),
            "e": self.action_edit,
            "enter": self.action_edit,
            "d": self.action_delete,
            "delete": self.action_delete,
            "h": self.action_hide,
            "b": self.action_branch,
            "k": self.action_checkpoint,
            "c": self.action_copy,
            "y": self.action_copy,
        }
        action = actions.get(event.key)
        if action is not None:
            event.stop()
            event.prevent_default()
            action()

    # -- acting on a message ---------------------------------------------------------------------

    def _refuse_while_writing(self) -> bool:
        if self.generating:
            self.app.notify("Wait for the reply (Esc stops it).", severity="warning")
        return self.generating

    def action_edit(self) -> None:
        index = self.target_index()
        if index is None or self._refuse_while_writing():
            return
        from tavern.tui.screens.dialogs import EditTextModal

        msg = self.session.chat[index]

        async def done(text: str | None) -> None:
            if text is None or text == msg.mes:
                return
            reloads = self.session.chat.reloads
            try:
                self.session.edit_message(index, text)
            except TavernError as err:
                self.app.notify(str(err), severity="error")
                await self._redraw_if_reloaded(reloads)
                return
            if await self._redraw_if_reloaded(reloads):
                return
            view = self.view_for(index)
            if view is not None:
                view.set_text(text)
                view.focus()

        self.app.push_screen(EditTextModal(f"Edit message {index} ({msg.name})", msg.mes), done)

    def action_delete(self) -> None:
        index = self.target_index()
        if index is None or self._refuse_while_writing():
            return
        from tavern.tui.screens.modals import ConfirmModal

        focused = self.focused_view() is not None
        msg = self.session.chat[index]
        preview = " ".join(msg.mes.split())[:60]

        async def done(yes: bool | None) -> None:
            if not yes:
                return
            reloads = self.session.chat.reloads
            try:
                self.session.delete_message(index)
            except TavernError as err:
                self.app.notify(str(err), severity="error")
                await self._redraw_if_reloaded(reloads)
                return
            shown = max(TAIL, len(self.session.chat) - self.first_shown)
            await self.load_history_keeping(shown)
            if focused and len(self.session.chat):
                self._focus_index(min(index, len(self.session.chat) - 1))

        self.app.push_screen(ConfirmModal(f"Delete message {index} ({msg.name}: {preview})?", "Delete"), done)

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

    def action_hide(self) -> None:
        index = self.target_index()
        if index is None or self._refuse_while_writing():
            return
        hidden = not self.session.chat[index].is_system
        try:
            self.session.set_hidden(index, hidden)
        except TavernError as err:
            self.app.notify(str(err), severity="error")
            return
        view = self.view_for(index)
        if view is not None:
            view.set_hidden(hidden)

    def action_branch(self) -> None:
        index = self.target_index()
        if index is None or self._refuse_while_writing():
            return
        try:
            child = self.session.branch_at(index)
        except TavernError as err:
            self.app.notify(str(err), severity="error")
            return
        self.app.notify(f"Branched from message {index}: {child.chat.name}", timeout=5)
        self.app.switch_screen(ChatScreen(child))

    def action_checkpoint(self) -> None:
        index = self.target_index()
        if index is None or self._refuse_while_writing():
            return
        from tavern.tui.screens.modals import TextPromptModal

        def done(label: str | None) -> None:
            if label is None:
                return
            try:
                name = self.session.checkpoint_at(index, label)
            except TavernError as err:
                self.app.notify(str(err), severity="error")
                return
            self.app.notify(f"Checkpoint saved: {name} (Ctrl+L lists chats)", timeout=5)

        self.app.push_screen(TextPromptModal(f"Checkpoint at message {index}: a label", ""), done)

    def action_copy(self) -> None:
        index = self.target_index()
        if index is None:
            return
        self.app.copy_to_clipboard(self.session.chat[index].mes)
        self.app.notify("Copied to the clipboard", timeout=2)

    # -- chats, search, author's note ------------------------------------------------------------

    def action_chats(self) -> None:
        if self._refuse_while_writing():
            return
        from tavern.tui.screens.chats import ChatListScreen

        def done(result: tuple[str, str] | None) -> None:
            if result is None:
                self.status.character = self.session.card.name
                return
            what, name = result
            tavern = self.session.app
            try:
                if what == "open":
                    if name == self.session.chat.name:
                        return
                    session = tavern.open_chat(self.session.key, chat_name=name)
                elif what == "new":
                    session = tavern.open_chat(self.session.key, new=True)
                else:  # the open chat was deleted: the latest other chat, or a new one
                    session = tavern.open_chat(self.session.key)
            except TavernError as err:
                self.app.notify(str(err), severity="error")
                return
            self.app.switch_screen(ChatScreen(session))

        self.app.push_screen(ChatListScreen(self.session), done)

    def action_search(self) -> None:
        from tavern.tui.screens.dialogs import PickModal

        def search(text: str) -> list[tuple[str, Any]]:
            rows = []
            for i, mes in self.session.search(text, limit=100):
                flat = " ".join(mes.split())
                at = flat.casefold().find(text.casefold().strip())
                snippet = flat[max(0, at - 20) : at + 50]
                rows.append((str(i), f"#{i}  {snippet}"))
            return rows

        def done(picked: str | None) -> None:
            if picked is not None:
                self.call_after_refresh(lambda: self._focus_index(int(picked)))

        self.app.push_screen(PickModal("Find in this chat", search), done)

    def action_author_note(self) -> None:
        from tavern.tui.screens.dialogs import AuthorNoteModal

        def done(note: dict | None) -> None:
            if note is None:
                return
            try:
                self.session.set_author_note(note["text"], note["depth"], note["interval"], note["role"])
            except TavernError as err:
                self.app.notify(str(err), severity="error")
                return
            self.app.notify("Author's note saved", timeout=2)

        self.app.push_screen(AuthorNoteModal(self.session.author_note()), done)

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
            views = self.views()
            last = self.session.chat[-1]
            if views:
                views[-1].set_text(last.mes, _swipe_label(last))
                views[-1].set_note(loop_note(last))
                views[-1].set_reasoning(reasoning_of(last))
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
        self._set_status("impersonating… (Esc to stop)")
        self.generate("impersonate", "")

    def action_continue_reply(self) -> None:
        if not self.generating and len(self.session.chat) and not self.session.chat[-1].is_user:
            self._start("continue")

    # -- memory and CFG -------------------------------------------------------------------------

    def action_summary(self) -> None:
        """The rolling summary editor: read, edit, regenerate, switch off (tavern.chat.summary)."""
        from tavern.chat import summary as chat_summary
        from tavern.tui.screens.dialogs import SummaryModal

        def done(result: tuple[str, Any] | None) -> None:
            if result is None:
                return
            action, value = result
            try:
                if action == "save":
                    chat_summary.save(self.session, value)
                    self.app.notify("Summary saved", timeout=2)
                elif action == "enabled":
                    chat_summary.set_enabled(self.session, value)
                    self.app.notify("Summary on" if value else "Summary off: not in the prompt", timeout=3)
                else:
                    self._regenerate_summary()
            except TavernError as err:
                self.app.notify(str(err), severity="error")

        self.app.push_screen(SummaryModal(chat_summary.read(self.session)), done)

    def _regenerate_summary(self) -> None:
        if self.generating:
            self.app.notify("Wait for the reply (Esc stops it).", severity="warning")
            return
        self.generating = True
        self._set_status("writing the summary…")
        self._summary_worker()

    @work(thread=True, exclusive=True, group="summary", exit_on_error=False)
    def _summary_worker(self) -> None:
        from tavern.chat import summary as chat_summary

        try:
            state = chat_summary.regenerate(self.session)
        except TavernError as err:
            self.app.call_from_thread(self._summary_done, None, str(err))
            return
        self.app.call_from_thread(self._summary_done, state, "")

    def _summary_done(self, state: Any, error: str) -> None:
        self.generating = False
        self._set_status()
        if error:
            self.app.notify(error, title="Summary", severity="error")
        else:
            self.app.notify(f"Summary written: {state.describe()}", title="Summary", timeout=4)

    def action_cfg(self) -> None:
        """The chat's negative prompt and guidance scale (session.cfg / set_cfg)."""
        from tavern.tui.screens.dialogs import CfgModal

        scale, negative, _depth = self.session.cfg()

        def done(result: tuple[str, float] | None) -> None:
            if result is None:
                return
            try:
                self.session.set_cfg(scale=result[1], negative=result[0])
            except TavernError as err:
                self.app.notify(str(err), severity="error")
                return
            self.app.notify(f"Negative prompt saved (guidance {result[1]:g})", timeout=3)

        self.app.push_screen(CfgModal(negative, scale), done)

    def action_inspect(self) -> None:
        """The prompt inspector for the next turn: where every token goes, and which lore fired."""
        if self.generating:
            return
        self.inspect_prompt()

    @work(thread=True, exclusive=True, group="inspect", exit_on_error=False)
    def inspect_prompt(self) -> None:
        prompt = self.session.build_prompt(explain=True)
        fmt = self.session.app.prompt_format()
        scale, negative, _depth = self.session.cfg()
        cfg = (scale, negative) if negative.strip() else None
        self.app.call_from_thread(self._show_inspector, prompt, self.session.last_lore, fmt.name, cfg)

    def _show_inspector(self, prompt: Any, lore: Any, fmt_name: str, cfg: Any = None) -> None:
        from tavern.tui.screens.inspector import PromptInspectorScreen

        self.app.push_screen(PromptInspectorScreen(prompt, lore, fmt_name, cfg=cfg))

    def action_lorebooks(self) -> None:
        from tavern.tui.screens.lore_editor import LoreBooksScreen, LoreEditorScreen

        world = (self.session.card.extensions or {}).get("world")
        path = self.session.app.find_lorebook(world) if world else None
        if path is not None:
            self.app.push_screen(LoreEditorScreen(self.session.app, path))
        else:
            self.app.push_screen(LoreBooksScreen(self.session.app))


def _older_label(hidden: int) -> str:
    return f"↑ {hidden} earlier messages (show {min(TAIL, hidden)} more)"


def loop_note(message: Any) -> str:
    """What the loop guard did to this message (`extra.tavern.loop`, written by the session)."""
    tavern = (getattr(message, "extra", None) or {}).get("tavern") or {}
    loop = tavern.get("loop") if isinstance(tavern, dict) else None
    return str(loop.get("message") or "") if isinstance(loop, dict) else ""


def reasoning_of(message: Any) -> str:
    """A reasoning model's thoughts, stored apart from the reply in `extra.reasoning`."""
    value = (getattr(message, "extra", None) or {}).get("reasoning")
    return value if isinstance(value, str) else ""


def _swipe_label(message: Any) -> str:
    swipes = getattr(message, "swipes", None)
    if swipes and len(swipes) > 1 and message.swipe_id is not None:
        return f"‹{message.swipe_id + 1}/{len(swipes)}›"
    return ""
