"""The history window: how many of the newest messages fit in the budget, and the prompt they make.

Called by the assembler (tavern.prompt.assemble), in this order: the fixed part goes in first
(`fit_pinned_examples`), then the history newest first until the next message would not fit
(`fill_window`, `trim_window`), then example blocks that are not pinned (`fit_examples`); the
whole prompt is then counted once more (`fit_whole`), and if template seams made it longer than
the sum of its parts, old messages go until the budget holds. Each step measures a `Draft`.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tavern.prompt.injections import chat_role, place_injections

if TYPE_CHECKING:
    from tavern.prompt.injections import DepthInjection
    from tavern.prompt.inputs import HistoryMessage, PromptInputs, PromptMessage
    from tavern.prompt.system_block import SystemBlock
    from tavern.prompt.templates import PromptFormat
    from tavern.prompt.token_counter import TokenCounter

ROLE = {True: "user", False: "assistant"}

_PIECES: OrderedDict[tuple[int, str, str], str] = OrderedDict()


def message_cost(fmt: PromptFormat, message: PromptMessage, count: Callable[[str], int]) -> int:
    """Tokens one history message adds to the prompt.

    For formats that render message by message (ChatML, Llama 3, Alpaca...) this is exact: the
    message's own rendered piece, remembered so a turn renders only new messages. For formats
    that fold text across turns (Llama 2, Mistral, Gemma) it is an estimate (content plus a few
    tokens of markup); the assembler's final whole-prompt count corrects it.
    """
    if getattr(fmt, "is_concatenative", False):
        return count(message_piece(fmt, message))
    return count(message["content"]) + 8


def message_piece(fmt: PromptFormat, message: PromptMessage) -> str:
    """The text `message_cost` counts for one message."""
    if not getattr(fmt, "is_concatenative", False):
        return message["content"]
    key = (id(fmt), message["role"], message["content"])
    piece = _PIECES.get(key)
    if piece is None:
        piece = fmt.render_message(message)
        _PIECES[key] = piece
        if len(_PIECES) > 50_000:
            _PIECES.popitem(last=False)
    return piece


def prime_history(count: TokenCounter, pieces: list[str], budget: int) -> None:
    """Count the newest messages likely to fit in one batch (a remote counter), before the
    window is chosen message by message. A message counted before weighs its count; a new one
    the characters-per-token seen so far, less a sixth, so the batch rarely stops short (a
    message it missed is counted on its own). Once the counts are known the batch ends where
    the window does, so a later turn asks only about new messages."""
    per_token = count.chars_per_token() * 1.2
    chosen: list[str] = []
    estimate = 0.0
    for piece in pieces:
        if estimate > budget:
            break
        chosen.append(piece)
        known = count.known(piece)
        estimate += known if known is not None else len(piece) / per_token
    count.prime(chosen)


def render_prompt(fmt: PromptFormat, msgs: list[PromptMessage], inputs: PromptInputs) -> str:
    """The prompt text of `msgs`, ending as the mode wants: the reply's start, the user's turn
    (impersonate) or the last reply left open (continue)."""
    if inputs.mode == "continue" and msgs and msgs[-1]["role"] == "assistant":
        return fmt.render(msgs, add_generation_prompt=False, continue_final=True)
    if inputs.mode == "impersonate":
        prefill = f"{inputs.user_name}:" if inputs.names_in_history else ""
        return fmt.render(msgs, add_generation_prompt=True, prefill=prefill, gen_role="user")
    prefill = f"{inputs.card.name}:" if inputs.names_in_history else ""
    return fmt.render(msgs, add_generation_prompt=True, prefill=prefill)


class Draft:
    """The prompt for a window: the system block with some example blocks, the last messages
    of the history with the injections among them, rendered through the format."""

    def __init__(
        self,
        inputs: PromptInputs,
        fmt: PromptFormat,
        count: Callable[[str], int],
        block: SystemBlock,
        history: Sequence[HistoryMessage],
        injections: Sequence[DepthInjection],
    ) -> None:
        self.inputs = inputs
        self.fmt = fmt
        self.count = count
        self.block = block
        self.history = history
        """The messages that may go in (hidden ones are out)."""
        self.injections = injections
        # The fixed part: the system block (stable for the chat, so its count is cached) plus
        # each injection as the message it becomes; the final whole-prompt count corrects seams.
        self.injection_tokens = sum(self._injection_cost(i) for i in injections)

    def message(self, h: HistoryMessage) -> PromptMessage:
        text = h.text
        if self.inputs.names_in_history:
            text = f"{h.name}: {text}"
        return {"role": ROLE[h.is_user], "content": text}

    def cost(self, h: HistoryMessage) -> int:
        return message_cost(self.fmt, self.message(h), self.count)

    def kept(self, n_hist: int) -> Sequence[HistoryMessage]:
        """The last `n_hist` messages of the history."""
        return self.history[len(self.history) - n_hist :] if n_hist else []

    def oldest(self, n_hist: int) -> HistoryMessage:
        """The oldest message of a window of `n_hist` (at least one)."""
        return self.history[len(self.history) - n_hist]

    def build(self, n_hist: int, n_examples: int, with_injections: bool = True) -> list[PromptMessage]:
        """Messages for the last n_hist history entries and the first n_examples blocks."""
        system_msg = self.block.message(n_examples, self.fmt)
        kept = self.kept(n_hist)
        chat = [self.message(h) for h in kept]
        place_injections(kept, chat, self.injections if with_injections else ())
        return ([system_msg] if system_msg["content"] else []) + chat

    def render(self, msgs: list[PromptMessage]) -> str:
        return render_prompt(self.fmt, msgs, self.inputs)

    def fixed_cost(self, n_examples: int) -> int:
        """Tokens of the system block with `n_examples` example blocks, and the injections."""
        return (
            self.count(self.render(self.build(0, n_examples, with_injections=False))) + self.injection_tokens
        )

    def _injection_cost(self, inj: DepthInjection) -> int:
        if inj.source == "notes":
            # A unit's own tokens (the scan already counted lore entries: the counter remembers)
            # plus its joint and a message header; the final whole-prompt count is exact.
            return self.count(inj.text) + 8
        return message_cost(self.fmt, {"role": chat_role(inj.role), "content": inj.text}, self.count)


@dataclass
class Fitted:
    """The prompt that fits: its window, its messages, its text and that text's count."""

    n_hist: int
    messages: list[PromptMessage]
    text: str
    tokens: int


