"""The chat screen's message actions, the chat list, search and the author's note, driven with
Pilot at 80x24 on the real app. No model is needed (its path points nowhere): everything here
is the store and the screens."""

from __future__ import annotations

import json
from pathlib import Path

from textual.widgets import OptionList, TextArea
from tui.homes import offline, seeded_chat
from tui.pilot_wait import open_chat, waiter

from tavern.session import Tavern
from tavern.store import ChatMessage
from tavern.tui.app import make_app
from tavern.tui.render import render
from tavern.tui.screens.chat import ChatScreen
from tavern.tui.screens.chats import ChatListScreen
from tavern.tui.screens.dialogs import AuthorNoteModal, EditTextModal, PickModal
from tavern.tui.screens.modals import ConfirmModal, TextPromptModal
from tavern.tui.widgets.composer import Composer
from tavern.tui.widgets.message import ChatMessageView

wait_until = waiter(20.0)


def on_disk(chat_path: Path) -> list[dict]:
    return [json.loads(x) for x in chat_path.read_text().splitlines()][1:]


def test_render_styles_actions_speech_and_markdown() -> None:
    text, spans = render('*waves* "Hello!" she says, **loud**, with `code`.')
    assert text == 'waves "Hello!" she says, loud, with code.'
    kinds = {text[a:b]: k for a, b, k in spans}
    assert kinds["waves"] == "action" and kinds['"Hello!"'] == "speech"
    assert kinds["loud"] == "bold" and kinds["code"] == "code"
    text, spans = render('# Title\n- item\n```py\nx = "a" * 2\n```\nafter')
    lines = text.split("\n")
    assert lines[0] == "Title" and lines[1] == "• item"
    assert lines[2].startswith("─ py") and lines[3] == 'x = "a" * 2'
    # Inside a code fence nothing is styled as speech or action.
    start = text.index('x = "a"')
    assert [k for a, b, k in spans if a <= start < b] == ["code_block"]
    # While streaming, an action not yet closed shows its marker as typed.
    assert render("*she turns")[0] == "*she turns"
    assert render('*she says "hi"*')[1] == [(0, 13, "action"), (9, 13, "speech")]


async def test_edit_hide_delete_any_message_then_branch(home: Path) -> None:
    tavern = offline(home)
    chat = seeded_chat(tavern)
    path = chat.path
    app = make_app(tavern)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_chat(pilot, wait_until, views=6)
        assert isinstance(app.focused, Composer)
        # Up from the composer focuses the last message; up again goes to older ones.
        await pilot.press("up", "up", "up")
        assert isinstance(app.focused, ChatMessageView) and app.focused.index == 3

        await pilot.press("e")
        await wait_until(pilot, lambda: isinstance(app.screen, EditTextModal))
        app.screen.query_one(TextArea).text = "line 3, *edited*"
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: app.screen is screen)
        assert on_disk(path)[3]["mes"] == "line 3, *edited*"
        assert screen.view_for(3).shown_text == "line 3, edited"

        await pilot.press("h")  # hidden from the prompt, still in the chat
        assert on_disk(path)[3]["is_system"] is True
        assert "hidden" in screen.view_for(3).head_text
        await pilot.press("h")
        assert on_disk(path)[3]["is_system"] is False

        await pilot.press("d")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmModal))
        await pilot.press("y")
        await wait_until(pilot, lambda: len(on_disk(path)) == 5)
        assert [m["mes"] for m in on_disk(path)][1:] == ["line 1", "line 2", "line 4", "line 5"]
        await wait_until(pilot, lambda: len(screen.views()) == 5)

        # Branch from message 2: a new chat with messages 0..2, linked to this one.
        await wait_until(pilot, lambda: isinstance(app.focused, ChatMessageView))
        await pilot.press("up")
        index = app.focused.index
        await pilot.press("b")
        await wait_until(pilot, lambda: isinstance(app.screen, ChatScreen) and app.screen is not screen)
        child = app.screen.session.chat
        assert len(child) == index + 1 and child.name != chat.name
        assert child.header.chat_metadata["main_chat"] == chat.name

        # Esc leaves a focused message for the composer, then the chat for the library.
        await wait_until(pilot, lambda: isinstance(app.focused, Composer))


