"""Secrets shown as ***: an API key, and the password of a URL (`http://user:pass@host`).

A backend URL may carry a password; it is as secret as a key, so every place that prints a
URL (`tavern backends list` and `add`, the backends screen, an error line that names the URL it
failed on) prints `mask_url(url)` or passes its text through `scrub`. Pure standard library.
"""

from __future__ import annotations

import re

MASK = "***"

# `scheme://user:password@`, anywhere in a line of text (an error line may quote a URL).
# The password runs to the authority's last "@", so a raw "@" in it (meant as %40) is hidden too.
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^/?#@:\s]*):(?P<password>[^/?#\s]*)@")


def mask_url(url: str) -> str:
    """`url` (or any text holding URLs) with each `user:password@` password shown as ***."""
    return _URL_PASSWORD.sub(_masked, url)


def _masked(match: re.Match[str]) -> str:
    return f"{match['head']}:{MASK}@" if match["password"] else match[0]


def scrub(text: str, key: str = "") -> str:
    """`text` safe to show: the key (when there is one) and every URL password as ***."""
    if key:
        text = text.replace(key, MASK)
    return mask_url(text)


__all__ = ["MASK", "mask_url", "scrub"]
