"""The cold start's first frame: what `tavern` hands the terminal first, and what waits for it.

The app is built as the CLI builds it (`Boot`, the Tavern opened by a thread after the first
frame) and run headless at 80x24; a spy on the app's `_display` sees every frame Textual would
write. Speed itself is measured by benchmarks/bench_tui.py, not here.
"""

from __future__ import annotations

import re
from pathlib import Path

from rich.console import Console
from textual._compositor import LayoutUpdate
from textual.geometry import Region
from tui.pilot_wait import waiter

from tavern.paths import open_home
from tavern.session import Tavern
from tavern.tui.app import make_app
from tavern.tui.boot import Boot

wait_until = waiter(20.0)


def plain(frame: LayoutUpdate) -> str:
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", frame.render_segments(Console()))


async def test_the_first_frame_written_is_the_whole_library_and_the_tavern_opens_after_it(
    home: Path,
) -> None:
    Tavern.open(home).cards.library.list()  # seeds the bundled characters and indexes them, as a first start did
    events: list[str] = []
    frames: list[object] = []

    def opener() -> Tavern:
        events.append("open")
        return Tavern.open(home)

    app = make_app(boot=Boot(open_home(str(home)), opener))
    display = app._display

    def spy(screen, renderable) -> None:  # noqa: ANN001 - Textual's private signature
        # A frame inside Textual's start-up batch is dropped, never written: not a frame.
        if renderable is not None and not app._batch_count:
            frames.append(renderable)
            events.append("frame")
        display(screen, renderable)

    app._display = spy
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until(pilot, lambda: app.tavern_ready)
        # Before the library was the app's first screen, the first written frame was a partial
        # update (the list's border): the rest of the screen reached the terminal only when
        # the footer's mount forced a full layout, after the opener thread had started.
        first = frames[0]
        assert isinstance(first, LayoutUpdate) and first.region == Region(0, 0, 80, 24)
        text = plain(first)
        assert "characters" in text and "Mira" in text
        assert events.index("frame") < events.index("open")
        app.exit()
