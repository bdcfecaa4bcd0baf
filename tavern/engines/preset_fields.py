"""Typed reading of a SillyTavern textgen preset's values, for `presets.import_st_preset`.

SillyTavern writes numbers as strings at times, flags as 0/1 or "true", its DRY breakers as a
JSON string of a list, logit bias as a list of {text, value} entries and banned tokens one a
line; `PresetReader` accepts each of those spellings and turns anything else into a
`PresetError` naming the preset and the key. The preset itself is parsed JSON, so every value
is checked here before it is used.
"""

from __future__ import annotations

import json
import math
from typing import overload

from tavern.engines.samplers import STEP_NAMES
from tavern.errors import PresetError

# KoboldCpp's sampler ids (SillyTavern's `sampler_order`) -> our steps. KoboldCpp applies min-p
# inside its top-p step and top-n-sigma inside its temperature step; 3 (tail-free) is gone.
KOBOLD_IDS: dict[int, tuple[str, ...]] = {
    0: ("top_k",),
    1: ("top_a",),
    2: ("top_p", "min_p"),
    3: (),
    4: ("typical_p",),
    5: ("temperature", "top_n_sigma"),
    6: ("penalties",),
}


class PresetReader:
    """Typed access to a preset's keys; every complaint names the preset and the key."""

    def __init__(self, obj: dict[str, object], name: str) -> None:
        self.obj = obj
        self.name = name

    def fail(self, key: str, problem: str) -> PresetError:
        return PresetError(f"{self.name}: {key} {problem}")

    @overload
    def number(self, key: str, kind: type[int]) -> int | None: ...

    @overload
    def number(self, key: str, kind: type[float]) -> float | None: ...

    def number(self, key: str, kind: type[int] | type[float]) -> int | float | None:
        """A number (or one saved as a string), whole for `int`; None when absent or null."""
        if key not in self.obj or self.obj[key] is None:
            return None
        value = self.obj[key]
        if isinstance(value, bool):
            raise self.fail(key, f"must be a number, not {value!r}")
        if isinstance(value, str):  # numbers saved as strings survive, as in SillyTavern
            try:
                value = float(value.strip())
            except ValueError:
                raise self.fail(key, f"must be a number, not {value!r}") from None
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            raise self.fail(key, f"must be a number, not {kind_of(value)}")
        if kind is int:
            if value != int(value):
                raise self.fail(key, f"must be a whole number, not {value}")
            return int(value)
        return float(value)

    def flag(self, key: str) -> bool | None:
        if key not in self.obj or self.obj[key] is None:
            return None
        value = self.obj[key]
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        if isinstance(value, (int, float)) and value in (0, 1):
            return bool(value)
        raise self.fail(key, f"must be true or false, not {value!r}")

    def breakers(self, key: str) -> list[str] | None:
        value = self.obj.get(key)
        if value is None:
            return None
        if isinstance(value, str):
            text = value.strip()
            if not text:
                return []
            parsed: object = None
            # SillyTavern stores a JSON list in a string; its UI also takes the bare
            # comma-separated quoted strings.
            for candidate in (text, f"[{text}]"):
                try:
                    parsed = json.loads(candidate)
                    break
                except json.JSONDecodeError:
                    continue
            value = parsed
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.fail(key, "must be a JSON list of strings")
        return value

    def logit_bias(self, key: str) -> tuple[dict[int, float], dict[str, float]]:
        ids: dict[int, float] = {}
        texts: dict[str, float] = {}
        value = self.obj.get(key)
        if value is None or value == "":
            return ids, texts
        if isinstance(value, dict):  # OpenAI style {"123": -100}
            for token, bias in value.items():
                try:
                    ids[int(token)] = self._bias_value(key, bias)
                except ValueError:
                    raise self.fail(key, f"has a non-numeric token id {token!r}") from None
            return ids, texts
        if not isinstance(value, list):
            raise self.fail(key, f"must be a list of {{text, value}} entries, not {kind_of(value)}")
        for entry in value:
            if not isinstance(entry, dict):
                raise self.fail(key, f"entries must be objects, not {kind_of(entry)}")
            text = entry.get("text", "")
            if not isinstance(text, str):
                raise self.fail(key, f"entry text must be a string, not {kind_of(text)}")
            text = text.strip()
            if not text:
                continue  # SillyTavern skips empty entries too
            bias = self._bias_value(key, entry.get("value", 0))
            token_ids = parse_id_list(text)
            if token_ids is not None:
                for token in token_ids:
                    ids[token] = bias
            elif text.startswith("[") and text.endswith("]"):
                raise self.fail(key, f"entry {text!r} is not a list of token ids")
            else:
                texts[text] = bias
        return ids, texts

    def _bias_value(self, key: str, value: object) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise self.fail(key, f"bias must be a number, not {value!r}")
        try:
            number = float(value)
        except ValueError:
            raise self.fail(key, f"bias must be a number, not {value!r}") from None
        if math.isnan(number):
            raise self.fail(key, "bias must be a number, not NaN")
        return number

    def banned_tokens(self, key: str) -> tuple[list[int], list[str], list[str]]:
        value = self.obj.get(key)
        if value is None:
            return [], [], []
        if not isinstance(value, str):
            raise self.fail(key, f"must be text, one entry a line, not {kind_of(value)}")
        ids: list[int] = []
        texts: list[str] = []
        strings: list[str] = []
        for line in value.splitlines():
            if not line.strip():
                continue
            token_ids = parse_id_list(line.strip())
            if token_ids is not None:
                ids += token_ids
            elif line.startswith('"') and line.endswith('"') and len(line) >= 2:
                strings.append(line[1:-1])
            else:
                texts.append("{" + line + "}")  # banned text is tokenized as is, no space
        return ids, texts, strings

    def order(self) -> list[str] | None:
        # Tavern's own files carry the exact order (null: the default order, which then
        # follows temperature_last); SillyTavern ignores the key.
        if "tavern_sampler_order" in self.obj:
            ours = self.obj["tavern_sampler_order"]
            if ours is None:
                return None
            if not isinstance(ours, list) or not all(isinstance(s, str) for s in ours):
                raise self.fail("tavern_sampler_order", "must be a list of step names")
            unknown = [s for s in ours if s not in STEP_NAMES]
            if unknown:
                raise self.fail("tavern_sampler_order", f"has an unknown step {unknown[0]!r}")
            return list(ours)
        ids = self.obj.get("sampler_order")
        if ids is None:
            return None
        if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
            raise self.fail("sampler_order", "must be a list of KoboldCpp sampler ids (0-6)")
        bad = [i for i in ids if i not in KOBOLD_IDS]
        if bad:
            raise self.fail("sampler_order", f"has an unknown sampler id {bad[0]}")
        if len(set(ids)) != len(ids):
            raise self.fail("sampler_order", "lists a sampler twice")
        return [step for i in ids for step in KOBOLD_IDS[i]]


def parse_id_list(text: str) -> list[int] | None:
    if not (text.startswith("[") and text.endswith("]")):
        return None
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError:
        return None
    if isinstance(parsed, list) and all(
        isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in parsed
    ):
        return parsed
    return None


def is_neutral(value: object, neutral: tuple[object, ...]) -> bool:
    """Whether a key Tavern cannot honour is set to one of its values that mean "off"."""
    for n in neutral:
        if isinstance(n, bool) or isinstance(value, bool):
            if isinstance(n, bool) and isinstance(value, bool) and value is n:
                return True
        elif isinstance(n, (int, float)) and isinstance(value, (int, float)):
            if float(value) == float(n):
                return True
        elif value == n:
            return True
    return isinstance(value, str) and not value.strip() and "" in neutral


def is_empty(value: object) -> bool:
    """Whether an unknown key holds nothing worth reporting."""
    return value is None or value is False or value == 0 or value in ("", [], {})


def kind_of(value: object) -> str:
    """What a wrong value is, for an error message ("an object", "text")."""
    return {dict: "an object", list: "a list", str: "text", bool: "true/false"}.get(
        type(value), type(value).__name__
    )
