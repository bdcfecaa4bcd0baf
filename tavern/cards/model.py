"""The one in-memory character card: every card version is read into `Card` and written from it.

Callers: `tavern.cards.formats` (reads PNG/JSON/CHARX into `Card.from_dict`, writes
`to_v2_dict`/`to_v3_dict`), `tavern.cards.library`, and the prompt builder (fields,
`depth_prompt`). Nothing here touches files.

Fidelity rules (SillyTavern's, see shared/reference/SILLYTAVERN.md §1):
- V1 (flat), V2 (`chara_card_v2`) and V3 (`chara_card_v3`) objects all land in the same fields.
- Unknown keys inside `data` go to `extra`; unknown top-level keys (SillyTavern's `avatar`,
  `chat`, `create_date`, anything a site adds) go to `root_extra`. `extensions` and
  `character_book` are kept verbatim. So export -> import gives back an equal `Card`.
- The top-level V1 copies of a V2 card (`name`, `description`, ..., `creatorcomment`,
  `talkativeness`, `fav`, `tags`) are derived from `data` on export and ignored on import:
  when they disagree with `data`, `data` wins (as SillyTavern's `readFromV2`).
- Text is kept byte for byte (no stripping, no `\\r\\n` rewriting).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import cast

from tavern.errors import CardError
from tavern.store.metadata import CfgMeta

SPEC_V1 = "chara_card_v1"
SPEC_V2 = "chara_card_v2"
SPEC_V3 = "chara_card_v3"

# Text fields shared by V1, V2 and V3 `data`, in SillyTavern's output order.
_V1_TEXT = ("name", "description", "personality", "scenario", "first_mes", "mes_example")
_V2_TEXT = (
    *_V1_TEXT,
    "creator_notes",
    "system_prompt",
    "post_history_instructions",
    "creator",
    "character_version",
)
_V2_KEYS = frozenset((*_V2_TEXT, "alternate_greetings", "tags", "extensions", "character_book"))
_V3_KEYS = frozenset(
    (
        "nickname",
        "group_only_greetings",
        "assets",
        "creator_notes_multilingual",
        "source",
        "creation_date",
        "modification_date",
    )
)
_DATA_KEYS = _V2_KEYS | _V3_KEYS

# Top-level keys of a V2/V3 object that are copies of `data` (SillyTavern writes them for old
# readers); they are rebuilt on export and never stored.
_DERIVED_ROOT_KEYS = frozenset(
    (*_V1_TEXT, "creatorcomment", "talkativeness", "fav", "tags", "spec", "spec_version", "data")
)

# Keys of a flat V1 object that map onto card fields (besides the V2 names, which some
# exporters also write flat).
_V1_MAPPED_KEYS = frozenset(
    (*_V2_KEYS, *_V3_KEYS, "creatorcomment", "talkativeness", "fav", "spec", "spec_version")
)

# Pygmalion/Gradio "notepad" JSON, which SillyTavern also imports as V1.
_GRADIO_FIELDS = {
    "char_name": "name",
    "char_persona": "description",
    "char_greeting": "first_mes",
    "world_scenario": "scenario",
    "example_dialogue": "mes_example",
}

_ROLES = {0: "system", 1: "user", 2: "assistant"}


@dataclass
class Card:
    """A character card of any version, normalised to V2/V3 fields.

    `spec` records where the card came from and is left out of `==`, so a V1 card exported
    as V2 and read back compares equal to itself.
    """

    name: str = ""
    description: str = ""
    personality: str = ""
    scenario: str = ""
    first_mes: str = ""
    mes_example: str = ""
    creator_notes: str = ""
    system_prompt: str = ""
    post_history_instructions: str = ""
    alternate_greetings: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    creator: str = ""
    character_version: str = ""
    extensions: dict[str, object] = field(default_factory=dict)
    character_book: dict[str, object] | None = None
    # V3 additions.
    nickname: str = ""
    group_only_greetings: list[str] = field(default_factory=list)
    assets: list[dict[str, object]] = field(default_factory=list)
    creator_notes_multilingual: dict[str, str] = field(default_factory=dict)
    source: list[str] = field(default_factory=list)
    creation_date: int | None = None
    modification_date: int | None = None
    # Unknown keys inside `data`, and unknown top-level keys; both written back on export.
    extra: dict[str, object] = field(default_factory=dict)
    root_extra: dict[str, object] = field(default_factory=dict)
    spec: str = field(default=SPEC_V2, compare=False)

    # ----------------------------------------------------------------------------------
    # reading

    @classmethod
    def from_dict(cls, obj: object, source: str = "<card>") -> Card:
        """Build a card from a parsed V1, V2 or V3 JSON object.

        Raises CardError (message starts with `source`) when the object is not a card or a
        field has a type that cannot be read as what the spec says.
        """
        if not isinstance(obj, dict):
            raise CardError(f"{source}: not a character card (JSON {_kind(obj)}, not an object)")
        try:
            spec = obj.get("spec")
            data = obj.get("data")
            if spec is not None and not isinstance(spec, str):
                raise CardError(f"{source}: field 'spec' should be text, not {_kind(spec)}")
            if not isinstance(data, dict):
                if spec in (None, SPEC_V1):
                    if _looks_like_v1(obj):
                        return cls._from_v1(obj, source)
                    raise CardError(f"{source}: not a character card (no 'spec', or 'name' with card fields)")
                if spec in (SPEC_V2, SPEC_V3):
                    raise CardError(f"{source}: {spec} card has no 'data' object")
                raise CardError(f"{source}: unsupported card spec {spec!r}")
            if spec is None:
                # Some exporters drop `spec`; a `data` object still means the V2 shape.
                spec = SPEC_V2
            elif spec not in (SPEC_V1, SPEC_V2, SPEC_V3):
                if not spec.startswith("chara_card_"):
                    raise CardError(f"{source}: unsupported card spec {spec!r}")
                # A newer version: the V3 spec asks us to import it as far as we understand it.
                spec = SPEC_V3
            return cls._from_data(obj, data, spec, source)
        except RecursionError:
            raise CardError(f"{source}: card JSON is nested too deeply") from None

    @classmethod
    def _from_data(cls, root: dict[str, object], data: dict[str, object], spec: str, source: str) -> Card:
        card = cls(spec=spec)
        # `data` wins over the top-level V1 copies; a field missing from `data` falls back
        # to its copy, as SillyTavern's readFromV2 does.
        fallback = {key: root[key] for key in (*_V1_TEXT, "tags") if key not in data and key in root}
        if "creator_notes" not in data and "creatorcomment" in root:
            fallback["creator_notes"] = root["creatorcomment"]
        card._read_fields({**fallback, **data} if fallback else data, source, prefix="data.")
        card.extra = _copy_object({k: v for k, v in data.items() if k not in _DATA_KEYS}, "data", source)
        card.root_extra = _copy_object(
            {k: v for k, v in root.items() if k not in _DERIVED_ROOT_KEYS}, "card", source
        )
        card._check_name(source)
        return card

    @classmethod
    def _from_v1(cls, obj: dict[str, object], source: str) -> Card:
        flat = dict(obj)
        for old, new in _GRADIO_FIELDS.items():
            if old in flat:
                value = flat.pop(old)
                flat.setdefault(new, value)
        if "data" in flat:
            # Written back as the V2 `data` object, so it cannot be kept as an unknown key.
            raise CardError(f"{source}: field 'data' should be an object, not {_kind(flat['data'])}")
        if "creatorcomment" in flat:
            # SillyTavern's V1 name for creator_notes; the V2 name wins when both exist.
            flat.setdefault("creator_notes", flat["creatorcomment"])
        card = cls(spec=SPEC_V1)
        card._read_fields(flat, source, prefix="")
        # SillyTavern keeps its V1-only keys in extensions once a card is V2.
        for key in ("talkativeness", "fav"):
            if key in flat:
                card.extensions.setdefault(key, _json_copy(flat[key], key, source))
        card.root_extra = _copy_object(
            {k: v for k, v in flat.items() if k not in _V1_MAPPED_KEYS}, "card", source
        )
        card._check_name(source)
        return card

    def _read_fields(self, data: Mapping[str, object], source: str, prefix: str) -> None:
        for key in _V2_TEXT:
            if key in data:
                setattr(self, key, _text(data[key], prefix + key, source))
        self.nickname = _text(data.get("nickname"), prefix + "nickname", source)
        self.alternate_greetings = _text_list(
            data.get("alternate_greetings"), prefix + "alternate_greetings", source, split=False
        )
        self.group_only_greetings = _text_list(
            data.get("group_only_greetings"), prefix + "group_only_greetings", source, split=False
        )
        self.tags = _text_list(data.get("tags"), prefix + "tags", source, split=True)
        self.source = _text_list(data.get("source"), prefix + "source", source, split=False)
        self.extensions = _object(data.get("extensions"), prefix + "extensions", source)
        self.character_book = _book(data.get("character_book"), prefix + "character_book", source)
        self.assets = _assets(data.get("assets"), prefix + "assets", source)
        self.creator_notes_multilingual = _text_map(
            data.get("creator_notes_multilingual"), prefix + "creator_notes_multilingual", source
        )
        self.creation_date = _date(data.get("creation_date"), prefix + "creation_date", source)
        self.modification_date = _date(data.get("modification_date"), prefix + "modification_date", source)

    def _check_name(self, source: str) -> None:
        if not self.name.strip():
            raise CardError(f"{source}: card has no name")

    # ----------------------------------------------------------------------------------
    # writing

    def to_v2_dict(self, source: str = "<card>", *, v1_copies: bool = True) -> dict[str, object]:
        """The card as SillyTavern writes it: V1 copies on top, `chara_card_v2` with `data`.

        V3-only fields are kept inside `data` when set (SillyTavern writes
        `group_only_greetings` there too), so a V2 export loses nothing. CardError (starting
        with `source`) if a field holds something that is not plain JSON. `v1_copies=False`
        leaves the top-level copies out (half the size of a huge card): V2 readers, Tavern's
        and SillyTavern's `readFromV2` included, take every field from `data`.
        """
        root = self._v1_copies(source) if v1_copies else {}
        return self._root_dict(root, SPEC_V2, "2.0", source)

    def to_v3_dict(self, source: str = "<card>") -> dict[str, object]:
        """The card as a `chara_card_v3` object (no top-level V1 copies; unknown top-level
        keys are kept)."""
        return self._root_dict({}, SPEC_V3, "3.0", source)

    def _root_dict(self, root: dict[str, object], spec: str, version: str, source: str) -> dict[str, object]:
        """`root` (the V1 copies, or nothing) with the unknown top-level keys, the spec and
        `data` added."""
        for key, value in _copy_object(self.root_extra, "root_extra", source).items():
            if key not in _DERIVED_ROOT_KEYS:
                root[key] = value
        root["spec"] = spec
        root["spec_version"] = version
        root["data"] = self._data_dict(source)
        return root

    def to_v3_png_dict(self, source: str = "<card>") -> dict[str, object]:
        """The `ccv3` chunk object as SillyTavern writes it: the V2 object with `spec` and
        `spec_version` rewritten to V3 (so it also carries the V1 copies)."""
        root = self.to_v2_dict(source)
        root["spec"] = SPEC_V3
        root["spec_version"] = "3.0"
        return root

    def _v1_copies(self, source: str) -> dict[str, object]:
        root: dict[str, object] = {key: getattr(self, key) for key in _V1_TEXT}
        root["creatorcomment"] = self.creator_notes
        if "talkativeness" in self.extensions:
            root["talkativeness"] = _json_copy(self.extensions["talkativeness"], "talkativeness", source)
        root["fav"] = self.extensions.get("fav", False) is True
        root["tags"] = list(self.tags)
        return root

    def _data_dict(self, source: str) -> dict[str, object]:
        data: dict[str, object] = {key: getattr(self, key) for key in _V1_TEXT}
        data["creator_notes"] = self.creator_notes
        data["system_prompt"] = self.system_prompt
        data["post_history_instructions"] = self.post_history_instructions
        data["tags"] = list(self.tags)
        data["creator"] = self.creator
        data["character_version"] = self.character_version
        data["alternate_greetings"] = list(self.alternate_greetings)
        data["extensions"] = _copy_object(self.extensions, "extensions", source)
        if self.character_book is not None:
            data["character_book"] = _copy_object(self.character_book, "character_book", source)
        data["group_only_greetings"] = list(self.group_only_greetings)
        # Optional V3 fields only when set, so a card without them stays without them.
        if self.nickname:
            data["nickname"] = self.nickname
        if self.assets:
            data["assets"] = _json_copy(self.assets, "assets", source)
        if self.creator_notes_multilingual:
            data["creator_notes_multilingual"] = dict(self.creator_notes_multilingual)
        if self.source:
            data["source"] = list(self.source)
        if self.creation_date is not None:
            data["creation_date"] = self.creation_date
        if self.modification_date is not None:
            data["modification_date"] = self.modification_date
        for key, value in _copy_object(self.extra, "extra", source).items():
            if key not in data:
                data[key] = value
        return data

    # ----------------------------------------------------------------------------------
    # derived views

    @property
    def depth_prompt(self) -> tuple[str, int, str] | None:
        """SillyTavern's "character's note": `(prompt, depth, role)` from
        `extensions.depth_prompt`, or None when absent or empty. Role is "system", "user" or
        "assistant"; odd values fall back to SillyTavern's defaults (depth 4, system)."""
        raw = self.extensions.get("depth_prompt")
        if not isinstance(raw, dict):
            return None
        prompt = raw.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            return None
        raw_depth = raw.get("depth", 4)
        try:
            depth = int(raw_depth)
        except (TypeError, ValueError, OverflowError):
            depth = 4
        if isinstance(raw_depth, bool) or depth < 0:
            depth = 4
        raw_role = raw.get("role", "system")
        if isinstance(raw_role, int) and not isinstance(raw_role, bool):
            raw_role = _ROLES.get(raw_role, "system")
        role = (
            raw_role
            if isinstance(raw_role, str) and raw_role in ("system", "user", "assistant")
            else "system"
        )
        return prompt, depth, role

    @property
    def world(self) -> str:
        """Name of the standalone lorebook linked in SillyTavern (`extensions.world`), or ""."""
        value = self.extensions.get("world")
        return value if isinstance(value, str) else ""

    @property
    def cfg(self) -> CfgMeta:
        """The character's CFG, from Tavern's `tavern_cfg` card extension (None where it sets
        nothing). A malformed value ends the reading there: what came before it stands."""
        raw = self.extensions.get("tavern_cfg") or {}
        scale: float | None = None
        negative: str | None = None
        depth: int | None = None
        if isinstance(raw, dict):
            try:
                if raw.get("guidance_scale") not in (None, ""):
                    scale = float(raw["guidance_scale"])
                    scale = scale if math.isfinite(scale) else None
                if raw.get("negative_prompt"):
                    negative = str(raw["negative_prompt"])
                if raw.get("insertion_depth") not in (None, ""):
                    depth = int(raw["insertion_depth"])
            except (TypeError, ValueError, OverflowError):
                pass  # a malformed card extension: the settings' values stand
        return CfgMeta(scale, negative, depth)


