"""What an already parsed SillyTavern JSON value is: card, lorebook, chat header or preset.

Shared by the card reader (a clear message for a file mistaken for a card) and the file sniffer
(tavern.cards.sniff); imports nothing else of Tavern's, so neither depends on the other.
"""

from __future__ import annotations

from collections.abc import Mapping

_SAMPLER_KEYS = frozenset(
    (
        "temp",
        "temperature",
        "rep_pen",
        "repetition_penalty",
        "top_p",
        "top_k",
        "top_a",
        "min_p",
        "typical_p",
        "tfs",
        "mirostat_mode",
        "dry_multiplier",
    )
)


def is_chat_header(obj: Mapping[str, object]) -> bool:
    return ("user_name" in obj and "character_name" in obj) or "chat_metadata" in obj


def kind_of_json(obj: object) -> str:
    """The kind of an already parsed JSON value (see detect_kind)."""
    if not isinstance(obj, dict):
        return "unknown"
    spec = obj.get("spec")
    data = obj.get("data")
    if isinstance(spec, str) and spec.startswith("chara_card"):
        return "card"
    if "first_mes" in obj or "char_greeting" in obj or "char_persona" in obj:
        return "card"
    if isinstance(data, dict) and (
        "first_mes" in data or (spec is None and "name" in data and "description" in data)
    ):
        return "card"
    if spec == "lorebook_v3" or ("entries" in obj and isinstance(obj["entries"], (dict, list))):
        return "lorebook"
    if is_chat_header(obj):
        return "chat"
    if "input_sequence" in obj and "output_sequence" in obj:
        return "preset:instruct"
    if "story_string" in obj:
        return "preset:context"
    if "prompt_order" in obj or "chat_completion_source" in obj:
        return "preset:chat"
    if len(_SAMPLER_KEYS.intersection(obj)) >= 2:
        return "preset:sampler"
    return "unknown"
