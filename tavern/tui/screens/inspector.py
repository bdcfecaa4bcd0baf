"""The prompt inspector: where every token of the last prompt went, and why things are missing.

Callers: the chat screen pushes `PromptInspectorScreen(session.last_prompt, session.last_lore,
format_name)` after a turn (the CLI's `--explain` prints the same account as text, from
`AssembledPrompt.explain`). It only reads what it is given; nothing is recomputed here.

Three tabs, so it fits 80x24:
- Tokens: one row per slot (system prompt, card, examples, lore, summary, memory, injections,
  history, template tokens) with its share of the context as a bar, then reply reserve, free
  and the context size; below, what was dropped and why, and the warnings.
- Lore: the entries that fired this turn (title, book, position, why), the rejected ones with
  the rule that kept each out (folded), and broken entries.
- Prompt: the exact prompt text, read-only and scrollable (copy with the terminal or the
  TextArea's selection).
Esc closes it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Collapsible, DataTable, Footer, Static, TabbedContent, TabPane, TextArea

if TYPE_CHECKING:
    from tavern.lore import ScanResult
    from tavern.prompt.assemble import AssembledPrompt

BAR_WIDTH = 16
POSITION_NAMES = {
    0: "before card",
    1: "after card",
    2: "AN top",
    3: "AN bottom",
    4: "@depth",
    5: "examples top",
    6: "examples bottom",
}
ROLE_NAMES = {0: "system", 1: "user", 2: "assistant"}


def bar(tokens: int, total: int, width: int = BAR_WIDTH) -> str:
    """A bar of `width` cells for tokens/total, in eighths so small slots still show."""
    if total <= 0 or tokens <= 0:
        return ""
    eighths = round(min(1.0, tokens / total) * width * 8)
    full, part = divmod(max(1, eighths), 8)
    return "█" * full + (" ▏▎▍▌▋▊▉"[part] if part else "")


def position_label(position: int, depth: int | None = None, role: int | None = None) -> str:
    name = POSITION_NAMES.get(position, str(position))
    if position == 4:
        name = f"@depth {depth}" + (f" {ROLE_NAMES.get(role, role)}" if role not in (None, 0) else "")
    return name


def entry_title(comment: str, uid: int) -> str:
    return comment.strip() or f"#{uid}"


class PromptInspectorScreen(Screen):
    DEFAULT_CSS = """
    PromptInspectorScreen { layout: vertical; }
    PromptInspectorScreen #insp-status { height: 1; background: $panel; color: $text-muted; padding: 0 1; }
    PromptInspectorScreen TabbedContent { height: 1fr; }
    PromptInspectorScreen TabPane { padding: 0; }
    PromptInspectorScreen DataTable { height: auto; max-height: 100%; }
    PromptInspectorScreen .notes { height: auto; padding: 0 1; margin-top: 1; }
    PromptInspectorScreen #insp-text { height: 1fr; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "close", "Close", id="inspector.close"),
        Binding("1", "tab('tab-tokens')", "Tokens", id="inspector.tokens"),
        Binding("2", "tab('tab-lore')", "Lore", id="inspector.lore"),
        Binding("3", "tab('tab-prompt')", "Prompt", id="inspector.prompt"),
    ]

    def __init__(
        self, prompt: AssembledPrompt, lore: ScanResult | None = None, format_name: str = "",
        cfg: tuple[float, str] | None = None,
    ) -> None:
        """`cfg`: (guidance scale, negative prompt) when the chat has a negative prompt."""
        super().__init__()
        self.prompt = prompt
        self.cfg = cfg
        self.lore = lore
        self.format_name = format_name

    def compose(self) -> ComposeResult:
        p = self.prompt
        head = f"Prompt {p.prompt_tokens} of {p.budget} tokens · reply {p.reply_reserve} · context {p.n_ctx}"
        if self.format_name:
            head += f" · {self.format_name}"
        yield Static(head, id="insp-status")
        fired = len(self.lore.activated) if self.lore is not None else 0
        with TabbedContent(initial="tab-tokens"):
            with TabPane("Tokens", id="tab-tokens"), VerticalScroll():
                yield DataTable(id="insp-slots", cursor_type="row", zebra_stripes=True)
                yield Static(self._dropped_text(), id="insp-dropped", classes="notes")
                yield Static(self._warnings_text(), id="insp-warnings", classes="notes")
                yield Static(self._cfg_text(), id="insp-cfg", classes="notes")
            with TabPane(f"Lore ({fired})", id="tab-lore"), VerticalScroll():
                yield from self._lore_widgets()
            with TabPane("Prompt", id="tab-prompt"):
                yield TextArea(p.text, id="insp-text", read_only=True, soft_wrap=True, compact=True)
        yield Footer()

    def on_mount(self) -> None:
        self._fill_slots()
        if self.lore is not None:
            self._fill_lore()
        self.query_one("#insp-slots", DataTable).focus()

    # -- tokens ---------------------------------------------------------------------------------

    def _fill_slots(self) -> None:
        p = self.prompt
        table = self.query_one("#insp-slots", DataTable)
        table.add_column("slot", key="slot")
        table.add_column("tokens", key="tokens")
        table.add_column("share", key="share")
        table.add_column("", key="bar", width=BAR_WIDTH)
        table.add_column("detail", key="detail")
        n_ctx = max(1, p.n_ctx)

        def row(name: str, tokens: int, detail: str = "", style: str = "") -> None:
            share = f"{100 * tokens / n_ctx:.0f}%" if tokens else ""
            table.add_row(
                Text(name, style=style),
                Text(str(tokens), justify="right", style=style),
                Text(share, justify="right", style="dim"),
                Text(bar(tokens, n_ctx), style="green" if not style else style),
                Text(detail, style="dim"),
                key=f"slot:{name}",
            )

        for slot in p.slots:
            if slot.tokens or slot.slot in ("history",):
                row(slot.slot, slot.tokens, slot.detail)
        row("reply reserve", p.reply_reserve, "max tokens of the reply", "yellow")
        row("free", p.free_tokens, "unused budget", "cyan")
        table.add_row(
            Text("context", style="bold"),
            Text(str(p.n_ctx), justify="right", style="bold"),
            "",
            "",
            "",
            key="total",
        )

    def _dropped_text(self) -> Text:
        p = self.prompt
        if not p.dropped:
            return Text("Nothing was dropped.", style="dim")
        out = Text("Dropped:\n", style="bold")
        for d in p.dropped:
            out.append(f"  − {d}\n", style="")
        return out

    def _cfg_text(self) -> Text:
        if not self.cfg:
            return Text("")
        scale, negative = self.cfg
        state = "" if scale != 1 else " (scale 1: off)"
        out = Text(f"Negative prompt (CFG, guidance {scale:g}{state}):\n", style="bold")
        out.append(negative.strip(), style="italic")
        return out

    def _warnings_text(self) -> Text:
        p = self.prompt
        if not p.warnings:
            return Text("")
        out = Text("Warnings:\n", style="bold yellow")
        for w in p.warnings:
            out.append(f"  ! {w}\n", style="yellow")
        return out

    # -- lore -----------------------------------------------------------------------------------

    def _lore_widgets(self) -> ComposeResult:
        lore = self.lore
        if lore is None:
            yield Static(Text("No lorebooks are active for this chat.", style="dim"), classes="notes")
            return
        budget = f"Lore: {lore.tokens_used} of {lore.budget} tokens" if getattr(lore, "budget", 0) else ""
        if not lore.activated:
            yield Static(Text("No entry fired this turn. " + budget, style="dim"), classes="notes")
        else:
            yield Static(Text(budget or "Fired this turn", style="bold"), classes="notes")
            yield DataTable(id="insp-fired", cursor_type="row", zebra_stripes=True)
        if lore.rejected:
            with Collapsible(
                title=f"Rejected ({len(lore.rejected)})", collapsed=True, id="insp-rejected-box"
            ):
                yield DataTable(id="insp-rejected", cursor_type="row")
        broken = getattr(lore, "broken", [])
        if broken:
            text = Text("Broken entries:\n", style="bold red")
            for b in broken:
                text.append(f"  {b.book}: {entry_title(b.comment, b.uid)} — {b.message}\n", style="red")
            yield Static(text, id="insp-broken", classes="notes")

    def _fill_lore(self) -> None:
        lore = self.lore
        if lore is None:
            return
        if lore.activated:
            table = self.query_one("#insp-fired", DataTable)
            table.add_columns("entry", "position", "order", "book", "why")
            for i, a in enumerate(lore.activated):
                table.add_row(
                    Text(entry_title(a.comment, a.uid), no_wrap=True, overflow="ellipsis"),
                    position_label(a.position, a.depth, a.role),
                    str(a.order),
                    Text(a.book + (f" ({a.kind})" if a.kind else ""), style="dim"),
                    a.reason,
                    key=f"fired:{i}",
                )
        if lore.rejected:
            table = self.query_one("#insp-rejected", DataTable)
            table.add_columns("entry", "book", "why not")
            for i, r in enumerate(lore.rejected):
                table.add_row(
                    entry_title(r.comment, r.uid),
                    Text(r.book, style="dim"),
                    r.reason,
                    key=f"rejected:{i}",
                )

    # -- actions --------------------------------------------------------------------------------

    def action_tab(self, tab: str) -> None:
        self.query_one(TabbedContent).active = tab

    def action_close(self) -> None:
        if len(self.app.screen_stack) > 1:
            self.app.pop_screen()