def fit_pinned_examples(draft: Draft, budget: int, dropped: list[str]) -> tuple[int, int]:
    """The example blocks that go in before the history (all of them when pinned, as many as
    half the budget holds; none otherwise) and the tokens of the fixed part with them."""
    pin = draft.block.pin
    n_examples = len(draft.block.examples) if pin else 0
    fixed_tokens = draft.fixed_cost(n_examples)
    if pin:
        # Decided on the stable system block alone: if the notes counted, examples would come
        # and go with the lore, rewriting the top of the prompt.
        while n_examples and fixed_tokens - draft.injection_tokens > budget // 2:
            n_examples -= 1
            dropped.append(f"example block {n_examples + 1}: examples may use at most half the budget")
            fixed_tokens = draft.fixed_cost(n_examples)
    return n_examples, fixed_tokens


def fill_window(draft: Draft, budget: int, used: int, counter: TokenCounter | None) -> tuple[int, int]:
    """How many of the newest messages fit after `used` tokens, and the tokens used with them.

    Each message is rendered alone through the format (`message_cost`). `counter`: the count
    as a TokenCounter (None when it is a plain function), which can prime the counts in one
    batch and rule out a huge message without tokenizing it.
    """
    inputs = draft.inputs
    n_hist = 0
    floor = inputs.window_floor if not draft.block.st_layout and inputs.window_floor is not None else -1
    if counter is not None and counter.batches:
        pieces = [
            message_piece(draft.fmt, draft.message(h)) for h in reversed(draft.history) if h.index >= floor
        ]
        prime_history(counter, pieces, budget - used)
    for h in reversed(draft.history):
        if h.index < floor:
            if 2 * (budget - used) < budget:
                break  # once out of the window, a message stays out (see PromptInputs.window_floor)
            floor = -1  # most of the budget would stay empty: the window refills
        if counter is not None and counter.cannot_fit(draft.message(h)["content"], max(budget - used, 0)):
            break  # what the count below would decide, without tokenizing megabytes
        cost = draft.cost(h)
        if used + cost > budget:
            break
        used += cost
        n_hist += 1
    return n_hist, used


def trim_window(draft: Draft, budget: int, n_hist: int, used: int) -> tuple[int, int]:
    """With `trim_step`, a window that lost messages gives up a larger slice at once, so its
    start moves rarely (engines without context shift); the window and its tokens after it."""
    step = draft.inputs.trim_step
    if step and n_hist < len(draft.history):
        target = budget * (1 - step)
        while n_hist > 1 and used > target:
            used -= draft.cost(draft.oldest(n_hist))
            n_hist -= 1
    return n_hist, used


def fit_examples(draft: Draft, budget: int, used: int, dropped: list[str]) -> int:
    """How many example blocks that are not pinned fit after the history (SillyTavern's order)."""
    blocks = draft.block.examples
    n_examples = 0
    for i in range(len(blocks)):
        extra = draft.fixed_cost(i + 1) - draft.fixed_cost(i)
        if used + extra > budget:
            dropped.append(f"example blocks {i + 1}-{len(blocks)}: no room after the history")
            break
        used += extra
        n_examples = i + 1
    return n_examples


def fit_whole(draft: Draft, budget: int, n_hist: int, n_examples: int) -> Fitted:
    """The prompt counted as a whole, with old messages dropped until it fits the budget."""
    msgs = draft.build(n_hist, n_examples)
    text = draft.render(msgs)
    total = draft.count(text)
    while total > budget and n_hist > 0:
        # Seams between rendered pieces (or an estimating format) cost more than the sum:
        # drop the oldest messages worth the overshoot, then count the whole prompt again.
        over = total - budget
        while over > 0 and n_hist > 0:
            over -= draft.cost(draft.oldest(n_hist))
            n_hist -= 1
        msgs = draft.build(n_hist, n_examples)
        text = draft.render(msgs)
        total = draft.count(text)
    return Fitted(n_hist, msgs, text, total)