async def test_chat_list_opens_renames_deletes_and_starts_chats(home: Path) -> None:
    tavern = offline(home)
    first = seeded_chat(tavern, 3)
    app = make_app(tavern)
    async with app.run_test(size=(80, 24)) as pilot:
        app.open_character("Mira")
        await wait_until(pilot, lambda: isinstance(app.screen, ChatScreen))
        await pilot.press("ctrl+l")
        await wait_until(pilot, lambda: isinstance(app.screen, ChatListScreen))
        await pilot.press("ctrl+n")  # a new chat
        await wait_until(pilot, lambda: isinstance(app.screen, ChatScreen))
        second = app.screen.session.chat.name
        assert second != first.name and len(tavern.chats.list("Mira")) == 2

        await pilot.press("ctrl+l")
        await wait_until(pilot, lambda: isinstance(app.screen, ChatListScreen))
        listing = app.screen
        options = listing.query_one(OptionList)
        assert options.option_count == 2
        await pilot.press(*"line 2")  # search matches the older chat's last message
        await wait_until(pilot, lambda: options.option_count == 1)
        assert listing.current() == first.name
        await pilot.press("f2")
        await wait_until(pilot, lambda: isinstance(app.screen, TextPromptModal))
        app.screen.query_one("#prompt-input").value = "Harbor night"
        await pilot.press("enter")
        await wait_until(pilot, lambda: listing.current() == "Harbor night")
        assert (home / "chats" / "Mira" / "Harbor night.jsonl").exists()
        await pilot.press("enter")  # open it
        await wait_until(pilot, lambda: isinstance(app.screen, ChatScreen))
        assert app.screen.session.chat.name == "Harbor night"

        # Delete the other chat from the list: it goes to the trash.
        await pilot.press("ctrl+l")
        await wait_until(pilot, lambda: isinstance(app.screen, ChatListScreen))
        listing = app.screen
        listing.query_one(OptionList).highlighted = [
            i for i in range(2) if listing.query_one(OptionList).get_option_at_index(i).id == second
        ][0]
        await pilot.press("f8")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmModal))
        await pilot.press("y")
        await wait_until(pilot, lambda: len(tavern.chats.list("Mira")) == 1)
        assert list((home / "trash" / "chats" / "Mira").glob("*.jsonl"))


async def test_find_in_chat_and_authors_note(home: Path) -> None:
    tavern = offline(home)
    key, card = tavern.cards.find("Mira")
    chat = tavern.chats.new(key, card)
    for i in range(1, 120):
        chat.append(
            ChatMessage(name="User", is_user=True, mes=f"line {i}" + (" lighthouse" if i == 7 else ""))
        )
    app = make_app(tavern)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_chat(pilot, wait_until, views=40)
        await pilot.press("ctrl+f")
        await wait_until(pilot, lambda: isinstance(app.screen, PickModal))
        await pilot.press(*"lighthouse", "enter")
        # The match is far above the mounted tail: it is mounted and focused.
        await wait_until(pilot, lambda: isinstance(app.focused, ChatMessageView) and app.focused.index == 7)

        await pilot.press("ctrl+n")
        await wait_until(pilot, lambda: isinstance(app.screen, AuthorNoteModal))
        app.screen.query_one("#note-text", TextArea).text = "Keep it foggy."
        app.screen.query_one("#note-depth").value = "2"
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: app.screen is screen)
    header = json.loads(chat.path.read_text().splitlines()[0])
    meta = header["chat_metadata"]
    assert meta["note_prompt"] == "Keep it foggy." and meta["note_depth"] == 2


async def test_edit_after_another_program_appended_reloads_the_view(home: Path) -> None:
    """Another program appends to the chat while the TUI shows it: an edit is saved (no
    ChatChangedError), keeps that message, and the screen then shows it."""
    tavern = offline(home)
    chat = seeded_chat(tavern)
    path = chat.path
    app = make_app(tavern)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_chat(pilot, wait_until, views=6)
        from tavern.store.chatfile import Chat  # a second store handle on the same file

        other = Chat.open(path)
        other.append(ChatMessage(name="User", is_user=True, mes="written elsewhere"))
        await pilot.press("up", "up", "up")
        assert app.focused.index == 3
        await pilot.press("e")
        await wait_until(pilot, lambda: isinstance(app.screen, EditTextModal))
        app.screen.query_one(TextArea).text = "line 3 edited"
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: app.screen is screen)
        assert [m["mes"] for m in on_disk(path)][3:] == ["line 3 edited", "line 4", "line 5", "written elsewhere"]
        await wait_until(pilot, lambda: len(screen.views()) == 7)
        assert screen.view_for(3).shown_text == "line 3 edited"
        assert screen.view_for(6).shown_text == "written elsewhere"


async def test_a_reasoning_models_thoughts_show_collapsed_and_stay_out_of_the_reply(home: Path) -> None:
    from textual.widgets import Collapsible

    tavern = Tavern.open(home)  # the bundled model: the prompt is built below
    chat = seeded_chat(tavern, n=2)
    thoughts = "The user greets me; I should answer warmly and mention the stew."
    chat.append(ChatMessage(name="Mira", is_user=False, mes="Welcome in!", extra={"reasoning": thoughts}))
    app = make_app(tavern)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_chat(pilot, wait_until, views=3)
        view = screen.views()[-1]
        box = view.query_one(Collapsible)
        assert box.collapsed and "Thinking (12 words)" in str(box.title)
        assert view.shown_text == "Welcome in!"  # the reply alone
        assert [v for v in screen.views()[:-1] if v.query(Collapsible)] == []
        box.collapsed = False  # opened on demand, the thoughts are there to read
        await pilot.pause()
        assert thoughts in str(box.query_one(".reasoning").render())
        assert thoughts not in screen.session.build_prompt().text  # never sent back
