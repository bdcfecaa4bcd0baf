"""Token budget, the order entries are taken in, several books together, and where the
activated text goes."""

from __future__ import annotations

from lore_helpers import chat, make_book, rejected, run, st_entry, uids

TEN_WORDS = "one two three four five six seven eight nine ten"


def three_entries():
    return make_book(
        st_entry(0, key=["x"], order=100, content=TEN_WORDS),
        st_entry(1, key=["x"], order=300, content=TEN_WORDS),
        st_entry(2, key=["x"], order=200, content=TEN_WORDS),
    )


def test_budget_drops_the_lowest_order_first():
    # 25% of 100 = 25 tokens; each entry costs 10 (the test tokenizer counts words).
    result = run(three_entries(), chat("x"), context=100)
    assert uids(result) == [1, 2]
    assert result.budget == 25 and result.tokens_used == 20
    assert rejected(result)[0] == "budget: would reach 25 tokens (20 used)"


def test_budget_cap_and_percent():
    assert uids(run(three_entries(), chat("x"), context=100, budget_cap=15)) == [1]
    assert uids(run(three_entries(), chat("x"), context=100, budget_percent=50)) == [0, 1, 2]
    # Reaching the budget exactly is already too much (SillyTavern's >=).
    assert uids(run(three_entries(), chat("x"), context=100, budget_percent=20)) == [1]


def test_constant_entries_count_against_the_budget():
    book = make_book(
        st_entry(0, constant=True, order=300, content=TEN_WORDS),
        st_entry(1, key=["x"], order=200, content=TEN_WORDS),
    )
    assert uids(run(book, chat("x"), context=60)) == [0]


def test_books_together_by_insertion_strategy():
    glob = make_book(st_entry(0, key=["x"], order=300, content=TEN_WORDS), name="global")
    char = make_book(st_entry(0, key=["x"], order=100, content=TEN_WORDS), name="char")
    chat_book = make_book(st_entry(0, key=["x"], order=1, content=TEN_WORDS), name="chatbook")
    books = [("global", glob), ("character", char)]

    def first(strategy, with_chat=False):
        chosen = books + ([("chat", chat_book)] if with_chat else [])
        result = run(chosen, chat("x"), context=60, insertion_strategy=strategy)
        return [a.book for a in result.activated]

    assert first(1) == ["char"]  # character lore first
    assert first(2) == ["global"]  # global first
    assert first(0) == ["global"]  # together, by order
    assert first(1, with_chat=True) == ["chatbook"]  # chat lore always first


def test_a_book_active_twice_is_scanned_once():
    book = make_book(st_entry(0, key=["x"]), name="shared")
    result = run([("global", book), ("character", book), ("chat", book)], chat("x"))
    assert [(a.book, a.kind) for a in result.activated] == [("shared", "global")]


def test_by_position_orders_and_groups_as_sillytavern():
    book = make_book(
        st_entry(0, constant=True, order=50, position=0, content="before-50"),
        st_entry(1, constant=True, order=10, position=0, content="before-10"),
        st_entry(2, constant=True, order=5, position=1, content="after"),
        st_entry(3, constant=True, position=2, content="an-top"),
        st_entry(4, constant=True, position=3, content="an-bottom"),
        st_entry(5, constant=True, position=4, depth=2, role=1, order=20, content="d2-user-20"),
        st_entry(6, constant=True, position=4, depth=2, role=1, order=10, content="d2-user-10"),
        st_entry(7, constant=True, position=4, depth=0, role=0, order=30, content="d0-system"),
        st_entry(8, constant=True, position=5, content="em-top"),
        st_entry(9, constant=True, position=6, content="em-bottom"),
        st_entry(10, constant=True, position=0, content=""),
    )
    slots = run(book, chat("hi")).by_position()
    assert slots[0] == "before-10\nbefore-50"
    assert slots[1] == "after"
    assert slots[2] == "an-top" and slots[3] == "an-bottom"
    assert slots[5] == "em-top" and slots[6] == "em-bottom"
    # Depth groups in SillyTavern's order (first seen walking from the highest order).
    assert slots[4] == [(0, 0, "d0-system"), (2, 1, "d2-user-10\nd2-user-20")]


def test_activated_entries_carry_what_the_assembler_needs():
    book = make_book(
        st_entry(
            0,
            key=["x"],
            comment="Deep one",
            position=4,
            depth=3,
            role=2,
            order=42,
            content="{{char}} remembers.",
        ),
    )
    (item,) = run(book, chat("x")).activated
    assert (item.book, item.uid, item.comment) == ("world", 0, "Deep one")
    assert (item.position, item.depth, item.role, item.order) == (4, 3, 2, 42)
    assert item.content == "{{char}} remembers."  # macros are the assembler's job
    assert item.kind == "character" and item.entry is book.entries[0]
