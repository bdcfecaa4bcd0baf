"""The host-memory prompt cache's bookkeeping: least recently used out first, within budget."""

from __future__ import annotations

from tavern.engines.prompt_cache import PromptStateCache


def test_a_state_chosen_then_evicted_by_the_save_before_its_restore_is_kept() -> None:
    """The engine picks the state to restore, then saves the live one, which can push the
    chosen one out of the budget; restoring it must still work (it used to raise ValueError
    from list.remove and fail the turn)."""
    cache = PromptStateCache(budget_bytes=200)
    old = cache.add([1, 2, 3], bytearray(100))
    cache.add([4, 5, 6], bytearray(100))
    chosen = cache.candidates([1, 2, 3, 7])[0]
    assert chosen is old
    cache.add([8, 9], bytearray(100))  # the live state is saved: `old` is the oldest, it goes
    assert not cache.holds([1, 2, 3])
    cache.take(chosen)
    assert cache.holds([1, 2, 3]) and cache.bytes_used <= 200


def test_candidates_are_ordered_by_shared_prefix() -> None:
    cache = PromptStateCache(budget_bytes=10_000)
    cache.add([1, 9, 9], bytearray(10))
    cache.add([1, 2, 3, 9], bytearray(10))
    cache.add([5], bytearray(10))
    assert [s.tokens for s in cache.candidates([1, 2, 3, 4], n=2)] == [[1, 2, 3, 9], [1, 9, 9]]