# --------------------------------------------------------------------------------------
# field readers: accept what real exporters write, refuse what cannot be a card field


def _looks_like_v1(obj: Mapping[str, object]) -> bool:
    # A bare `name` is not enough: presets and other files have one too.
    if "name" in obj:
        return any(key in obj for key in (*_V1_TEXT[1:], "creatorcomment", "char_persona", "char_greeting"))
    return "char_name" in obj and ("char_persona" in obj or "char_greeting" in obj)


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _text(value: object, name: str, source: str) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    # Numbers as text: RisuAI once wrote character_version as a number.
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, float) and math.isfinite(value):
        return repr(value)
    raise CardError(f"{source}: field '{name}' should be text, not {_kind(value)}")


def _text_list(value: object, name: str, source: str, *, split: bool) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        # SillyTavern accepts tags as "a, b, c" and a lone greeting as a string.
        if split:
            return [part.strip() for part in value.split(",") if part.strip()]
        return [value] if value else []
    if not isinstance(value, list):
        raise CardError(f"{source}: field '{name}' should be a list of text, not {_kind(value)}")
    out: list[str] = []
    for item in value:
        if isinstance(item, str):
            out.append(item)
        elif isinstance(item, (int, float)) and not isinstance(item, bool):
            out.append(_text(item, name, source))
        else:
            raise CardError(f"{source}: field '{name}' should hold text, found {_kind(item)}")
    return out


