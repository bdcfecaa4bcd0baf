"""Looking must not change anything: a preview of the prompt (the inspector, `tavern prompt`)
leaves the next real prompt and the chat file exactly as they would have been."""

from __future__ import annotations

from pathlib import Path

from tavern.session import Tavern

SETTINGS = {"model.n_ctx": 2048, "generation.max_tokens": 12, "generation.seed": 3, "generation.preset": "Deterministic"}
MESSAGES = [
    "Is the Rusty Lantern open? I'm hungry, what's on the menu?",
    "Tell me about the Kestrel skyship and its captain Ilse Varga.",
    "Any smugglers in the harbor tonight?",
]


def drain(events) -> None:
    for _ in events:
        pass


def run_chat(home: Path, engine, peek: bool) -> tuple[list[str], bytes]:
    app = Tavern.open(home, **SETTINGS)
    app.use_engine(engine)
    session = app.open_chat("Mira", new=True)
    sent = []
    for text in MESSAGES:
        if peek:
            before = session.chat.path.read_bytes()
            for _ in range(2):
                session.build_prompt(explain=True)
                session.build_prompt("impersonate")
            assert session.chat.path.read_bytes() == before  # the chat file is untouched
        drain(session.send(text))
        sent.append(session.last_prompt.text)
    return sent, session.chat.path.read_bytes()


def test_opening_the_inspector_never_changes_the_next_prompt(tmp_path: Path, model_path: Path) -> None:
    from tavern.engines.local import LocalEngine

    engine = LocalEngine(model_path, n_ctx=2048, side_ctx=0)
    try:
        plain, _ = run_chat(tmp_path / "a", engine, peek=False)
        engine.unload()
        peeked, _ = run_chat(tmp_path / "b", engine, peek=True)
    finally:
        engine.unload()
    assert any("Kestrel" in p and "skyship" in p.lower() for p in plain)  # lore fired
    assert peeked == plain
