"""The system block of a prompt: the system prompt, the card, the persona and the examples.

Called by the assembler (tavern.prompt.assemble). In the cache-friendly layout the block holds
only what stays the same for the whole chat, so the engine's KV cache keeps it across turns;
the `sillytavern` layout adds the lore before and after the card and lays the block out with a
context preset's story string (tavern.prompt.story).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tavern.prompt.inputs import PromptInputs, PromptMessage
    from tavern.prompt.lore_placement import LoreSlots
    from tavern.prompt.st_presets import StoryTemplate
    from tavern.prompt.templates import PromptFormat


def system_prompt(inputs: PromptInputs) -> str:
    """The system prompt before macros: a card's own one wins, {{original}} inside it standing
    for the user's."""
    if inputs.card.system_prompt.strip():
        return inputs.card.system_prompt.replace("{{original}}", inputs.system_prompt)
    return inputs.system_prompt


def split_examples(mes_example: str) -> list[str]:
    """`<START>`-separated example blocks, each kept whole."""
    text = mes_example.replace("\r", "")
    blocks = [b.strip("\n") for b in text.split("<START>")]
    return [b for b in blocks if b.strip()]


def labelled(label: str, text: str) -> str:
    return f"{label}: {text}" if text and text.strip() else ""


@dataclass
class SystemBlock:
    """The parts of the system block, macros substituted, and how to lay them out."""

    parts: list[tuple[str, str]]
    """(slot, text) in prompt order; an empty text is left out."""
    examples: list[str]
    """The card's example dialogue blocks."""
    examples_top: str
    examples_bottom: str
    story_fields: dict[str, str]
    """The fields of the story string (the `sillytavern` layout)."""
    story: StoryTemplate | None
    macro: Callable[[str], str]
    st_layout: bool
    pin: bool
    """Examples are fitted with the system block, before the history (see
    PromptInputs.pin_examples), instead of after it."""

    @classmethod
    def build(cls, inputs: PromptInputs, system: str, system_text: str, lore: LoreSlots) -> SystemBlock:
        """The block for `inputs`; `system` is `system_prompt(inputs)`, `system_text` the same
        with macros substituted (the first macro run of a turn, before the lore's)."""
        m = inputs.macro
        card = inputs.card
        char, user = card.name, inputs.user_name
        card_text = "\n".join(
            p
            for p in (
                m(card.description),
                labelled(f"{char}'s personality", m(card.personality)),
                labelled("Scenario", m(card.scenario)),
            )
            if p
        )
        st_layout = inputs.layout == "sillytavern"
        parts = [("system prompt", system_text)]
        if st_layout:
            parts += [
                ("lore (before card)", lore.before),
                ("card", card_text),
                ("lore (after card)", lore.after),
                ("persona", m(inputs.persona)),
            ]
        else:
            parts += [("card", card_text)]
            parts.append(("persona", labelled(f"{user}'s persona", m(inputs.persona))))
        examples = [m(b) for b in split_examples(card.mes_example)]
        story_fields = dict(
            system=m(system), description=m(card.description), personality=m(card.personality),
            scenario=m(card.scenario), persona=m(inputs.persona), char=char, user=user,
            wiBefore=lore.before, wiAfter=lore.after,
        )  # fmt: skip
        return cls(
            parts=parts,
            examples=examples,
            examples_top=lore.examples_top,
            examples_bottom=lore.examples_bottom,
            story_fields=story_fields,
            story=inputs.story,
            macro=m,
            st_layout=st_layout,
            pin=inputs.pin_examples if inputs.pin_examples is not None else not st_layout,
        )

    def message(self, n_examples: int, fmt: PromptFormat) -> PromptMessage:
        """The system message with the first `n_examples` example blocks."""
        ex = self.examples[:n_examples]
        if self.st_layout:  # SillyTavern's story string, examples and chat start (tavern.prompt.story)
            from tavern.prompt.story import story_system_text

            blocks = [t for t in (self.examples_top, *ex, self.examples_bottom) if t]
            return {
                "role": "system",
                "content": story_system_text(self.story, self.story_fields, blocks, self.macro, fmt),
            }
        texts = [t for _, t in self.parts if t]
        if ex or self.examples_top or self.examples_bottom:
            body = "\n".join(
                t for t in [self.examples_top, *[f"<START>\n{b}" for b in ex], self.examples_bottom] if t
            )
            texts.append(f"Example dialogue:\n{body}")
        # One newline between the parts, as SillyTavern's story strings join them.
        return {"role": "system", "content": "\n".join(texts)}
