"""JavaScript's semantics, where SillyTavern's macro values go through them: ``Number()``,
``String()``, UTF-16 lengths, SillyTavern's string hash (cyrb53) and the seeded generator of its
``{{pick}}`` (seedrandom), so a chat here computes what it computes there.

Who calls it: :mod:`tavern.prompt.macros` and its macro families (variables, random picks).
"""

from __future__ import annotations

import math
import re

# Possessive, and with one way to read each number: "\d+\.?\d*" tried every split of a long run of
# digits (a 20,000-digit variable took 8 s to read).
_JS_NUMBER = re.compile(r"[+-]?(?:(?:\d++(?:\.\d*+)?+|\.\d++)(?:[eE][+-]?\d++)?+|Infinity)")


def js_number(value: object) -> float | None:
    """JavaScript's ``Number(value)``; None for NaN."""
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, (int, float)):
        return None if isinstance(value, float) and math.isnan(value) else float(value)
    if value is None:
        return None
    s = str(value).strip()
    if s == "":
        return 0.0
    for pattern, base in ((r"0[xX][0-9a-fA-F]+", 16), (r"0[oO][0-7]+", 8), (r"0[bB][01]+", 2)):
        if re.fullmatch(pattern, s):
            try:
                return float(int(s, base))
            except OverflowError:  # JavaScript: Infinity
                return math.inf
    if _JS_NUMBER.fullmatch(s):
        return float(s.replace("Infinity", "inf"))
    return None


def js_str(value: object) -> str:
    """JavaScript's ``String(value)`` for the values variables hold."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        if value.is_integer() and abs(value) < 1e21:
            return str(int(value))
        return re.sub(r"e([+-])0*(\d)", r"e\1\2", repr(value))
    if isinstance(value, list):
        return ",".join(js_str(v) for v in value)
    if isinstance(value, dict):
        return "[object Object]"
    return str(value)


def utf16_units(text: str) -> list[int]:
    data = text.encode("utf-16-le", "surrogatepass")
    return [data[i] | (data[i + 1] << 8) for i in range(0, len(data), 2)]


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def _i32(x: int) -> int:
    x &= 0xFFFFFFFF
    return x - 0x100000000 if x & 0x80000000 else x


def _imul(a: int, b: int) -> int:
    return _i32((a & 0xFFFFFFFF) * (b & 0xFFFFFFFF))


def st_string_hash(text: str, seed: int = 0) -> int:
    """SillyTavern's ``getStringHash`` (cyrb53 over UTF-16 code units)."""
    h1 = _i32(0xDEADBEEF ^ seed)
    h2 = _i32(0x41C6CE57 ^ seed)
    for ch in utf16_units(text):
        h1 = _imul(h1 ^ ch, 2654435761)
        h2 = _imul(h2 ^ ch, 1597334677)
    h1 = _i32(
        _imul(h1 ^ ((h1 & 0xFFFFFFFF) >> 16), 2246822507) ^ _imul(h2 ^ ((h2 & 0xFFFFFFFF) >> 13), 3266489909)
    )
    h2 = _i32(
        _imul(h2 ^ ((h2 & 0xFFFFFFFF) >> 16), 2246822507) ^ _imul(h1 ^ ((h1 & 0xFFFFFFFF) >> 13), 3266489909)
    )
    return 4294967296 * (2097151 & h2) + (h1 & 0xFFFFFFFF)


class SeedRandom:
    """David Bau's seedrandom (ARC4, RC4-drop[256]), which SillyTavern's ``{{pick}}`` uses, for a
    string or number seed."""

    def __init__(self, seed: str | int) -> None:
        text = seed if isinstance(seed, str) else js_str(seed) + "\0"
        key: list[int] = []
        smear = 0
        for j, ch in enumerate(utf16_units(text)):
            slot = j & 255
            if slot < len(key):
                smear ^= key[slot] * 19
                key[slot] = (smear + ch) & 255
            else:
                key.append((smear + ch) & 255)
        if not key:
            key = [0]
        s = list(range(256))
        keys = (key * (256 // len(key) + 1))[:256]
        j = 0
        for i in range(256):
            t = s[i]
            j = (j + keys[i] + t) & 255
            s[i] = s[j]
            s[j] = t
        # RC4-drop[256]: stir without building the 2,048-bit number _bytes would (a pick each
        # time: a card may hold thousands).
        i = j = 0
        for _ in range(256):
            i = (i + 1) & 255
            t = s[i]
            j = (j + t) & 255
            s[i] = s[j]
            s[j] = t
        self.s, self.i, self.j = s, i, j

    def _bytes(self, count: int) -> int:
        s, i, j, r = self.s, self.i, self.j, 0
        for _ in range(count):
            i = (i + 1) & 255
            t = s[i]
            j = (j + t) & 255
            s[i] = s[j]
            s[j] = t
            r = r * 256 + s[(s[i] + s[j]) & 255]
        self.i, self.j = i, j
        return r

    def random(self) -> float:
        n, d, x = self._bytes(6), 2**48, 0
        while n < 2**52:
            n = (n + x) * 256
            d *= 256
            x = self._bytes(1)
        while n >= 2**53:
            n //= 2
            d //= 2
            x >>= 1
        return (n + x) / d
