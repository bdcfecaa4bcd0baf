"""The prompt inspector at 80x24: a real prompt (assembled with the chatml format and tiktoken
counts) and a real lore scan; the user sees the slot rows, reply reserve and free space, what
was dropped, the entries that fired and the rejected ones, and the exact prompt text."""

from __future__ import annotations

from textual.app import App
from textual.widgets import Collapsible, DataTable, Static, TabbedContent, TextArea
from tui.pilot_wait import waiter

from tavern.lore import Lorebook, LoreEntry, LoreSettings, ScanMessage, scan_lore
from tavern.prompt.assemble import AssembledPrompt, SlotUsage, assemble_prompt
from tavern.prompt.inputs import CardFields, HistoryMessage, PromptInputs
from tavern.prompt.templates import get_format
from tavern.prompt.token_counter import TokenCounter
from tavern.prompt.tokenizers import count_tiktoken
from tavern.tui.screens.inspector import PromptInspectorScreen, bar

wait_until = waiter(10.0)


class Host(App):
    def __init__(self, screen: PromptInspectorScreen) -> None:
        super().__init__()
        self.inspector = screen

    def on_mount(self) -> None:
        self.push_screen(self.inspector)


def build_turn():
    count = TokenCounter(count_tiktoken)
    book = Lorebook(
        name="Harbor",
        entries=[
            LoreEntry(
                uid=0, key=["harbor"], comment="The harbor", content="Ships come and go from the harbor."
            ),
            LoreEntry(uid=1, key=["kestrel"], comment="The Kestrel", content="An airship. " * 200, order=50),
            LoreEntry(uid=2, key=["storm"], comment="Storm", content="A storm brews.", position=4, depth=2),
        ],
    )
    history = [
        HistoryMessage("Mira", "Welcome in, {{user}}!", False, index=0),
        HistoryMessage("User", "Tell me about the harbor and the kestrel in the storm.", True, index=1),
    ]
    scan = [ScanMessage(h.name, h.text, h.is_user) for h in history]
    lore = scan_lore(
        [("global", book)], scan, LoreSettings(budget_cap=100), context_size=2048, count_tokens=count
    )
    inputs = PromptInputs(
        card=CardFields(name="Mira", description="An innkeeper.", mes_example="<START>\n{{char}}: Hi"),
        user_name="User",
        history=history,
        system_prompt="You are Mira.",
        lore=lore,
    )
    return assemble_prompt(inputs, get_format("chatml"), count, 2048, 256), lore


def cells(table: DataTable) -> list[list[str]]:
    return [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]


async def test_tokens_lore_and_prompt_text() -> None:
    prompt, lore = build_turn()
    app = Host(PromptInspectorScreen(prompt, lore, "chatml"))
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until(pilot, lambda: isinstance(app.screen, PromptInspectorScreen))
        screen = app.screen
        status = str(screen.query_one("#insp-status", Static).content)
        assert f"{prompt.prompt_tokens} of {prompt.budget}" in status and "chatml" in status

        table = screen.query_one("#insp-slots", DataTable)
        await wait_until(pilot, lambda: table.row_count > 0)
        rows = {r[0]: r for r in cells(table)}
        for slot in (
            "system prompt",
            "card",
            "examples",
            "lore",
            "history",
            "reply reserve",
            "free",
            "context",
        ):
            assert slot in rows, slot
        assert rows["reply reserve"][1] == "256"
        assert rows["free"][1] == str(prompt.free_tokens)
        assert rows["context"][1] == "2048"
        assert rows["lore"][4] == "2 entries"
        assert rows["reply reserve"][3].startswith("██")  # 256 of 2048 is an eighth: two cells of 16
        # Dropped: the lore entry that did not fit its budget, and why.
        dropped = str(screen.query_one("#insp-dropped", Static).content)
        assert "The Kestrel" in dropped and "budget" in dropped

        await pilot.press("2")
        assert screen.query_one(TabbedContent).active == "tab-lore"
        fired = cells(screen.query_one("#insp-fired", DataTable))
        assert [r[0] for r in fired] == ["The harbor", "Storm"]
        assert fired[0][1] == "before card" and 'key "harbor"' in fired[0][4]
        assert fired[1][1] == "@depth 2"
        box = screen.query_one("#insp-rejected-box", Collapsible)
        assert box.collapsed and box.title == "Rejected (1)"
        rejected = cells(screen.query_one("#insp-rejected", DataTable))
        assert rejected[0][0] == "The Kestrel" and rejected[0][2].startswith("budget")

        await pilot.press("3")
        text = screen.query_one("#insp-text", TextArea)
        assert text.read_only and text.text == prompt.text
        assert "Ships come and go from the harbor." in text.text

        await pilot.press("escape")
        await wait_until(pilot, lambda: not isinstance(app.screen, PromptInspectorScreen))


async def test_without_lore_and_with_warnings() -> None:
    prompt = AssembledPrompt(
        text="<|im_start|>system\nYou are Mira.<|im_end|>\n",
        stop=[],
        add_bos=True,
        messages=[],
        slots=[SlotUsage("system prompt", 900), SlotUsage("history", 0, "0 of 12 messages")],
        dropped=["12 oldest messages: over the budget"],
        prompt_tokens=900,
        budget=768,
        n_ctx=1024,
        reply_reserve=256,
        first_message_index=-1,
        warnings=[
            (
                "the card, system prompt and notes take 900 tokens, over the 768-token budget: "
                "no room for history"
            )
        ],
    )
    app = Host(PromptInspectorScreen(prompt, None))
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until(pilot, lambda: isinstance(app.screen, PromptInspectorScreen))
        screen = app.screen
        rows = {r[0]: r for r in cells(screen.query_one("#insp-slots", DataTable))}
        assert rows["history"][4] == "0 of 12 messages" and rows["free"][1] == "0"
        assert "no room for history" in str(screen.query_one("#insp-warnings", Static).content)
        assert "12 oldest messages" in str(screen.query_one("#insp-dropped", Static).content)
        await pilot.press("2")
        assert not screen.query("#insp-fired")


def test_bar() -> None:
    assert bar(0, 100) == "" and bar(100, 100) == "█" * 16
    assert bar(1, 10_000) == "▏"  # a tiny slot still shows
    assert bar(50, 100) == "█" * 8
