"""SillyTavern instruct and context presets, imported as Tavern prompt formats and story templates.

Who calls it: the CLI and settings screens when the user imports a preset file
(:func:`load_st_preset`), and the prompt assembler, which renders the system block with a
:class:`StoryTemplate` (the default one is SillyTavern's "Default" context preset) and the chat
with a :class:`~tavern.prompt.templates.PromptFormat`.

An instruct preset becomes a generated Jinja chat template, rendered in the same sandbox as
every other template, that lays messages out the way SillyTavern 1.12 does
(``formatInstructModeChat`` / ``formatInstructModePrompt`` in ``public/scripts/instruct-mode.js``):

- a chat message is ``prefix`` + [``Name: ``] + text + ``suffix``, the parts joined with
  ``\\n`` when ``wrap`` is on, where an empty suffix becomes ``\\n`` under ``wrap``; user turns
  use the input sequence/suffix, replies the output ones, and system messages after the first
  (narrator notes, author's notes) the system ones, or the input ones when
  ``system_same_as_user``; the first chat message uses ``first_input/output_sequence``, the last
  user message ``last_input_sequence``, a continued reply ``last_output_sequence``;
- a leading system message is the story string (the assembler renders it with a
  :class:`StoryTemplate`): ``system_sequence_prefix``/``_suffix`` around it, and a final
  newline under ``wrap``. SillyTavern 1.12 wraps only the ``{{system}}`` part with them; here
  the whole block, which is the same text when the system prompt comes first (it does in every
  bundled story string);
- the generation prompt is the (last) output sequence; under ``wrap`` it starts on a new line
  and ends with one, as SillyTavern produces it after trimming the last message's newline;
- ``user_alignment_message`` is sent as a first user turn when the chat does not start with one;
- names: ``always`` prints ``Name: `` before user and character messages that carry a ``name``;
  ``force`` only for messages marked ``force_name`` (SillyTavern: group chats and forced
  avatars); ``none`` never. ``{{name}}`` in a sequence is the speaker's name; ``{{user}}`` and
  ``{{char}}`` come from the format's ``user_name``/``char_name`` variables when set. Where
  SillyTavern ends the prompt with ``Name:`` (names ``always``), pass ``prefill="Name:"`` to
  :meth:`PromptFormat.render`; the format's ``names`` attribute says which behaviour applies.

Stop strings follow ``getInstructStoppingSequences``; ``{{user}}``/``{{char}}`` in them are left for
the assembler to substitute. A context preset's story string (Handlebars) is translated to
sandboxed Jinja by :mod:`tavern.prompt.story_string`: ``{{x}}``, ``{{{x}}}``, ``{{#if x}}``,
``{{#unless x}}``, ``{{else}}``, ``{{else if x}}``, ``{{/if}}``, comments, ``~`` whitespace control
and Handlebars' standalone-line rule; ``{{trim}}`` and any other ``{{macro}}`` are left for macro
substitution, as in SillyTavern.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from tavern.errors import PresetError, TemplateError
from tavern.prompt import macros as _macros
from tavern.prompt.macro_context import MacroContext
from tavern.prompt.story_string import jinja_literal, translate_story_string
from tavern.prompt.template_render import render_template
from tavern.prompt.template_sandbox import compile_template
from tavern.prompt.templates import PromptFormat

__all__ = [
    "DEFAULT_CONTEXT_PRESET",
    "StoryTemplate",
    "context_preset_to_story_template",
    "default_story_template",
    "instruct_preset_to_format",
    "load_st_preset",
]

#: SillyTavern's "Default" context preset (default/content/presets/context/Default.json, 1.12.x).
DEFAULT_CONTEXT_PRESET: dict[str, object] = {
    "story_string": (
        "{{#if system}}{{system}}\n{{/if}}{{#if wiBefore}}{{wiBefore}}\n{{/if}}"
        "{{#if description}}{{description}}\n{{/if}}"
        "{{#if personality}}{{char}}'s personality: {{personality}}\n{{/if}}"
        "{{#if scenario}}Scenario: {{scenario}}\n{{/if}}{{#if wiAfter}}{{wiAfter}}\n{{/if}}"
        "{{#if persona}}{{persona}}\n{{/if}}"
    ),
    "example_separator": "***",
    "chat_start": "***",
    "use_stop_strings": False,
    "allow_jailbreak": False,
    "always_force_name2": True,
    "trim_sentences": False,
    "single_line": False,
    "name": "Default",
}

_INSTRUCT_TEXT_KEYS = (
    "input_sequence",
    "input_suffix",
    "output_sequence",
    "output_suffix",
    "system_sequence",
    "system_suffix",
    "first_input_sequence",
    "last_input_sequence",
    "first_output_sequence",
    "last_output_sequence",
    "last_system_sequence",
    "system_sequence_prefix",
    "system_sequence_suffix",
    "stop_sequence",
    "user_alignment_message",
    "activation_regex",
    "name",
)
_INSTRUCT_BOOL_KEYS = ("wrap", "macro", "system_same_as_user", "skip_examples", "names", "names_force_groups")
_NAMES_BEHAVIORS = ("none", "force", "always")

# Markers that stand for macros inside generated sequences (filled in by the template).
_NAME_MARK, _USER_MARK, _CHAR_MARK = "\x00name\x00", "\x00user\x00", "\x00char\x00"


@dataclass(frozen=True)
class _Instruct:
    """An instruct preset, checked and in its current shape."""

    text: dict[str, str]  # every key of _INSTRUCT_TEXT_KEYS, "" when missing
    wrap: bool
    macro: bool
    system_same_as_user: bool
    names_behavior: str


def _migrate_instruct(preset: Mapping[str, object], where: str) -> _Instruct:
    """Checked copy of an instruct preset in its current shape (SillyTavern's
    ``migrateInstructModeSettings``: separator_sequence -> output_suffix, names flags ->
    names_behavior, missing keys -> defaults)."""
    texts: dict[str, str] = {}
    for key in _INSTRUCT_TEXT_KEYS + ("separator_sequence",):
        value = preset.get(key)
        if value is None:
            continue
        if not isinstance(value, str):
            raise PresetError(f"{where}: '{key}' must be text, not {type(value).__name__}")
        texts[key] = value
    flags: dict[str, bool] = {}
    for key in _INSTRUCT_BOOL_KEYS:
        if key in preset:
            value = preset[key]
            if not isinstance(value, bool):
                raise PresetError(f"{where}: '{key}' must be true or false")
            flags[key] = value
    if "separator_sequence" in texts:
        texts["output_suffix"] = texts.pop("separator_sequence") or ""
    behavior = preset.get("names_behavior", "force")
    if "names" in flags:
        behavior = "always" if flags["names"] else ("force" if flags.get("names_force_groups") else "none")
    if not isinstance(behavior, str) or behavior not in _NAMES_BEHAVIORS:
        raise PresetError(f"{where}: 'names_behavior' must be one of {', '.join(_NAMES_BEHAVIORS)}")
    return _Instruct(
        text={key: texts.get(key, "") for key in _INSTRUCT_TEXT_KEYS},
        wrap=flags.get("wrap", True),
        macro=flags.get("macro", True),
        system_same_as_user=flags.get("system_same_as_user", False),
        names_behavior=behavior,
    )


def _mark_macros(text: str, macro: bool) -> str:
    if not macro:
        return text
    text = re.sub(r"\{\{name\}\}", lambda _m: _NAME_MARK, text, flags=re.IGNORECASE)
    text = re.sub(r"\{\{user\}\}", lambda _m: _USER_MARK, text, flags=re.IGNORECASE)
    return re.sub(r"\{\{char\}\}", lambda _m: _CHAR_MARK, text, flags=re.IGNORECASE)


def _stop_strings(p: _Instruct, context: Mapping[str, object] | None) -> list[str]:
    """SillyTavern's ``getInstructStoppingSequences``; speaker names stay as macros."""

    def named(seq: str, who: str) -> str:
        return re.sub(r"\{\{name\}\}", lambda _m: who, seq, flags=re.IGNORECASE) if p.macro else seq

    t = p.text
    combined = "\n".join(
        [
            t["stop_sequence"],
            named(t["input_sequence"], "{{user}}"),
            named(t["output_sequence"], "{{char}}"),
            named(t["first_output_sequence"], "{{char}}"),
            named(t["last_output_sequence"], "{{char}}"),
            named(t["system_sequence"], "System"),
            named(t["last_system_sequence"], "System"),
        ]
    )
    result: list[str] = []
    for line in dict.fromkeys(combined.split("\n")):
        if line.strip():
            result.append("\n" + line if p.wrap else line)
    if context and context.get("use_stop_strings"):
        for key in ("chat_start", "example_separator"):
            if context.get(key):
                result.append("\n" + str(context[key]))
    return list(dict.fromkeys(result))


