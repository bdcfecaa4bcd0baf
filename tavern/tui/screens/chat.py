"""The chat screen: a status bar, the history (only the recent tail is mounted), the composer.

`ChatScreen(tavern, session)` is pushed by the app (`TavernApp.open_character`) with the Tavern
it belongs to and the open `ChatSession`; it calls session services (edit, delete, hide,
branch, rename, author's note) and the Tavern's (other chats, lorebooks, the engine), and
nothing reaches the Tavern through the session. Its jobs live in three modules, each class the
base of the next: chat_history.py (the history, moving between messages), chat_replies.py
(sending and streaming replies, Esc, swipes) and this one (the bindings, the actions on a
message and the side panels: chats, search, author's note, summary, CFG, prompt, lore).

Any message can be acted on: Up on the composer's first line (or Shift+Tab) focuses the last
message, Up/Down move between messages (older ones are mounted as needed), and then e/Enter
edits, d/Delete deletes, h hides or shows, b branches, k makes a checkpoint, c copies (OSC 52).
The Ctrl keys act on the focused message, or on the last one while typing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from textual import events, on, work
from textual.binding import Binding, BindingType

from tavern.errors import TavernError
from tavern.tui.messages import ReplyFailed, ReplyFinished
from tavern.tui.screens.chat_history import TAIL
from tavern.tui.screens.chat_replies import ChatRepliesScreen

if TYPE_CHECKING:
    from tavern.chat.summary import SummaryState
    from tavern.lore import ScanResult
    from tavern.prompt.assemble import AssembledPrompt
    from tavern.store.metadata import NoteMeta


class ChatScreen(ChatRepliesScreen):
    BINDINGS: ClassVar[list[BindingType]] = [
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
        Binding("f2", "inspect", "Prompt", id="chat.inspect", priority=True),
        Binding("f5", "summary", "Summary", id="chat.summary", priority=True, show=False),
        Binding("f6", "cfg", "Negative prompt", id="chat.cfg", priority=True, show=False),
        Binding("f3", "lorebooks", "Lore", id="chat.lorebooks", priority=True),
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

    def on_key(self, event: events.Key) -> None:
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

    # -- impersonation: what was typed stays one Ctrl+Z away --------------------------------------

    def action_impersonate(self) -> None:
        if not self.generating:
            self.composer.take_over()
        super().action_impersonate()

    @on(ReplyFinished)
    @on(ReplyFailed)
    def _impersonation_over(self) -> None:
        # Runs before chat_replies' handlers (a subclass's come first): the composer's final
        # text is set there, so the hand-back waits for them.
        self.call_later(self.composer.hand_back)

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
        self.app.switch_screen(ChatScreen(self.tavern, child))

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
                self.status.set_chat(self.session.chat.name)  # it may have been renamed there
                return
            what, name = result
            tavern = self.tavern
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
            self.app.switch_screen(ChatScreen(self.tavern, session))

        self.app.push_screen(ChatListScreen(self.tavern, self.session), done)

    def action_search(self) -> None:
        from tavern.tui.screens.dialogs import PickModal

        def search(text: str) -> list[tuple[str, str]]:
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

        def done(note: NoteMeta | None) -> None:
            if note is None:
                return
            try:
                self.session.set_author_note(note.text, note.depth, note.interval, note.role)
            except TavernError as err:
                self.app.notify(str(err), severity="error")
                return
            self.app.notify("Author's note saved", timeout=2)

        self.app.push_screen(AuthorNoteModal(self.session.author_note()), done)

    # -- memory and CFG -------------------------------------------------------------------------

    def action_summary(self) -> None:
        """The rolling summary editor: read, edit, regenerate, switch off (tavern.chat.summary)."""
        from tavern.chat import summary as chat_summary
        from tavern.tui.screens.dialogs import SummaryModal

        def done(result: tuple[str, str | bool | None] | None) -> None:
            if result is None:
                return
            action, value = result
            try:
                if action == "save":
                    chat_summary.save(self.session, str(value))
                    self.app.notify("Summary saved", timeout=2)
                elif action == "enabled":
                    chat_summary.set_enabled(self.session, bool(value))
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
            state = chat_summary.regenerate(self.session, self.tavern.settings.memory)
        except TavernError as err:
            self.app.call_from_thread(self._summary_done, None, str(err))
            return
        self.app.call_from_thread(self._summary_done, state, "")

    def _summary_done(self, state: SummaryState | None, error: str) -> None:
        self.generating = False
        self._set_status()
        if error or state is None:
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
        fmt = self.tavern.prompt_format()
        scale, negative, _depth = self.session.cfg()
        cfg = (scale, negative) if negative.strip() else None
        self.app.call_from_thread(self._show_inspector, prompt, self.session.last_lore, fmt.name, cfg)

    def _show_inspector(
        self, prompt: AssembledPrompt, lore: ScanResult | None, fmt_name: str,
        cfg: tuple[float, str] | None = None,
    ) -> None:
        from tavern.tui.screens.inspector import PromptInspectorScreen

        self.app.push_screen(PromptInspectorScreen(prompt, lore, fmt_name, cfg=cfg))

    def action_lorebooks(self) -> None:
        from tavern.tui.screens.lore_editor import LoreBooksScreen, LoreEditorScreen

        world = (self.session.card.extensions or {}).get("world")
        path = self.tavern.lorebooks.find(str(world)) if world else None
        if path is not None:
            self.app.push_screen(LoreEditorScreen(self.tavern, path))
        else:
            self.app.push_screen(LoreBooksScreen(self.tavern))


