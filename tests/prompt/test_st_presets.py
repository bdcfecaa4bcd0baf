"""SillyTavern instruct and context presets imported as prompt formats and story templates."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tavern.errors import PresetError
from tavern.prompt.macro_context import MacroContext
from tavern.prompt.st_presets import (
    DEFAULT_CONTEXT_PRESET,
    StoryTemplate,
    context_preset_to_story_template,
    default_story_template,
    instruct_preset_to_format,
    load_st_preset,
)
from tavern.prompt.templates import PromptFormat

ST = Path(__file__).resolve().parents[1] / "data" / "templates" / "st"


def load(name: str) -> dict:
    return json.loads((ST / f"{name}.json").read_text(encoding="utf-8"))


CHAT = [
    {"role": "system", "content": "You are Mira."},
    {"role": "user", "content": "Hello", "name": "Ann"},
    {"role": "assistant", "content": "Hi!", "name": "Mira"},
    {"role": "user", "content": "How are you?", "name": "Ann"},
]


def test_load_instruct_and_context_files() -> None:
    kind, fmt = load_st_preset(ST / "instruct-Alpaca.json")
    assert kind == "instruct" and isinstance(fmt, PromptFormat)
    assert fmt.id == "st:Alpaca" and fmt.origin == "st-preset" and not fmt.template_adds_bos
    kind, story = load_st_preset(ST / "context-Default.json")
    assert kind == "context" and isinstance(story, StoryTemplate) and story.name == "Default"


def test_default_story_string_is_sillytaverns() -> None:
    assert DEFAULT_CONTEXT_PRESET == load("context-Default")
    story = default_story_template()
    fields = {
        "system": "Be vivid.",
        "description": "An innkeeper.",
        "personality": "warm",
        "scenario": "A storm.",
        "persona": "Ann, a bard.",
        "char": "Mira",
        "user": "Ann",
        "wiBefore": "Lore A",
        "wiAfter": "Lore B",
    }
    assert story.render(fields) == (
        "Be vivid.\nLore A\nAn innkeeper.\nMira's personality: warm\nScenario: A storm.\nLore B\nAnn, a bard.\n"
    )
    assert story.render({"description": "Only this.", "char": "Mira"}) == "Only this.\n"
    assert story.render({}) == ""
    assert story.example_separator == "***" and story.chat_start == "***"


def test_chatml_story_string_trims_inside_its_wrapper() -> None:
    story = context_preset_to_story_template(load("context-ChatML"))
    assert story.render({"system": "Be vivid.", "description": "An innkeeper.", "char": "Mira"}) == (
        "<|im_start|>system\nBe vivid.\nAn innkeeper.<|im_end|>\n"
    )


def test_story_string_macros() -> None:
    story = context_preset_to_story_template(
        {
            "name": "m",
            "story_string": "{{#if system}}{{system}}{{/if}} - {{user}} meets {{char}} at {{time}}.{{unknown}}",
        }
    )
    # Without a macro context only {{trim}} is applied; fields given are filled in.
    assert (
        story.render({"system": "S", "char": "Mira"}) == "S - {{user}} meets Mira at {{time}}.{{unknown}}\n"
    )
    from datetime import datetime

    ctx = MacroContext(char="Mira", user="Ann", now=datetime(2024, 9, 15, 14, 3))
    assert (
        story.render({"system": "S {{user}}"}, macros=ctx)
        == "S Ann - Ann meets Mira at 2:03 PM.{{unknown}}\n"
    )


def test_story_string_handlebars_subset() -> None:
    story = context_preset_to_story_template(
        {
            "name": "h",
            "story_string": (
                "{{#if description}}\n"
                "  {{description}}\n"
                "{{else if scenario}}\n"
                "Scenario only: {{scenario}}\n"
                "{{else}}\n"
                "Nothing.\n"
                "{{/if}}\n"
                "{{#unless persona}}No persona.{{/unless}}\n"
                "{{! a comment }}\n"
                "A   {{~description~}}   B|{{{char}}}"
            ),
        }
    )
    # Expected outputs are Handlebars' own (SillyTavern's handlebars.js under Node), plus the
    # final newline SillyTavern adds; a field not given stays as a macro (helperMissing).
    assert story.render({"description": "D", "char": "M"}) == "  D\nNo persona.\nADB|M\n"
    assert (
        story.render({"scenario": "S", "char": "M"}) == "Scenario only: S\nNo persona.\nA{{description}}B|M\n"
    )
    assert (
        story.render({"persona": "P", "char": "M"}, final_newline=False) == "Nothing.\n\nA{{description}}B|M"
    )
    # Leading newlines go, as in SillyTavern.
    assert (
        context_preset_to_story_template({"name": "n", "story_string": "\n\n{{system}}"}).render(
            {"system": "x"}
        )
        == "x\n"
    )


def test_story_string_cannot_run_template_code() -> None:
    story = context_preset_to_story_template(
        {"name": "evil", "story_string": "{% for i in range(10) %}x{% endfor %}{{ ''.__class__ }}{{system}}"}
    )
    assert story.render({"system": "S"}) == "{% for i in range(10) %}x{% endfor %}{{ ''.__class__ }}S\n"


@pytest.mark.parametrize(
    ("preset", "message"),
    [
        ({"story_string": "{{#each items}}x{{/each}}"}, "not supported"),
        ({"story_string": "{{#if system}}open"}, "unclosed"),
        ({"story_string": "{{/if}}"}, "closes no block"),
        ({"story_string": "{{else}}"}, "outside"),
        ({"story_string": 5}, "'story_string' must be text"),
        ({"story_string": "", "use_stop_strings": "yes"}, "must be true or false"),
        ({"story_string": "", "chat_start": 3}, "'chat_start' must be text"),
    ],
)
def test_bad_context_presets(preset: dict, message: str) -> None:
    with pytest.raises(PresetError, match=message):
        context_preset_to_story_template(preset)


def test_context_stop_strings() -> None:
    story = context_preset_to_story_template({**DEFAULT_CONTEXT_PRESET, "use_stop_strings": True})
    assert story.stop_strings() == ["\n***", "\n***"]
    assert default_story_template().stop_strings() == []


def test_instruct_layout_chatml_names() -> None:
    fmt = instruct_preset_to_format(load("instruct-ChatML-Names"), "ChatML-Names")
    named = fmt.with_variables(user_name="Ann", char_name="Mira")
    assert named.render(CHAT) == (
        "You are Mira.\n<|im_start|>[Ann]\nHello<|im_end|>\n<|im_start|>[Mira]\nHi!<|im_end|>\n"
        "<|im_start|>[Ann]\nHow are you?<|im_end|>\n<|im_start|>[Mira]\n"
    )
    assert fmt.stop == [
        "\n<|im_end|>",
        "\n<|im_start|>[{{user}}]",
        "\n<|im_start|>[{{char}}]",
        "\n<|im_start|>system",
    ]


def test_instruct_names_always_and_mistral_quirks() -> None:
    fmt = instruct_preset_to_format(load("instruct-Mistral V1"), "Mistral V1")
    assert fmt.names == "always"
    chat = [CHAT[0], {"role": "assistant", "content": "Welcome!", "name": "Mira"}, CHAT[1]]
    align = (
        " [INST] Let's get started. Please respond based on the information and instructions provided above."
    )
    # The chat starts with the character's greeting, so the alignment message opens it.
    assert (
        fmt.render(chat) == "You are Mira." + align + " [/INST] Mira: Welcome!</s> [INST] Ann: Hello [/INST]"
    )
    # A name prefill after the last output sequence gets the space back (SillyTavern's fix).
    assert fmt.render(chat, prefill="Mira:").endswith(" [INST] Ann: Hello [/INST] Mira:")
    # Continuing uses the last output sequence as SillyTavern does.
    assert fmt.render(chat[:2], continue_final=True) == "You are Mira." + align + " [/INST]Mira: Welcome!"
    assert fmt.stop == [" [INST] ", " [/INST] ", " [/INST]"]
    assert not fmt.is_concatenative


def test_instruct_first_and_last_sequences_and_narrator() -> None:
    preset = {
        "name": "Custom",
        "wrap": True,
        "input_sequence": "<in>",
        "output_sequence": "<out>",
        "first_input_sequence": "<first-in>",
        "last_input_sequence": "<last-in>",
        "first_output_sequence": "<first-out>",
        "system_sequence": "<sys>",
        "system_suffix": "</sys>",
        "input_suffix": "",
        "output_suffix": "",
        "system_sequence_prefix": "BEGIN",
        "system_sequence_suffix": "END",
        "stop_sequence": "<end>",
        "names_behavior": "force",
    }
    fmt = instruct_preset_to_format(preset)
    chat = [
        CHAT[0],
        {"role": "assistant", "content": "Hi."},
        {"role": "user", "content": "One"},
        {"role": "system", "content": "Note"},
        {"role": "user", "content": "Two"},
    ]
    assert fmt.render(chat) == (
        "BEGIN\nYou are Mira.\nEND\n<first-out>\nHi.\n<in>\nOne\n<sys>\nNote</sys><last-in>\nTwo\n<out>\n"
    )
    forced = [{"role": "user", "content": "Hey", "name": "Bob", "force_name": True}]
    assert fmt.render(forced, add_generation_prompt=False) == "<last-in>\nBob: Hey\n"
    assert fmt.stop == ["\n<end>", "\n<in>", "\n<out>", "\n<first-out>", "\n<sys>"]


def test_instruct_system_same_as_user_and_no_wrap() -> None:
    fmt = instruct_preset_to_format(load("instruct-Metharme"))
    chat = CHAT + [{"role": "system", "content": "Note"}]
    assert (
        fmt.render(chat)
        == "<|system|>You are Mira.<|user|>Hello<|model|>Hi!<|user|>How are you?<|user|>Note<|model|>"
    )


def test_instruct_migrates_old_presets() -> None:
    old = {
        "name": "Old",
        "input_sequence": "### Instruction:",
        "output_sequence": "### Response:",
        "separator_sequence": "\n",
        "names": True,
        "wrap": True,
    }
    fmt = instruct_preset_to_format(old)
    assert fmt.names == "always"
    assert (
        fmt.render([{"role": "assistant", "content": "x", "name": "M"}], add_generation_prompt=False)
        == "### Response:\nM: x\n"
    )
    legacy_force = instruct_preset_to_format(
        {"input_sequence": "a", "names": False, "names_force_groups": True}
    )
    assert legacy_force.names == "force"


def test_instruct_sequences_are_data_not_code() -> None:
    preset = {
        "name": "evil",
        "input_sequence": "{{ ''.__class__.__mro__ }}{% for i in range(9) %}x{% endfor %}'\"\\",
        "output_sequence": "{{char}}>",
        "wrap": False,
    }
    fmt = instruct_preset_to_format(preset)
    out = fmt.render([{"role": "user", "content": "hi"}])
    assert out == "{{ ''.__class__.__mro__ }}{% for i in range(9) %}x{% endfor %}'\"\\hi{{char}}>"
    assert (
        fmt.with_variables(char_name="Mira").render([{"role": "user", "content": "hi"}]).endswith("hiMira>")
    )


@pytest.mark.parametrize(
    ("preset", "message"),
    [
        ({"input_sequence": 5}, "'input_sequence' must be text"),
        ({"input_sequence": "x", "wrap": "yes"}, "'wrap' must be true or false"),
        ({"input_sequence": "x", "names_behavior": "sometimes"}, "names_behavior"),
    ],
)
def test_bad_instruct_presets(preset: dict, message: str) -> None:
    with pytest.raises(PresetError, match=message):
        instruct_preset_to_format(preset, "bad")


def test_bad_preset_files(tmp_path: Path) -> None:
    cases = {
        "missing.json": None,
        "garbage.json": b"{not json",
        "list.json": b"[1, 2]",
        "latin1.json": '{"name": "caf\xe9"}'.encode("latin-1"),
        "other.json": b'{"temperature": 0.7}',
        "master.json": b'{"instruct": {}, "context": {}}',
        "bad-instruct.json": b'{"input_sequence": ["x"]}',
        "bad-context.json": b'{"story_string": "{{#if a}}"}',
    }
    for name, content in cases.items():
        path = tmp_path / name
        if content is not None:
            path.write_bytes(content)
        with pytest.raises(PresetError) as info:
            load_st_preset(path)
        assert str(path) in str(info.value) and "\n" not in str(info.value), name


def test_preset_file_with_bom(tmp_path: Path) -> None:
    path = tmp_path / "bom.json"
    path.write_bytes(b"\xef\xbb\xbf" + (ST / "instruct-Llama 3 Instruct.json").read_bytes())
    kind, fmt = load_st_preset(path)
    assert kind == "instruct"
    assert isinstance(fmt, PromptFormat) and fmt.stop == [
        "<|eot_id|>",
        "<|start_header_id|>user<|end_header_id|>",
        "<|start_header_id|>assistant<|end_header_id|>",
        "<|start_header_id|>system<|end_header_id|>",
    ]
