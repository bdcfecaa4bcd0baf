"""The settings screen (F10): model file, context size and RoPE, prompt format, sampler preset
and overrides, reply length, prompt layout and system prompt, theme.

Ctrl+S writes the changed keys to settings.toml through `Tavern.update_settings` (checked by
the same model that reads the file: a bad value is one error line and nothing is written).
A change that needs the model loaded again (file, context, RoPE, GPU layers) reloads it in the
background; the status bars show the load's progress.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import Button, Footer, Input, Label, Select, Static, TextArea

from tavern.errors import TavernError

if TYPE_CHECKING:
    from tavern.session import Tavern

# (dotted key, label, kind); kinds: str, int, float, optint, optfloat, select, text
FIELDS: list[tuple[str, str, str]] = [
    ("model.path", "Model (GGUF path or name in models/; empty = bundled)", "str"),
    ("model.n_ctx", "Context size (tokens)", "int"),
    ("model.rope_alpha", "RoPE NTK alpha (0 = off)", "float"),
    ("model.rope_freq_base", "RoPE freq base (0 = from the model)", "float"),
    ("model.n_gpu_layers", "GPU layers (-1 = all that fit, 0 = CPU)", "int"),
    ("model.format", "Prompt format", "select"),
    ("generation.preset", "Sampler preset", "select"),
    ("generation.temperature", "Temperature (empty = the preset's)", "optfloat"),
    ("generation.seed", "Seed (empty = random)", "optint"),
    ("generation.max_tokens", "Reply length (tokens)", "int"),
    ("prompt.layout", "Prompt layout", "select"),
    ("chat.user_name", "Your name", "str"),
    ("ui.theme", "Theme", "select"),
    ("prompt.system_prompt", "System prompt", "text"),
]


def _wid(dotted: str) -> str:
    return "set-" + dotted.replace(".", "-")


class SettingsScreen(Screen[None]):
    DEFAULT_CSS = """
    SettingsScreen #set-title { height: 1; background: $panel; padding: 0 1; }
    SettingsScreen #set-form { height: 1fr; padding: 0 1; }
    SettingsScreen .row { height: 3; }
    SettingsScreen .row Label { width: 40; padding: 1 1 0 0; color: $text-muted; }
    SettingsScreen .row Input, SettingsScreen .row Select { width: 1fr; }
    SettingsScreen TextArea { height: 6; }
    SettingsScreen #set-preset-info { color: $text-muted; height: auto; padding: 0 0 1 0; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+s", "save", "Save", id="settings.save", priority=True),
        Binding("escape", "cancel", "Back", id="settings.back", priority=True),
    ]

    def __init__(self, tavern: Tavern) -> None:
        super().__init__()
        self.tavern = tavern

    def current(self, dotted: str) -> object:
        section, _, key = dotted.partition(".")
        return getattr(getattr(self.tavern.settings, section), key)

    def options(self, dotted: str) -> list[tuple[str, str]]:
        if dotted == "model.format":
            return [("from the model file", "")] + [(f, f) for f in self.tavern.presets.formats()]
        if dotted == "generation.preset":
            names = self.tavern.presets.names()
            cur = str(self.current(dotted))
            return [(n, n) for n in ([*names, cur] if cur not in names else names)]
        if dotted == "prompt.layout":
            return [("cache friendly", "cache_friendly"), ("SillyTavern order", "sillytavern")]
        if dotted == "ui.theme":
            return [("default", "")] + [(t, t) for t in sorted(self.app.available_themes)]
        return []

    def compose(self) -> ComposeResult:
        yield Static(Text("Settings   (Ctrl+S save, Esc back)", style="bold"), id="set-title")
        with VerticalScroll(id="set-form"):
            models = self.tavern.presets.models()
            if models:
                yield Static(Text("In models/: " + ", ".join(models), style="dim"))
            for dotted, label, kind in FIELDS:
                value = self.current(dotted)
                if kind == "text":
                    yield Label(label)
                    yield TextArea(str(value), id=_wid(dotted), soft_wrap=True)
                    continue
                with Horizontal(classes="row"):
                    yield Label(label)
                    if kind == "select":  # every choice setting is a string
                        opts = self.options(dotted)
                        if str(value) not in [v for _, v in opts]:
                            opts.append((str(value), str(value)))
                        yield Select(opts, value=str(value), allow_blank=False, id=_wid(dotted))
                    else:
                        yield Input("" if value is None else str(value), id=_wid(dotted))
                if dotted == "generation.preset":
                    yield Static("", id="set-preset-info")
            yield Button("Remote backends… (F4)", id="set-backends")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(f"#{_wid('model.path')}", Input).focus()
        self._show_preset(str(self.current("generation.preset")))

    @on(Button.Pressed, "#set-backends")
    def _backends(self) -> None:
        from tavern.tui.screens.backends import open_backends

        open_backends(self.app, self.tavern)

    @on(Select.Changed, "#set-generation-preset")
    def _preset_changed(self, event: Select.Changed) -> None:
        self._show_preset(str(event.value))

    def _show_preset(self, name: str) -> None:
        """The sampler values of the chosen preset, so the user sees what they pick."""
        try:
            s = self.tavern.presets.sampler_preset(name)
            keys = (
                "temperature",
                "top_p",
                "top_k",
                "min_p",
                "repetition_penalty",
                "repetition_penalty_range",
                "dry_multiplier",
                "xtc_probability",
            )
            shown = [f"{k}={getattr(s, k)}" for k in keys if hasattr(s, k)]
            text = Text("  " + "  ".join(shown), style="dim")
        except (TavernError, OSError) as err:
            text = Text(f"  {err}", style="red")
        self.query_one("#set-preset-info", Static).update(text)

    def changes(self) -> dict[str, object]:
        """The fields whose value differs from the settings; ValueError names a bad number."""
        out: dict[str, object] = {}
        for dotted, label, kind in FIELDS:
            widget = self.query_one(f"#{_wid(dotted)}")
            if kind == "text":
                value: object = widget.text  # type: ignore[attr-defined]
            elif kind == "select":
                value = widget.value  # type: ignore[attr-defined]
            else:
                raw = widget.value.strip()  # type: ignore[attr-defined]
                try:
                    if kind == "int":
                        value = int(raw)
                    elif kind == "float":
                        value = float(raw or 0)
                    elif kind == "optint":
                        value = int(raw) if raw else None
                    elif kind == "optfloat":
                        value = float(raw) if raw else None
                    else:
                        value = raw
                except ValueError:
                    raise ValueError(f"{label}: '{raw}' is not a number") from None
            if value != self.current(dotted):
                out[dotted] = value
        return out

    def action_save(self) -> None:
        try:
            changes = self.changes()
            if not changes:
                self.notify("Nothing changed", timeout=2)
                return
            reload = self.tavern.update_settings(changes)
        except (ValueError, TavernError) as err:
            self.notify(str(err), title="Settings", severity="error")
            return
        if "ui.theme" in changes and changes["ui.theme"]:
            self.app.theme = str(changes["ui.theme"])
        self.notify("Saved" + (": loading the model again" if reload else ""), timeout=3)
        if hasattr(self.app, "settings_changed"):
            self.app.settings_changed(reload)
        self.dismiss(None)

    def action_cancel(self) -> None:
        self.dismiss(None)
