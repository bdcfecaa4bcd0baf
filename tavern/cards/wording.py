"""The wording the card readers and writers share in their messages, so that one failure reads
the same whichever of them meets it.

Callers: `tavern.cards.formats`, `charx`, `png` and `sniff`. Standard library and
`tavern.errors` only.
"""

from __future__ import annotations

from tavern.errors import CardError


def mib(n: int) -> str:
    """A size as the limit messages show it ("2.5 MiB")."""
    return f"{n / (1024 * 1024):.1f} MiB"


def cannot_read(source: str, err: OSError) -> CardError:
    """The error for a file the system would not read (raise it `from None`)."""
    return CardError(f"{source}: cannot read ({err.strerror or err})")