# The generated template. Names in capitals are filled in from the preset at import time.
_INSTRUCT_TEMPLATE = """\
{#- Generated from the SillyTavern instruct preset NAME_COMMENT by Tavern's importer. -#}
{%- set S = {
    'input': INPUT, 'output': OUTPUT, 'system': SYSTEM,
    'input_suffix': INPUT_SUFFIX, 'output_suffix': OUTPUT_SUFFIX, 'system_suffix': SYSTEM_SUFFIX,
    'first_input': FIRST_INPUT, 'last_input': LAST_INPUT,
    'first_output': FIRST_OUTPUT, 'last_output': LAST_OUTPUT,
    'sp_prefix': SP_PREFIX, 'sp_suffix': SP_SUFFIX, 'align': ALIGN, 'sep': SEP,
} -%}
{%- set user_fallback = user_name if user_name is defined else 'User' -%}
{%- set char_fallback = char_name if char_name is defined else 'Assistant' -%}
{%- macro fill(seq, who) -%}
    {{- seq.replace(NAME_MARK, who)
           .replace(USER_MARK, user_name if user_name is defined else '{{user}}')
           .replace(CHAR_MARK, char_name if char_name is defined else '{{char}}') -}}
{%- endmacro -%}
{%- macro turn(prefix, body, suffix) -%}
    {%- if not suffix and WRAP -%}{%- set suffix = '\\n' -%}{%- endif -%}
    {{- [prefix, body + suffix] | select | join(S.sep) -}}
{%- endmacro -%}
{%- set ns = namespace(newline=false, started=false, last_user=-1) -%}
{%- for m in messages -%}
    {%- if m['role'] == 'user' -%}{%- set ns.last_user = loop.index0 -%}{%- endif -%}
{%- endfor -%}
{%- for m in messages -%}
    {%- if loop.first and m['role'] == 'system' -%}
        {%- set block = m['content'] -%}
        {%- if block -%}
            {%- if S.sp_prefix -%}{%- set block = fill(S.sp_prefix, 'System') + S.sep + block -%}{%- endif -%}
            {%- if S.sp_suffix -%}{%- set block = block + S.sep + fill(S.sp_suffix, 'System') -%}{%- endif -%}
            {%- if WRAP and not block.endswith('\\n') -%}{%- set block = block + '\\n' -%}{%- endif -%}
        {%- endif -%}
        {{- block -}}
        {%- if block -%}{%- set ns.newline = block.endswith('\\n') -%}{%- endif -%}
    {%- else -%}
        {%- if not ns.started and S.align and m['role'] != 'user' -%}
            {%- set text = turn(fill(S.first_input or S.input, user_fallback), S.align, fill(S.input_suffix, user_fallback)) -%}
            {{- text -}}
            {%- if text -%}{%- set ns.newline = text.endswith('\\n') -%}{%- endif -%}
        {%- endif -%}
        {%- set open_last = continue_final is defined and continue_final and loop.last -%}
        {%- if m['role'] == 'system' -%}
            {%- set who = 'System' -%}
            {%- set prefix = S.input if SAME_AS_USER else S.system -%}
            {%- set suffix = S.input_suffix if SAME_AS_USER else S.system_suffix -%}
        {%- elif m['role'] == 'user' -%}
            {%- set who = m['name'] or user_fallback -%}
            {%- set prefix = S.input -%}
            {%- if not ns.started and S.first_input -%}{%- set prefix = S.first_input -%}{%- endif -%}
            {%- if loop.index0 == ns.last_user and S.last_input -%}{%- set prefix = S.last_input -%}{%- endif -%}
            {%- set suffix = S.input_suffix -%}
        {%- else -%}
            {%- set who = m['name'] or char_fallback -%}
            {%- set prefix = S.output -%}
            {%- if not ns.started and S.first_output -%}{%- set prefix = S.first_output -%}{%- endif -%}
            {%- if open_last and S.last_output -%}
                {%- set prefix = S.last_output -%}
                {#- SillyTavern's Mistral fix: a name written after a last output sequence that
                    lacks the output sequence's trailing space gets that space back. -#}
                {%- if tavern_prefill is defined and tavern_prefill and S.output[-1:].isspace()
                      and not S.last_output[-1:].isspace() -%}
                    {%- set prefix = prefix + S.output[-1:] -%}
                {%- endif -%}
            {%- endif -%}
            {%- set suffix = S.output_suffix -%}
        {%- endif -%}
        {%- set body = m['content'] -%}
        {%- if m['role'] != 'system' and m['name'] and (NAMES == 'always' or (NAMES == 'force' and m['force_name'])) -%}
            {%- set body = m['name'] + ': ' + body -%}
        {%- endif -%}
        {%- set text = turn(fill(prefix, who), body, fill(suffix, who)) -%}
        {{- text -}}
        {%- if text -%}{%- set ns.newline = text.endswith('\\n') -%}{%- endif -%}
        {%- set ns.started = true -%}
    {%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {%- set seq = fill(S.last_output or S.output, char_fallback) -%}
    {%- if WRAP -%}
        {%- if not ns.newline -%}{{- '\\n' -}}{%- endif -%}
        {%- if seq.rstrip() -%}{{- seq.rstrip() + '\\n' -}}{%- endif -%}
    {%- else -%}
        {{- seq -}}
    {%- endif -%}
{%- endif -%}
"""


