"""Where regex scripts live and which of them run, as SillyTavern keeps them.

- Global scripts: `extension_settings.regex` in SillyTavern's settings.json (Tavern: its own
  file, see `tavern.scripts.store`), for every character.
- Scoped scripts: a card's `data.extensions.regex_scripts`. They run only once the user has
  allowed that card: `extension_settings.character_allowed_regex` is a list of avatar file
  names (`Mira.png`). SillyTavern has none in a group chat (no current character).
- Preset scripts: a preset's `extensions.regex_scripts` (chat- and text-completion presets
  can carry them). They run only once the user has allowed that preset:
  `extension_settings.preset_allowed_regex` maps an API id (`openai`,
  `textgenerationwebui`, ...) to a list of preset names.

The order they run in is `SCRIPT_TYPES` in engine.js: global, then preset, then scoped, each
list in its own order (`scripts_to_run`).

Reading SillyTavern's settings also does what its regex extension does on start
(`migrateSettings` in regex/index.js) to the global scripts: the old placement 0 ("markdown
display") becomes every placement with both "only" flags set, and the old 4 ("sendAs")
becomes slash commands.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import IntEnum

from tavern.scripts.model import (
    ALL_PLACEMENTS,
    Placement,
    RegexScript,
    RegexScriptError,
    parse_script,
    script_to_json,
)

GLOBAL_KEY = "regex"
CHARACTER_ALLOWED_KEY = "character_allowed_regex"
PRESET_ALLOWED_KEY = "preset_allowed_regex"
EMBEDDED_KEY = "regex_scripts"
_SENDAS = 4


class ScriptSource(IntEnum):
    """SillyTavern's `SCRIPT_TYPES` (the numbers are its; the run order is global, preset,
    scoped)."""

    GLOBAL = 0
    SCOPED = 1
    PRESET = 2


def scripts_to_run(
    global_scripts: Sequence[RegexScript],
    *,
    preset_scripts: Sequence[RegexScript] = (),
    preset_allowed: bool = False,
    character_scripts: Sequence[RegexScript] = (),
    character_allowed: bool = False,
) -> list[RegexScript]:
    """The scripts SillyTavern would run, in its order: global, the preset's if allowed, the
    character's if allowed. (Whether each one applies to a text is `regex.script_applies`.)"""
    ordered = list(global_scripts)
    if preset_allowed:
        ordered.extend(preset_scripts)
    if character_allowed:
        ordered.extend(character_scripts)
    return ordered


@dataclass(frozen=True)
class ParsedScripts:
    """Scripts read from a card or a preset, and one line for each one that could not be."""

    scripts: tuple[RegexScript, ...] = ()
    errors: tuple[str, ...] = ()


def embedded_scripts(extensions: object, *, where: str) -> ParsedScripts:
    """The `regex_scripts` of an `extensions` object (a card's `data.extensions` or a
    preset's `extensions`). Not a list: none, as SillyTavern (`Array.isArray`). A bad entry is
    left out with an error instead of breaking the others."""
    found = extensions.get(EMBEDDED_KEY) if isinstance(extensions, dict) else None
    if not isinstance(found, list):
        return ParsedScripts()
    scripts: list[RegexScript] = []
    errors: list[str] = []
    for index, obj in enumerate(found):
        try:
            scripts.append(parse_script(obj, where=f"{where}: regex script {index + 1}"))
        except RegexScriptError as err:
            errors.append(str(err))
    return ParsedScripts(tuple(scripts), tuple(errors))


def card_scripts(card: Mapping[str, object], *, where: str = "card") -> ParsedScripts:
    """A V2/V3 card's scoped scripts (`data.extensions.regex_scripts`)."""
    data = card.get("data")
    return embedded_scripts(data.get("extensions") if isinstance(data, dict) else None, where=where)


def preset_scripts(preset: Mapping[str, object], *, where: str = "preset") -> ParsedScripts:
    """A preset's bound scripts (`extensions.regex_scripts`)."""
    return embedded_scripts(preset.get("extensions"), where=where)


def with_embedded_scripts(
    extensions: Mapping[str, object], scripts: Sequence[RegexScript]
) -> dict[str, object]:
    """`extensions` with its `regex_scripts` replaced (other keys kept), ready to write back."""
    out = dict(extensions)
    out[EMBEDDED_KEY] = [script_to_json(script) for script in scripts]
    return out