def _object(value: object, name: str, source: str) -> dict[str, object]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise CardError(f"{source}: field '{name}' should be an object, not {_kind(value)}")
    return _copy_object(value, name, source)


def _book(value: object, name: str, source: str) -> dict[str, object] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise CardError(f"{source}: field '{name}' should be an object, not {_kind(value)}")
    entries = value.get("entries")
    if entries is not None and not isinstance(entries, (list, dict)):
        raise CardError(f"{source}: field '{name}.entries' should be a list, not {_kind(entries)}")
    return _copy_object(value, name, source)


def _assets(value: object, name: str, source: str) -> list[dict[str, object]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise CardError(f"{source}: field '{name}' should be a list, not {_kind(value)}")
    for item in value:
        if not isinstance(item, dict):
            raise CardError(f"{source}: field '{name}' should hold objects, found {_kind(item)}")
    # Each item was checked to be an object just above, and JSON gives an object back as one.
    return cast("list[dict[str, object]]", _json_copy(value, name, source))


def _text_map(value: object, name: str, source: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise CardError(f"{source}: field '{name}' should be an object, not {_kind(value)}")
    for key, item in value.items():
        if not isinstance(item, str):
            raise CardError(f"{source}: field '{name}.{key}' should be text, not {_kind(item)}")
    return dict(value)


def _date(value: object, name: str, source: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise CardError(f"{source}: field '{name}' should be a number, not a boolean")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return int(value)
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    raise CardError(f"{source}: field '{name}' should be a Unix time, not {_kind(value)}")


def _json_copy(value: object, name: str, source: str) -> object:
    """A deep copy that also proves the value is plain JSON (what we can write back).

    Goes through the C JSON codec: faster than copy.deepcopy and with the same nesting limit
    as the parser that produced the value.
    """
    try:
        return json.loads(json.dumps(value, ensure_ascii=False, allow_nan=False))
    except RecursionError:
        raise CardError(f"{source}: field '{name}' is nested too deeply") from None
    except (TypeError, ValueError) as err:
        raise CardError(f"{source}: field '{name}' is not plain JSON ({err})") from None


def _copy_object(value: Mapping[str, object], name: str, source: str) -> dict[str, object]:
    """`_json_copy` of a JSON object, which comes back a JSON object."""
    copied = _json_copy(value, name, source)
    assert isinstance(copied, dict)  # json.dumps writes a mapping as an object
    return copied