def instruct_preset_to_format(
    preset: Mapping[str, object], name: str | None = None, *, context: Mapping[str, object] | None = None
) -> PromptFormat:
    """A prompt format from a SillyTavern instruct preset (see the module docstring for the
    layout rules). ``context``: the context preset used with it, for its stop strings."""
    label = name or (preset.get("name") if isinstance(preset, dict) else None) or "instruct preset"
    where = f"SillyTavern instruct preset '{label}'"
    if not isinstance(preset, dict):
        raise PresetError(f"{where}: expected a JSON object")
    p = _migrate_instruct(preset, where)
    macro = p.macro

    def lit(key: str) -> str:
        return jinja_literal(_mark_macros(p.text[key], macro))

    replacements = {
        "NAME_COMMENT": json.dumps(str(label)).replace("#}", "# }"),
        "INPUT": lit("input_sequence"),
        "OUTPUT": lit("output_sequence"),
        "SYSTEM": lit("system_sequence"),
        "INPUT_SUFFIX": lit("input_suffix"),
        "OUTPUT_SUFFIX": lit("output_suffix"),
        "SYSTEM_SUFFIX": lit("system_suffix"),
        "FIRST_INPUT": lit("first_input_sequence"),
        "LAST_INPUT": lit("last_input_sequence"),
        "FIRST_OUTPUT": lit("first_output_sequence"),
        "LAST_OUTPUT": lit("last_output_sequence"),
        "SP_PREFIX": lit("system_sequence_prefix"),
        "SP_SUFFIX": lit("system_sequence_suffix"),
        "ALIGN": jinja_literal(p.text["user_alignment_message"]),
        "SEP": jinja_literal("\n" if p.wrap else ""),
        "NAME_MARK": jinja_literal(_NAME_MARK),
        "USER_MARK": jinja_literal(_USER_MARK),
        "CHAR_MARK": jinja_literal(_CHAR_MARK),
        "SAME_AS_USER": "true" if p.system_same_as_user else "false",
        "WRAP": "true" if p.wrap else "false",
        "NAMES": jinja_literal(p.names_behavior),
    }
    pattern = re.compile(r"\b(" + "|".join(sorted(replacements, key=len, reverse=True)) + r")\b")
    source = pattern.sub(lambda m: replacements[m.group(1)], _INSTRUCT_TEMPLATE)
    try:
        return PromptFormat(
            id=f"st:{label}",
            name=str(label),
            source=source,
            stop=_stop_strings(p, context),
            template_adds_bos=False,
            system_role="system",
            upstream="SillyTavern instruct preset",
            origin="st-preset",
            names=p.names_behavior,
            match=[p.text["activation_regex"]] if p.text["activation_regex"] else [],
        ).check()
    except TemplateError as err:
        raise PresetError(f"{where}: {err}") from None