@dataclass(frozen=True)
class RegexSettings:
    """The regex part of SillyTavern's `extension_settings`: the global scripts and the two
    allow lists. `extra` keeps the other keys of Tavern's file (e.g. `regex_presets`)."""

    scripts: tuple[RegexScript, ...] = ()
    character_allowed: tuple[str, ...] = ()
    preset_allowed: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    extra: Mapping[str, object] = field(default_factory=dict, compare=False, repr=False)

    def character_is_allowed(self, avatar: str) -> bool:
        return bool(avatar) and avatar in self.character_allowed

    def preset_is_allowed(self, api_id: str, preset_name: str) -> bool:
        return bool(api_id and preset_name) and preset_name in self.preset_allowed.get(api_id, ())

    def allow_character(self, avatar: str) -> RegexSettings:
        if not avatar or avatar in self.character_allowed:
            return self
        return replace(self, character_allowed=(*self.character_allowed, avatar))

    def disallow_character(self, avatar: str) -> RegexSettings:
        kept = tuple(name for name in self.character_allowed if name != avatar)
        return self if kept == self.character_allowed else replace(self, character_allowed=kept)

    def allow_preset(self, api_id: str, preset_name: str) -> RegexSettings:
        if not api_id or not preset_name or self.preset_is_allowed(api_id, preset_name):
            return self
        allowed = dict(self.preset_allowed)
        allowed[api_id] = (*allowed.get(api_id, ()), preset_name)
        return replace(self, preset_allowed=allowed)

    def disallow_preset(self, api_id: str, preset_name: str) -> RegexSettings:
        if not self.preset_is_allowed(api_id, preset_name):
            return self
        allowed = dict(self.preset_allowed)
        allowed[api_id] = tuple(name for name in allowed[api_id] if name != preset_name)
        return replace(self, preset_allowed=allowed)


def settings_from_json(obj: object, *, where: str) -> RegexSettings:
    """RegexSettings from Tavern's file, SillyTavern's `extension_settings` object, or a whole
    SillyTavern settings.json (which holds `extension_settings`). Global scripts are migrated
    as SillyTavern migrates them on start."""
    if not isinstance(obj, dict):
        raise RegexScriptError(f"{where}: expected a JSON object")
    inner = obj.get("extension_settings")
    source: dict[str, object] = dict(inner) if isinstance(inner, dict) else dict(obj)
    found = source.get(GLOBAL_KEY, [])
    if not isinstance(found, list):
        raise RegexScriptError(f"{where}: '{GLOBAL_KEY}' must be a list of regex scripts")
    scripts = tuple(
        migrate_script(parse_script(item, where=f"{where}: regex script {index + 1}"))
        for index, item in enumerate(found)
    )
    # Tavern's own file keeps its other keys; the rest of SillyTavern's extension settings
    # belongs to other extensions.
    known = (GLOBAL_KEY, CHARACTER_ALLOWED_KEY, PRESET_ALLOWED_KEY)
    extra = {} if isinstance(inner, dict) else {k: v for k, v in source.items() if k not in known}
    return RegexSettings(
        scripts=scripts,
        character_allowed=_names(source.get(CHARACTER_ALLOWED_KEY), f"{where}: '{CHARACTER_ALLOWED_KEY}'"),
        preset_allowed=_preset_names(source.get(PRESET_ALLOWED_KEY), where),
        extra=extra,
    )


def settings_to_json(settings: RegexSettings) -> dict[str, object]:
    """Tavern's file: the three keys under SillyTavern's names, then the kept extra keys."""
    out: dict[str, object] = {
        GLOBAL_KEY: [script_to_json(script) for script in settings.scripts],
        CHARACTER_ALLOWED_KEY: list(settings.character_allowed),
        PRESET_ALLOWED_KEY: {api: list(names) for api, names in settings.preset_allowed.items()},
    }
    out.update({k: v for k, v in settings.extra.items() if k not in out})
    return out


def _names(value: object, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise RegexScriptError(f"{where} must be a list of names")
    return tuple(value)


def _preset_names(value: object, where: str) -> dict[str, tuple[str, ...]]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise RegexScriptError(f"{where}: '{PRESET_ALLOWED_KEY}' must map API names to preset names")
    return {str(api): _names(names, f"{where}: '{PRESET_ALLOWED_KEY}.{api}'") for api, names in value.items()}


def migrate_script(script: RegexScript) -> RegexScript:
    """SillyTavern's `migrateSettings` for one global script (see the module's docstring)."""
    placement = script.placement
    markdown_only, prompt_only = script.markdown_only, script.prompt_only
    if Placement.MD_DISPLAY in placement:
        placement = ALL_PLACEMENTS if len(placement) == 1 else tuple(p for p in placement if p != 0)
        markdown_only = prompt_only = True
    if _SENDAS in placement:
        if len(placement) == 1:
            placement = (Placement.SLASH_COMMAND,)
        else:
            placement = tuple(p for p in placement if p != _SENDAS)
    if placement == script.placement:
        return script
    return replace(
        script,
        placement=tuple(int(p) for p in placement),
        markdown_only=markdown_only,
        prompt_only=prompt_only,
    )
