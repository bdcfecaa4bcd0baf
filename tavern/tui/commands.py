"""The command palette (Ctrl+P): Tavern's actions by name, beside Textual's own (themes, quit).

Each command runs an action of the screen on show or of the app, so the palette never does
anything a key does not."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from textual.command import Hit, Hits, Provider
from textual.screen import Screen

# (title, help, screen class name or "app", action)
COMMANDS: list[tuple[str, str, str, str]] = [
    ("Help: list the keys", "F1", "app", "help"),
    ("Settings: model, context, samplers, prompt format", "F10", "app", "settings"),
    ("Personas: who you are in the chat", "F9", "app", "personas"),
    ("Backends: remote servers, and which one a chat uses", "F4", "app", "backends"),
    ("Library: import cards, lorebooks, chats, presets", "Ctrl+O", "LibraryScreen", "import_card"),
    ("Library: new character", "F7", "LibraryScreen", "create_card"),
    ("Library: edit the character", "Ctrl+E", "LibraryScreen", "edit_card"),
    ("Library: duplicate the character", "F5", "LibraryScreen", "duplicate"),
    ("Library: rename the character", "F2", "LibraryScreen", "rename"),
    ("Library: delete the character (trash)", "F8", "LibraryScreen", "delete"),
    ("Library: undo the last delete", "Ctrl+Z", "LibraryScreen", "undo"),
    ("Library: new chat with the chosen greeting", "Ctrl+N", "LibraryScreen", "new_chat"),
    ("Lorebooks", "F3", "LibraryScreen", "lorebooks"),
    ("Chat: list, search, rename, delete, export chats", "Ctrl+L", "ChatScreen", "chats"),
    ("Chat: author's note", "Ctrl+N", "ChatScreen", "author_note"),
    ("Chat: find in this chat", "Ctrl+F", "ChatScreen", "search"),
    ("Chat: regenerate (new swipe)", "Ctrl+R", "ChatScreen", "regenerate"),
    ("Chat: continue the last reply", "Ctrl+T", "ChatScreen", "continue_reply"),
    ("Chat: impersonate (write my next message)", "Ctrl+U", "ChatScreen", "impersonate"),
    ("Chat: edit the message", "Ctrl+E", "ChatScreen", "edit"),
    ("Chat: delete the message", "Ctrl+D", "ChatScreen", "delete"),
    ("Chat: hide/show the message in the prompt", "h", "ChatScreen", "hide"),
    ("Chat: branch from the message", "Ctrl+B", "ChatScreen", "branch"),
    ("Chat: checkpoint at the message", "k", "ChatScreen", "checkpoint"),
    ("Chat: copy the message", "c", "ChatScreen", "copy"),
    ("Chat: prompt inspector", "F2", "ChatScreen", "inspect"),
    ("Chat: summary (read, edit, regenerate, switch off)", "F5", "ChatScreen", "summary"),
    ("Chat: negative prompt and guidance scale (CFG)", "F6", "ChatScreen", "cfg"),
    ("Chat: lorebook editor", "F3", "ChatScreen", "lorebooks"),
]


class TavernCommands(Provider):
    def _screen(self) -> Screen[object]:
        # The palette is a screen of its own: act on the one below it.
        stack = self.app.screen_stack
        return stack[-2] if len(stack) >= 2 else stack[-1]

    def _available(self) -> list[tuple[str, str, Callable[[], object]]]:
        screen = self._screen()
        out: list[tuple[str, str, Callable[[], object]]] = []
        for title, help_text, where, action in COMMANDS:
            target: object
            if where == "app":
                target = self.app
            elif type(screen).__name__ == where:
                target = screen
            else:
                continue
            method = getattr(target, f"action_{action}", None)
            if method is not None:
                out.append((title, help_text, method))
        return out

    async def discover(self) -> Hits:
        for title, help_text, method in self._available():
            yield Hit(1.0, title, partial(method), help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for title, help_text, method in self._available():
            score = matcher.match(title)
            if score > 0:
                yield Hit(score, matcher.highlight(title), partial(method), help=help_text)
