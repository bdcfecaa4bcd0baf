"""Where scripts live (global, a card's, a preset's), which run and in what order, and the
file Tavern keeps its global scripts and allow lists in."""

from __future__ import annotations

import json
import os
import stat

import pytest

from tavern.scripts.model import ALL_PLACEMENTS, Placement, RegexScript, RegexScriptError
from tavern.scripts.regex import apply_scripts
from tavern.scripts.sources import (
    RegexSettings,
    card_scripts,
    migrate_script,
    preset_scripts,
    scripts_to_run,
    settings_from_json,
    settings_to_json,
    with_embedded_scripts,
)
from tavern.scripts.store import RegexStore


def script(name: str, find: str, replace: str) -> dict[str, object]:
    return {
        "id": name,
        "scriptName": name,
        "findRegex": find,
        "replaceString": replace,
        "trimStrings": [],
        "placement": [2],
        "disabled": False,
        "markdownOnly": False,
        "promptOnly": False,
        "runOnEdit": True,
        "substituteRegex": 0,
        "minDepth": None,
        "maxDepth": None,
    }


CARD_EXTENSIONS: dict[str, object] = {
    "talkativeness": "0.5",
    "regex_scripts": [script("card", "/dog/g", "wolf"), {"scriptName": "broken", "placement": 2}],
}
CARD = {
    "spec": "chara_card_v2",
    "spec_version": "2.0",
    "data": {"name": "Mira", "extensions": CARD_EXTENSIONS},
}
PRESET = {"temp": 0.7, "extensions": {"regex_scripts": [script("preset", "/cat/g", "dog")]}}
GLOBAL = RegexScript(script_name="global", find_regex="/kitten/g", replace_string="cat", placement=(2,))


def run(text: str, scripts: list[RegexScript]) -> str:
    return apply_scripts(
        text,
        scripts,
        Placement.AI_OUTPUT,
        is_markdown=False,
        is_prompt=False,
        is_edit=False,
        depth=None,
        macros=lambda s: s,
    ).text


def test_global_then_preset_then_character_and_only_when_allowed() -> None:
    card = card_scripts(CARD, where="Mira.png")
    preset = preset_scripts(PRESET, where="Default")
    assert [s.script_name for s in card.scripts] == ["card"]
    assert card.errors == ("Mira.png: regex script 2: placement must be a list of numbers",)
    everything = scripts_to_run(
        [GLOBAL],
        preset_scripts=preset.scripts,
        preset_allowed=True,
        character_scripts=card.scripts,
        character_allowed=True,
    )
    assert [s.script_name for s in everything] == ["global", "preset", "card"]
    # Each runs on the previous one's output, so the order shows in the text.
    assert run("a kitten", everything) == "a wolf"
    not_allowed = scripts_to_run([GLOBAL], preset_scripts=preset.scripts, character_scripts=card.scripts)
    assert run("a kitten", not_allowed) == "a cat"


def test_a_card_or_preset_without_a_list_of_scripts_has_none() -> None:
    assert card_scripts({"data": {"extensions": {"regex_scripts": "nope"}}}).scripts == ()
    assert card_scripts({"name": "V1 card"}).scripts == ()
    assert preset_scripts({"temp": 1}).scripts == ()


def test_scripts_written_back_into_a_card_keep_the_other_extensions() -> None:
    card = card_scripts(CARD)
    out = with_embedded_scripts(CARD_EXTENSIONS, card.scripts)
    assert out["talkativeness"] == "0.5"
    assert out["regex_scripts"] == [script("card", "/dog/g", "wolf")]


