"""The system block of the `sillytavern` layout, built as SillyTavern builds it: a context
preset's story string, then the example dialogue under the preset's example separator, then
its chat start.

The story string's Handlebars subset is rendered by `st_presets.StoryTemplate`; this module
decides what it is fed and how the result meets the prompt format. SillyTavern 1.12 context
presets made for one instruct format (ChatML, Llama 3...) carry that format's system header in
the story string itself (`<|im_start|>system\\n...{{trim}}<|im_end|>`); Tavern's prompt format
writes the header, so the preset's copy is taken off instead of appearing twice. Example
dialogue stays plain text after the story string (SillyTavern's text-completion form), not
instruct turns.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from tavern.prompt.st_presets import StoryTemplate, default_story_template, load_st_preset

if TYPE_CHECKING:
    from tavern.prompt.templates import PromptFormat

_SENTINEL = "\x00STORY\x00"


def instruct_default_story() -> StoryTemplate:
    """What SillyTavern uses with an instruct format: its default story string without the
    "***" example separator and chat start (its instruct-bound presets, ChatML, Llama 3,
    Mistral, Alpaca..., leave both empty), since Tavern always renders through a format."""
    return replace(default_story_template(), example_separator="", chat_start="")


def load_context_preset(presets_dir: Path, name: str) -> StoryTemplate:
    """The context preset `name` imported into `presets_dir/context/`; "" is
    `instruct_default_story()`, "Default" SillyTavern's Default preset itself."""
    if not name:
        return instruct_default_story()
    if name == "Default" and not (presets_dir / "context" / "Default.json").is_file():
        return default_story_template()
    from tavern.errors import PresetError

    path = presets_dir / "context" / f"{name}.json"
    if not path.is_file():
        raise PresetError(f"context preset '{name}' not found in {path.parent} (import it with tavern import)")
    kind, story = load_st_preset(path)
    if kind != "context" or not isinstance(story, StoryTemplate):
        raise PresetError(f"{path}: not a SillyTavern context preset")
    return story


def examples_text(blocks: Sequence[str], separator: str) -> str:
    """Example dialogue blocks as SillyTavern lays them out: each under the separator line
    (which replaces `<START>`), each ending with a newline."""
    heading = f"{separator}\n" if separator else ""
    return "".join(f"{heading}{b.strip()}\n" for b in blocks if b.strip())


def story_system_text(
    story: StoryTemplate | None,
    fields: Mapping[str, str],
    examples: Sequence[str],
    macro: Callable[[str], str],
    fmt: PromptFormat | None = None,
) -> str:
    """The system message's text: story string + examples + chat start, without the
    format's own system header if the preset carries one. `fields` and `examples` are already
    macro-substituted; `macro` runs over the rendered story string, as SillyTavern's does."""
    story = story or instruct_default_story()
    text = macro(story.render(fields, final_newline=True))
    text = _unwrap(text, fmt)
    if text and not text.endswith("\n"):
        text += "\n"
    text += examples_text(examples, macro(story.example_separator))
    if story.chat_start:
        text += macro(story.chat_start) + "\n"
    # The prompt format ends the system turn itself (as the presets' {{trim}} does before theirs).
    return text.rstrip("\n")


def _unwrap(text: str, fmt: PromptFormat | None) -> str:
    prefix, suffix = _system_wrapper(fmt)
    head = _longest_tail_prefixing(prefix, text)
    if head:
        text = text[len(head) :]
        tail = suffix.rstrip("\n")
        stripped = text.rstrip("\n")
        if tail.strip() and stripped.endswith(tail):
            text = stripped[: len(stripped) - len(tail)]
    return text


def _longest_tail_prefixing(prefix: str, text: str) -> str:
    """The longest end of the format's system header that `text` starts with (a header that
    begins with a BOS token appears in the preset without it)."""
    for i in range(len(prefix)):
        tail = prefix[i:]
        if len(tail.strip()) >= 3 and text.startswith(tail):
            return tail
    return ""


def _system_wrapper(fmt: PromptFormat | None) -> tuple[str, str]:
    if fmt is None:
        return "", ""
    try:
        probe = fmt.render([{"role": "system", "content": _SENTINEL}], add_generation_prompt=False)
    except Exception:  # a format that cannot render a lone system turn has no header to take off
        return "", ""
    if _SENTINEL not in probe:
        return "", ""
    before, after = probe.split(_SENTINEL, 1)
    return before, after
