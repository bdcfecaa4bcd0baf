"""Keep the app's output on the terminal while llama.cpp hides stdout/stderr.

llama-cpp-python (with verbose=False) points file descriptors 1 and 2 at /dev/null while it
loads a model. Textual writes its frames to `sys.__stderr__` (fd 2; the web driver of
`tavern serve` to `sys.__stdout__`, fd 1), so every frame drawn during a load was lost: the
screen froze on the first frame and kept a stale picture after (typing during a load seemed
to do nothing). `private_streams()` gives Textual its own duplicates of those descriptors,
which llama.cpp's redirection does not touch.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
from collections.abc import Iterator


def _dup(stream: object) -> io.TextIOWrapper | None:
    try:
        fd = stream.fileno()  # type: ignore[attr-defined]
    except (AttributeError, OSError, ValueError):
        return None
    encoding = getattr(stream, "encoding", None) or "utf-8"
    errors = getattr(stream, "errors", None) or "strict"
    return os.fdopen(os.dup(fd), "w", encoding=encoding, errors=errors, closefd=True)


@contextlib.contextmanager
def private_streams() -> Iterator[None]:
    saved = sys.__stdout__, sys.__stderr__
    out, err = _dup(sys.__stdout__), _dup(sys.__stderr__)
    # typeshed declares sys.__stdout__/__stderr__ Final; swapping them is this module's purpose.
    if out is not None:
        sys.__stdout__ = out  # type: ignore[misc]
    if err is not None:
        sys.__stderr__ = err  # type: ignore[misc]
    try:
        yield
    finally:
        sys.__stdout__, sys.__stderr__ = saved  # type: ignore[misc]
        for stream in (out, err):
            if stream is not None:
                with contextlib.suppress(OSError, ValueError):
                    stream.close()
