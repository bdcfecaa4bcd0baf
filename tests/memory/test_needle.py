"""The needle test of issue #28: five facts said once each, far outside the window, among
small talk that looks alike; each question finds its fact, every run. The real packaged MiniLM,
a real persistent Chroma, the real SmolLM2 engine for the prompt."""

from __future__ import annotations

from pathlib import Path

import pytest

from tavern.store import ChatMessage

from .conftest import open_app
from .needle import NEEDLES, RARE, needle_chat


def _home(tmp_path_factory: pytest.TempPathFactory, verdict: str) -> Path:
    from tavern.engines.cpu_probe import CACHE_NAME

    home = tmp_path_factory.mktemp("needle") / "home"
    home.mkdir()
    (home / CACHE_NAME).write_text(verdict, encoding="utf-8")
    return home


def _written(app, n: int, news: bool = False, needles=None):
    session = app.open_chat("Mira", new=True)
    messages, where = needle_chat(n, needles=needles, news=news)
    chat = session.chat
    chat.delete(0)  # the greeting: the workload's message 0 takes its place
    for m in messages:
        chat.append(ChatMessage(name=session.user_name if m.is_user else session.card.name, is_user=m.is_user, mes=m.text))
    assert app.memory.wait_idle(900)
    return session, where


@pytest.fixture(scope="module")
def needle(tmp_path_factory, cpu_probe_verdict, shared_engine):
    app = open_app(_home(tmp_path_factory, cpu_probe_verdict), shared_engine)
    session, where = _written(app, 600)
    yield app, session, where
    app.memory.close()


@pytest.fixture(scope="module")
def news(tmp_path_factory, cpu_probe_verdict, shared_engine):
    app = open_app(_home(tmp_path_factory, cpu_probe_verdict), shared_engine)
    session, where = _written(app, 300, news=True, needles=NEEDLES + [RARE])
    yield app, session, where
    app.memory.close()


def _window_start(session) -> int:
    return session.build_prompt().first_message_index


def test_each_fact_is_found_outside_the_window_every_run(needle) -> None:
    app, session, where = needle
    start = _window_start(session)
    assert start > max(where.values()) + 100  # every fact left the window long ago
    k = app.settings.memory.top_k
    first = None
    for _run in range(3):
        found = {n.said: [h.index for h in app.memory.search(session.link, n.asked, before=start)] for n in NEEDLES}
        for n in NEEDLES:
            assert where[n.said] in found[n.said][:k], (n.asked, found[n.said])
        assert first is None or found == first  # the same answer every run
        first = found


def test_each_question_puts_its_fact_into_the_prompt_when_it_clears_the_threshold(needle) -> None:
    """Found is not yet recalled: a fact goes into the prompt when its similarity clears
    `score_threshold` (0.35). MiniLM scores 'What did your father do for a living?' against
    'My father was a lighthouse keeper ...' 0.33: that one stays out at the default."""
    app, session, where = needle
    threshold = app.settings.memory.score_threshold
    recalled = 0
    for n in NEEDLES:
        session.chat.append(ChatMessage(name=session.user_name, is_user=True, mes=n.asked))
        try:
            prompt = session.build_prompt()
            start = prompt.first_message_index
            best = app.memory.search(session.link, f"{session.user_name}: {n.asked}", before=start)[0]
        finally:
            session.chat.delete(len(session.chat) - 1)
        assert start > where[n.said] and best.index == where[n.said]
        assert (n.said in prompt.text) == (best.score >= threshold), (n.asked, best.score)
        recalled += n.said in prompt.text
    assert recalled >= 4


def test_a_rare_name_finds_its_message_where_the_embedding_does_not(news) -> None:
    """'Any news from Ilvana?' in a chat full of news talk: MiniLM ranks the news small talk
    first (the vector search alone misses her), the keyword index finds the name."""
    app, session, where = news
    start = _window_start(session)
    assert start > where[RARE.said]
    k = app.settings.memory.top_k
    vector_only = [h.index for h in app.memory.search(session.link, RARE.asked, before=start, hybrid=False)]
    assert where[RARE.said] not in vector_only[:k]  # what the keyword index is for
    hits = app.memory.search(session.link, RARE.asked, before=start)
    assert where[RARE.said] in [h.index for h in hits][:k]
    # Lowercase in the question still names her: the chat's own text says how she is written.
    assert where[RARE.said] in [h.index for h in app.memory.search(session.link, "any news from ilvana?", before=start)][:k]
    # Her message is recalled into the prompt, though its similarity is under the threshold.
    session.chat.append(ChatMessage(name=session.user_name, is_user=True, mes=RARE.asked))
    try:
        assert RARE.said in session.build_prompt().text
    finally:
        session.chat.delete(len(session.chat) - 1)