def test_allow_lists_as_sillytavern_keeps_them() -> None:
    settings = RegexSettings()
    assert not settings.character_is_allowed("Mira.png")
    settings = settings.allow_character("Mira.png").allow_character("Mira.png")
    assert settings.character_allowed == ("Mira.png",)
    settings = settings.allow_preset("textgenerationwebui", "Default")
    assert settings.preset_is_allowed("textgenerationwebui", "Default")
    assert not settings.preset_is_allowed("openai", "Default")
    assert not settings.preset_is_allowed("textgenerationwebui", "")
    settings = settings.disallow_character("Mira.png").disallow_preset("textgenerationwebui", "Default")
    assert settings.character_allowed == ()
    assert settings.preset_allowed == {"textgenerationwebui": ()}


ST_EXTENSION_SETTINGS: dict[str, object] = {
    "regex": [
        script("current", "/a/g", "b"),
        {**script("old md", "/x/", "y"), "placement": [0]},
        {**script("old md+ai", "/x/", "y"), "placement": [0, 2]},
        {**script("old sendas", "/x/", "y"), "placement": [4]},
        {**script("old sendas+user", "/x/", "y"), "placement": [1, 4]},
    ],
    "character_allowed_regex": ["Mira.png"],
    "preset_allowed_regex": {"openai": ["Universal"]},
    "note": {"default": ""},
}
ST_SETTINGS = {
    "firstRun": False,
    "power_user": {"theme": "Dark"},
    "extension_settings": ST_EXTENSION_SETTINGS,
}


def test_sillytavern_settings_are_read_and_old_placements_migrated() -> None:
    settings = settings_from_json(ST_SETTINGS, where="settings.json")
    placements = {s.script_name: (s.placement, s.markdown_only, s.prompt_only) for s in settings.scripts}
    assert placements == {
        "current": ((2,), False, False),
        "old md": (tuple(ALL_PLACEMENTS), True, True),
        "old md+ai": ((2,), True, True),
        "old sendas": ((3,), False, False),
        "old sendas+user": ((1,), False, False),
    }
    assert settings.character_is_allowed("Mira.png")
    assert settings.preset_is_allowed("openai", "Universal")
    assert settings.extra == {}  # other extensions' settings are not Tavern's to keep
    assert migrate_script(settings.scripts[0]) is settings.scripts[0]


def test_the_store_round_trips_keeps_unknown_keys_and_is_private(tmp_path) -> None:
    store = RegexStore(tmp_path / "config" / "regex.json")
    assert store.load() == RegexSettings()
    settings = settings_from_json(
        {**ST_EXTENSION_SETTINGS, "regex_presets": [{"id": "p", "name": "Mine"}]},
        where="regex.json",
    )
    store.save(settings.allow_character("Ann.png"))
    loaded = store.load()
    assert [s.script_name for s in loaded.scripts] == [s.script_name for s in settings.scripts]
    assert loaded.character_allowed == ("Mira.png", "Ann.png")
    assert loaded.extra == {"note": {"default": ""}, "regex_presets": [{"id": "p", "name": "Mine"}]}
    on_disk = json.loads(store.path.read_text(encoding="utf-8"))
    assert list(on_disk)[:3] == ["regex", "character_allowed_regex", "preset_allowed_regex"]
    assert on_disk["regex"][0] == script("current", "/a/g", "b")
    assert settings_to_json(loaded) == on_disk
    if os.name == "posix":
        assert stat.S_IMODE(store.path.stat().st_mode) == 0o600


def test_a_damaged_store_is_one_line(tmp_path) -> None:
    path = tmp_path / "regex.json"
    path.write_text('{"regex": [', encoding="utf-8")
    with pytest.raises(RegexScriptError, match=r"^regex.json: not valid JSON \(.*\)$"):
        RegexStore(path).load()
    path.write_text('{"regex": {"a": 1}}', encoding="utf-8")
    with pytest.raises(RegexScriptError, match="^regex.json: 'regex' must be a list of regex scripts$"):
        RegexStore(path).load()
    path.write_text('{"regex": [], "preset_allowed_regex": {"openai": "Universal"}}', encoding="utf-8")
    with pytest.raises(RegexScriptError, match="must be a list of names$"):
        RegexStore(path).load()
