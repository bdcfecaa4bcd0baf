"""Regex script files: SillyTavern's exports read and written back unchanged, imports, and bad
files refused in one line."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from tavern.scripts.model import RegexScript, RegexScriptError, parse_script, script_to_json
from tavern.scripts.regex import run_script
from tavern.scripts.store import (
    export_file_name,
    export_script,
    export_scripts,
    import_scripts,
    read_script_file,
)

# What SillyTavern's "Export" button writes (JSON.stringify(script, null, 4)).
ST_EXPORT = """{
    "id": "8b2c5a4e-3f1d-4c8e-9a7b-2d6f0e1c3b5a",
    "scriptName": "Thinking → collapsible «block»",
    "findRegex": "/<thinking>([\\\\s\\\\S]*?)<\\\\/thinking>/g",
    "replaceString": "<details><summary>{{char}} thinks</summary>$1</details>",
    "trimStrings": [
        "\\n"
    ],
    "placement": [
        2,
        6
    ],
    "disabled": false,
    "markdownOnly": true,
    "promptOnly": false,
    "runOnEdit": true,
    "substituteRegex": 0,
    "minDepth": null,
    "maxDepth": 4
}"""


def test_an_st_export_round_trips_to_the_same_text() -> None:
    script = import_scripts(ST_EXPORT, where="regex-thinking.json").scripts[0]
    again = parse_script(json.loads(ST_EXPORT))
    assert export_script(again) == ST_EXPORT
    assert script.script_name == "Thinking → collapsible «block»"
    assert script.find_regex == r"/<thinking>([\s\S]*?)<\/thinking>/g"
    assert script.placement == (2, 6)
    assert (script.markdown_only, script.prompt_only, script.run_on_edit) == (True, False, True)
    assert (script.min_depth, script.max_depth) == (None, 4)
    assert script.trim_strings == ("\n",)


def test_an_import_gets_a_fresh_id_as_in_sillytavern() -> None:
    script = import_scripts(ST_EXPORT, where="x.json").scripts[0]
    assert script.id and script.id != "8b2c5a4e-3f1d-4c8e-9a7b-2d6f0e1c3b5a"
    assert json.loads(export_script(script))["id"] == script.id


def test_unknown_keys_and_original_spellings_survive_a_change() -> None:
    obj = {
        "scriptName": "Old",
        "findRegex": "/x/",
        "replaceString": "y",
        "placement": [2.0],
        "substituteRegex": True,  # SillyTavern before 1.12 wrote a boolean
        "minDepth": "2",
        "x_tool": {"colour": "red"},
    }
    script = parse_script(obj)
    assert script.substitute_regex == 1 and script.placement == (2,) and script.min_depth == 2
    changed = script_to_json(replace(script, disabled=True))
    assert list(changed) == [*obj, "disabled"]
    assert changed["x_tool"] == {"colour": "red"}
    assert changed["substituteRegex"] is True and changed["minDepth"] == "2" and changed["placement"] == [2.0]
    assert changed["disabled"] is True
    # A missing key stays missing when it was not changed.
    assert "trimStrings" not in changed and "maxDepth" not in changed
    assert script_to_json(replace(script, min_depth=None))["minDepth"] is None


def test_a_new_script_is_written_with_sillytaverns_keys_in_its_order() -> None:
    script = RegexScript.new("Bold names", r"/\b(Mira)\b/g", "**$1**")
    obj = script_to_json(script)
    assert list(obj) == [
        "id",
        "scriptName",
        "findRegex",
        "replaceString",
        "trimStrings",
        "placement",
        "disabled",
        "markdownOnly",
        "promptOnly",
        "runOnEdit",
        "substituteRegex",
        "minDepth",
        "maxDepth",
    ]
    assert obj["placement"] == [1] and obj["markdownOnly"] is True and obj["minDepth"] is None
    assert parse_script(obj) == script


def test_a_list_imports_and_a_bad_item_is_reported_while_the_rest_import() -> None:
    items = [json.loads(ST_EXPORT), {"scriptName": "Bad", "placement": "2"}, {"name": "not a script"}]
    result = import_scripts(json.dumps(items), where="regex-bulk.json")
    assert [s.script_name for s in result.scripts] == ["Thinking → collapsible «block»"]
    assert result.errors == (
        "regex-bulk.json: item 2: placement must be a list of numbers",
        "regex-bulk.json: item 3: not a SillyTavern regex script (it has no scriptName)",
    )
    both = export_scripts(result.scripts)
    assert [s.script_name for s in import_scripts(both, where="again.json").scripts] == [
        "Thinking → collapsible «block»"
    ]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            "{not json",
            "card.json: not valid JSON (Expecting property name enclosed in double quotes"
            " at line 1 column 2)",
        ),
        (
            '{"spec": "chara_card_v2", "data": {"name": "Mira"}}',
            "card.json: not a SillyTavern regex script (it has no scriptName)",
        ),
        ('"just text"', "card.json: not a regex script (expected a JSON object or a list of them)"),
        ("[]", "card.json: the list holds no regex scripts"),
        ('{"scriptName": "S", "disabled": "yes"}', "card.json: disabled must be true or false"),
        ('{"scriptName": "S", "trimStrings": "\\n"}', "card.json: trimStrings must be a list of strings"),
        ('{"scriptName": "S", "maxDepth": 1.5}', "card.json: maxDepth must be a whole number or null"),
        ('{"scriptName": "S", "minDepth": NaN}', "card.json: not valid JSON (NaN is not a JSON number)"),
        ('{"scriptName": "S", "findRegex": 5}', "card.json: findRegex must be text"),
    ],
)
def test_bad_files_give_one_line(content: str, message: str) -> None:
    with pytest.raises(RegexScriptError) as caught:
        import_scripts(content, where="card.json")
    assert str(caught.value) == message


def test_bytes_with_a_bom_and_an_unreadable_file(tmp_path) -> None:
    path = tmp_path / "regex-thinking.json"
    path.write_bytes(b"\xef\xbb\xbf" + ST_EXPORT.encode("utf-8"))
    assert read_script_file(path).scripts[0].max_depth == 4
    with pytest.raises(RegexScriptError) as caught:
        read_script_file(tmp_path / "missing.json")
    assert str(caught.value) == "missing.json: cannot read it (the file or its folder no longer exists)"
    (tmp_path / "latin1.json").write_bytes(b'{"scriptName": "\xe9"}')
    with pytest.raises(RegexScriptError, match="^latin1.json: not UTF-8 text$"):
        read_script_file(tmp_path / "latin1.json")


def test_an_imported_script_runs_as_exported() -> None:
    script = import_scripts(ST_EXPORT, where="x.json").scripts[0]
    text = "<thinking>\nShe is unsure.\n</thinking>Yes."
    out = run_script(script, text, macros=lambda s: s.replace("{{char}}", "Mira")).text
    assert out == "<details><summary>Mira thinks</summary>She is unsure.</details>Yes."


def test_export_file_name_is_sillytaverns() -> None:
    assert (
        export_file_name(RegexScript(script_name="Hide *Actions* v1.2")) == "regex-hide__actions__v1_2.json"
    )