# ---------------------------------------------------------------------------------------------
# Context presets: the story string


@dataclass
class StoryTemplate:
    """A context preset: the story string (the system block) and its companion settings."""

    name: str
    story_string: str
    source: str
    example_separator: str = ""
    chat_start: str = ""
    use_stop_strings: bool = False
    names_as_stop_strings: bool = True
    always_force_name2: bool = True
    trim_sentences: bool = False
    single_line: bool = False
    extra: dict[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._template = compile_template(self.source, self._label)

    @property
    def _label(self) -> str:
        return f"story string of context preset '{self.name}'"

    def render(
        self,
        fields: Mapping[str, object],
        *,
        macros: MacroContext | None = None,
        final_newline: bool = True,
    ) -> str:
        """The story string for ``fields`` (system, description, personality, scenario, persona,
        char, user, wiBefore, wiAfter, loreBefore, loreAfter, mesExamples, mesExamplesRaw).

        As SillyTavern's ``renderStoryString``: render, substitute macros (``macros`` given;
        otherwise only ``{{trim}}`` is applied), drop leading newlines, and end with a newline
        (``final_newline``: SillyTavern skips it for instruct formats without ``wrap``).
        """
        values = {
            str(k): ("" if v is None else v if isinstance(v, str) else str(v)) for k, v in fields.items()
        }
        values.setdefault("loreBefore", values.get("wiBefore", ""))
        values.setdefault("loreAfter", values.get("wiAfter", ""))
        text = render_template(self._template, self._label, {"F": values})
        text = _macros.substitute(text, macros) if macros is not None else _macros.strip_trim(text)
        text = text.lstrip("\n")
        if final_newline and text and not text.endswith("\n"):
            text += "\n"
        return text

    def stop_strings(self) -> list[str]:
        """Stop strings the preset adds (``use_stop_strings``): chat start, example separator."""
        if not self.use_stop_strings:
            return []
        return ["\n" + s for s in (self.chat_start, self.example_separator) if s]


def context_preset_to_story_template(preset: Mapping[str, object]) -> StoryTemplate:
    """A :class:`StoryTemplate` from a SillyTavern context preset."""
    name = preset.get("name") if isinstance(preset, dict) else None
    where = f"SillyTavern context preset '{name or 'unnamed'}'"
    if not isinstance(preset, dict):
        raise PresetError(f"{where}: expected a JSON object")
    story = preset.get("story_string")
    if not isinstance(story, str):
        raise PresetError(f"{where}: 'story_string' must be text")
    texts = {}
    for key in ("example_separator", "chat_start"):
        value = preset.get(key, "")
        if value is None:
            value = ""
        if not isinstance(value, str):
            raise PresetError(f"{where}: '{key}' must be text")
        texts[key] = value
    flags = {}
    defaults = {
        "use_stop_strings": False,
        "names_as_stop_strings": True,
        "always_force_name2": True,
        "trim_sentences": False,
        "single_line": False,
    }
    for key, default in defaults.items():
        value = preset.get(key, default)
        if not isinstance(value, bool):
            raise PresetError(f"{where}: '{key}' must be true or false")
        flags[key] = value
    known = {"story_string", "name", *texts, *flags}
    try:
        return StoryTemplate(
            name=str(name or "unnamed"),
            story_string=story,
            source=translate_story_string(story, where),
            example_separator=texts["example_separator"],
            chat_start=texts["chat_start"],
            use_stop_strings=flags["use_stop_strings"],
            names_as_stop_strings=flags["names_as_stop_strings"],
            always_force_name2=flags["always_force_name2"],
            trim_sentences=flags["trim_sentences"],
            single_line=flags["single_line"],
            extra={k: v for k, v in preset.items() if k not in known},
        )
    except TemplateError as err:
        raise PresetError(f"{where}: {err}") from None


def default_story_template() -> StoryTemplate:
    """SillyTavern's default story string ("Default" context preset)."""
    return context_preset_to_story_template(DEFAULT_CONTEXT_PRESET)


# ---------------------------------------------------------------------------------------------
# Files

_MAX_PRESET_BYTES = 2_000_000


def load_st_preset(path: str | Path) -> tuple[Literal["instruct", "context"], PromptFormat | StoryTemplate]:
    """Read a SillyTavern preset file: ("instruct", PromptFormat) or ("context", StoryTemplate).

    Raises PresetError naming the file for anything that is not one of the two.
    """
    p = Path(path)
    try:
        with p.open("rb") as fh:
            raw = fh.read(_MAX_PRESET_BYTES + 1)
    except OSError as err:
        raise PresetError(f"{p}: cannot read: {err.strerror or err}") from None
    if len(raw) > _MAX_PRESET_BYTES:
        raise PresetError(f"{p}: file is too large to be a preset")
    try:
        data = json.loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError:
        raise PresetError(f"{p}: not UTF-8 text") from None
    except json.JSONDecodeError as err:
        raise PresetError(f"{p}: not valid JSON (line {err.lineno}: {err.msg})") from None
    if not isinstance(data, dict):
        raise PresetError(f"{p}: not a SillyTavern preset (expected a JSON object)")
    try:
        if "story_string" in data:
            data.setdefault("name", p.stem)
            return "context", context_preset_to_story_template(data)
        if "input_sequence" in data or "output_sequence" in data:
            return "instruct", instruct_preset_to_format(data, str(data.get("name") or p.stem))
    except PresetError as err:
        raise PresetError(f"{p}: {err}") from None
    if "instruct" in data and "context" in data:
        raise PresetError(
            f"{p}: a SillyTavern master export; import its instruct and context parts as separate files"
        )
    raise PresetError(
        f"{p}: not a SillyTavern instruct or context preset (no input_sequence or story_string)"
    )
