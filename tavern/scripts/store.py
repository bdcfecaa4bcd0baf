"""Regex script files: SillyTavern's exports, and the file Tavern keeps its global scripts in.

- An export (`regex-<name>.json`, SillyTavern's "Export" button) is one script object; a bulk
  export is a list of them. Both import (`import_scripts`), as SillyTavern's importer takes
  them: each script needs a `scriptName`, gets a fresh `id`, and a bad one in a list is
  reported while the others still import. Exports are written as SillyTavern writes them
  (`JSON.stringify(script, null, 4)`), so a script read and written back is the same text.
- Tavern's global regex settings (`RegexStore`, a path the caller chooses) are one JSON object
  under SillyTavern's `extension_settings` names: `regex` (the global scripts, in run order),
  `character_allowed_regex`, `preset_allowed_regex`. Written atomically through
  `tavern.store.atomic`; a SillyTavern settings.json reads too (`tavern.scripts.sources`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

from tavern.scripts.model import RegexScript, RegexScriptError, parse_script, script_to_json
from tavern.scripts.sources import ParsedScripts, RegexSettings, settings_from_json, settings_to_json
from tavern.store.atomic import atomic_write_text, describe_os_error, make_dirs
from tavern.store.names import sanitize_file_name

MAX_FILE_BYTES = 32 * 1024 * 1024
"""Larger files are refused before they are parsed (real ones are kilobytes)."""

# SillyTavern's export names turn spaces and dots into underscores (regex/index.js); what else
# is unsafe in a file name is the one sanitizer's job.
_SPACES_AND_DOTS = re.compile(r"[\s.]")


def _refuse_constant(name: str) -> object:
    raise ValueError(f"{name} is not a JSON number")


def load_json(data: str | bytes, *, where: str) -> object:
    """Parse a JSON file's content (a UTF-8 BOM is allowed); RegexScriptError in one line."""
    if len(data) > MAX_FILE_BYTES:
        raise RegexScriptError(f"{where}: the file is over {MAX_FILE_BYTES // (1024 * 1024)} MB")
    try:
        text = data.decode("utf-8-sig") if isinstance(data, bytes) else data.removeprefix("\ufeff")
        return json.loads(text, parse_constant=_refuse_constant)
    except UnicodeDecodeError:
        raise RegexScriptError(f"{where}: not UTF-8 text") from None
    except json.JSONDecodeError as err:
        at = f"line {err.lineno} column {err.colno}"
        raise RegexScriptError(f"{where}: not valid JSON ({err.msg} at {at})") from None
    except ValueError as err:
        raise RegexScriptError(f"{where}: not valid JSON ({err})") from None
    except RecursionError:
        raise RegexScriptError(f"{where}: not valid JSON (nested too deeply)") from None


def import_scripts(data: str | bytes, *, where: str) -> ParsedScripts:
    """Scripts from an exported file (one object or a list), each under a fresh id.

    Raises RegexScriptError when the file is no JSON, is not a regex script, or none of its
    scripts can be read; otherwise the unreadable ones of a list are in `errors`."""
    obj = load_json(data, where=where)
    if isinstance(obj, dict):
        return ParsedScripts((_import_one(obj, where=where),))
    if not isinstance(obj, list):
        raise RegexScriptError(f"{where}: not a regex script (expected a JSON object or a list of them)")
    if not obj:
        raise RegexScriptError(f"{where}: the list holds no regex scripts")
    scripts: list[RegexScript] = []
    errors: list[str] = []
    for index, item in enumerate(obj):
        try:
            scripts.append(_import_one(item, where=f"{where}: item {index + 1}"))
        except RegexScriptError as err:
            errors.append(str(err))
    if not scripts:
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise RegexScriptError(errors[0] + more)
    return ParsedScripts(tuple(scripts), tuple(errors))


def _import_one(obj: object, *, where: str) -> RegexScript:
    if not isinstance(obj, dict):
        raise RegexScriptError(f"{where}: not a regex script (expected a JSON object)")
    if not obj.get("scriptName"):
        # What a card, a lorebook or a preset file looks like to the importer.
        raise RegexScriptError(f"{where}: not a SillyTavern regex script (it has no scriptName)")
    return parse_script(obj, where=where).with_new_id()


def read_script_file(path: Path) -> ParsedScripts:
    """`import_scripts` on a file; an unreadable file is a RegexScriptError too."""
    return import_scripts(_read_bytes(path), where=path.name)


def export_script(script: RegexScript) -> str:
    """One script as SillyTavern's export writes it."""
    return _dumps(script_to_json(script))


def export_scripts(scripts: Sequence[RegexScript]) -> str:
    """Several scripts as SillyTavern's bulk export writes them (a list)."""
    return _dumps([script_to_json(script) for script in scripts])


def export_file_name(script: RegexScript) -> str:
    """SillyTavern's name for a script's export: `regex-<name>.json`, made safe, lower case."""
    stem = sanitize_file_name(_SPACES_AND_DOTS.sub("_", script.script_name), "script", replacement="_")
    return f"regex-{stem.lower()}.json"


def _dumps(obj: object) -> str:
    # JSON.stringify(value, null, 4): a four-space indent, ": " after keys, and characters
    # outside ASCII written as they are.
    return json.dumps(obj, indent=4, ensure_ascii=False)


def _read_bytes(path: Path) -> bytes:
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise RegexScriptError(f"{path.name}: the file is over {MAX_FILE_BYTES // (1024 * 1024)} MB")
        return path.read_bytes()
    except OSError as err:
        raise RegexScriptError(f"{path.name}: cannot read it ({describe_os_error(err)})") from None


class RegexStore:
    """Tavern's global regex settings in one JSON file (see the module's docstring)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> RegexSettings:
        """The settings; empty when the file does not exist yet."""
        if not self.path.exists():
            return RegexSettings()
        where = self.path.name
        return settings_from_json(load_json(_read_bytes(self.path), where=where), where=where)

    def save(self, settings: RegexSettings) -> None:
        """Replace the file atomically (a crash leaves the old file or the new one)."""
        try:
            make_dirs(self.path.parent)
            atomic_write_text(self.path, _dumps(settings_to_json(settings)) + "\n")
        except OSError as err:
            raise RegexScriptError(f"{self.path.name}: cannot write it ({describe_os_error(err)})") from None
