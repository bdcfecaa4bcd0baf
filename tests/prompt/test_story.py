"""The `sillytavern` layout renders SillyTavern's context presets: with SillyTavern's defaults
the prompt is byte for byte the one SillyTavern 1.12 sends."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from tavern.config import Settings
from tavern.prompt.assemble import assemble_prompt
from tavern.prompt.inputs import CardFields, HistoryMessage, PromptInputs
from tavern.prompt.st_presets import context_preset_to_story_template
from tavern.prompt.story import examples_text, load_context_preset
from tavern.prompt.templates import get_format

ST = Path(__file__).parent.parent / "data" / "templates" / "st"

CARD = CardFields(
    name="Mira",
    description="Mira keeps the Rusty Lantern inn.",
    personality="warm",
    scenario="A rainy night.",
    mes_example="<START>\n{{user}}: Hi\n{{char}}: Hello!\n<START>\n{{user}}: News?\n{{char}}: Green sails.",
)
HISTORY = [
    HistoryMessage("Mira", "Welcome in!", False, index=0),
    HistoryMessage("User", "Hi, a room please.", True, index=1),
]
LORE = SimpleNamespace(
    activated=[],
    rejected=[],
    by_position=lambda: {0: "Saltmere is a port.", 1: "Green sails mean smugglers."},
)


def preset(name: str):
    return context_preset_to_story_template(json.loads((ST / f"context-{name}.json").read_text()))


def macro(text: str) -> str:
    return text.replace("{{char}}", "Mira").replace("{{user}}", "User")


def assemble(story, card: CardFields = CARD, lore=LORE):
    inputs = PromptInputs(
        card,
        "User",
        HISTORY,
        persona="A tired traveller.",
        system_prompt=Settings().prompt.system_prompt,
        lore=lore,
        layout="sillytavern",
        story=story,
        macro=macro,
    )
    return assemble_prompt(inputs, get_format("chatml"), lambda t: len(t) // 3 + 1, 4096, 200)


# What SillyTavern 1.12.6 sends with its defaults for a ChatML model (ChatML instruct and
# context presets, "Neutral - Chat" system prompt, names always), for the card above without
# example dialogue: its story string is joined with single newlines, {{trim}} closes it.
ST_CHATML_PROMPT = (
    "<|im_start|>system\n"
    "Write Mira's next reply in a fictional chat between Mira and User.\n"
    "Saltmere is a port.\n"
    "Mira keeps the Rusty Lantern inn.\n"
    "Mira's personality: warm\n"
    "Scenario: A rainy night.\n"
    "Green sails mean smugglers.\n"
    "A tired traveller.<|im_end|>\n"
    "<|im_start|>assistant\n"
    "Mira: Welcome in!<|im_end|>\n"
    "<|im_start|>user\n"
    "User: Hi, a room please.<|im_end|>\n"
    "<|im_start|>assistant\n"
    "Mira:"
)


def test_the_default_system_prompt_is_sillytaverns() -> None:
    assert Settings().prompt.system_prompt == (
        "Write {{char}}'s next reply in a fictional chat between {{char}} and {{user}}."
    )


@pytest.mark.parametrize("name", ["ChatML", "Alpaca"])
def test_sillytaverns_chatml_defaults_give_its_prompt_byte_for_byte(name: str) -> None:
    # ChatML's preset carries <|im_start|>system itself: the format writes it once, not twice.
    # Alpaca's (the same fields, no header) renders to the same ChatML prompt.
    no_examples = CardFields(**{**CARD.__dict__, "mes_example": ""})
    assert assemble(preset(name), no_examples).text == ST_CHATML_PROMPT


STORY_BODY = (
    "Write Mira's next reply in a fictional chat between Mira and User.\n"
    "Saltmere is a port.\n"
    "Mira keeps the Rusty Lantern inn.\n"
    "{personality}\n"
    "{scenario}\n"
    "Green sails mean smugglers.\n"
    "A tired traveller."
)


@pytest.mark.parametrize(
    "name, personality, scenario, examples",
    [
        # Default: "***" heads each example block and is the chat start.
        ("Default", "Mira's personality: warm", "Scenario: A rainy night.",
         "\n***\nUser: Hi\nMira: Hello!\n***\nUser: News?\nMira: Green sails.\n***"),
        ("ChatML", "Mira's personality: warm", "Scenario: A rainy night.",
         "\nUser: Hi\nMira: Hello!\nUser: News?\nMira: Green sails."),
        # Alpaca: its story string ends with a blank line (Handlebars' standalone {{/if}}
        # takes one of the two newlines after it).
        ("Alpaca", "Mira's personality: warm", "Scenario: A rainy night.",
         "\n\nUser: Hi\nMira: Hello!\nUser: News?\nMira: Green sails."),
        # Story: the fields without labels.
        ("Story", "warm", "A rainy night.",
         "\nUser: Hi\nMira: Hello!\nUser: News?\nMira: Green sails."),
    ],
)  # fmt: skip
def test_sillytaverns_default_context_presets_render_the_system_block(
    name: str, personality: str, scenario: str, examples: str
) -> None:
    p = assemble(preset(name))
    system = p.messages[0]
    assert system["role"] == "system"
    assert system["content"] == STORY_BODY.format(personality=personality, scenario=scenario) + examples
    assert "<|im_start|>system" not in system["content"]


def test_no_preset_means_sillytaverns_story_string_as_its_instruct_presets_use_it(tmp_path: Path) -> None:
    # SillyTavern's default story string, without Default's "***" (its instruct presets have none).
    assert assemble(None).text == assemble(preset("ChatML")).text
    assert "***" not in assemble(None).text
    default = load_context_preset(tmp_path, "")
    assert default.story_string == preset("Default").story_string and not default.chat_start
    assert load_context_preset(tmp_path, "Default").chat_start == "***"


def test_an_imported_context_preset_is_found_by_name(tmp_path: Path) -> None:
    (tmp_path / "context").mkdir()
    (tmp_path / "context" / "ChatML.json").write_text((ST / "context-ChatML.json").read_text())
    assert load_context_preset(tmp_path, "ChatML").story_string.startswith("<|im_start|>system")
    from tavern.errors import PresetError

    with pytest.raises(PresetError, match="context preset 'Nope' not found"):
        load_context_preset(tmp_path, "Nope")


def test_examples_take_the_separator_as_their_heading() -> None:
    assert examples_text(["a: 1", "b: 2 "], "***") == "***\na: 1\n***\nb: 2\n"
    assert examples_text(["a: 1", ""], "") == "a: 1\n"
