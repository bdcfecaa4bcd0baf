"""JSON and numbers the way SillyTavern's JavaScript writes and reads them.

A group file must come back from Tavern byte for byte as SillyTavern wrote it, so the writer here
is not `json.dumps`: it follows `JSON.stringify` (4-space indent for group files, none for chat
lines, non-ASCII kept, numbers in JavaScript's shortest form: `1e-7`, not Python's `1e-07`).
`js_number` is JavaScript's `Number(x)`, which SillyTavern applies to a card's talkativeness and a
group's numeric settings: `""` and `null` are 0, `" 0.7 "` is 0.7, `"abc"` is NaN.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from decimal import Decimal

# JavaScript's String→Number grammar: decimal (with Infinity), or unsigned hex/octal/binary.
_DECIMAL = re.compile(r"[+-]?(?:Infinity|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)")
_RADIX = re.compile(r"0[xX][0-9a-fA-F]+|0[oO][0-7]+|0[bB][01]+")
# What String.prototype.trim removes: Unicode white space, line terminators and the BOM.
_JS_SPACE = " \t\n\v\f\r\u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"  # noqa: E501
_SURROGATE = re.compile("[\ud800-\udfff]")


def js_number(value: object) -> float:
    """`Number(value)` for a value parsed from JSON (None is JSON null, which is 0)."""
    if value is None or value is False:
        return 0.0
    if value is True:
        return 1.0
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        return _string_number(value)
    if isinstance(value, list) and len(value) <= 1:
        # An array becomes the string of its items: [] is "" (0), [5] is "5".
        return _string_number(js_string(value[0]) if value else "")
    return math.nan


def _string_number(text: str) -> float:
    body = text.strip(_JS_SPACE)
    if not body:
        return 0.0
    if _DECIMAL.fullmatch(body):
        return float(body.replace("Infinity", "inf"))
    if _RADIX.fullmatch(body):
        return float(int(body, 0))
    return math.nan


def js_string(value: object) -> str:
    """`String(value)` for JSON values: what a number or an id looks like as text in ST."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _number_text(value)
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return ",".join("" if item is None else js_string(item) for item in value)
    return "[object Object]"


def _number_text(value: float) -> str:
    """Number.prototype.toString: the shortest digits that read back, in ECMAScript's layout."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    if value == 0:
        return "0"
    sign = "-" if value < 0 else ""
    # repr gives the shortest round-trip digits, as JavaScript does; only the layout differs.
    digits_tuple = Decimal(repr(abs(value))).as_tuple()
    digits = "".join(map(str, digits_tuple.digits)).rstrip("0") or "0"
    exponent = int(digits_tuple.exponent) + len(digits_tuple.digits) - len(digits)
    k = len(digits)
    n = exponent + k  # the value is 0.<digits> × 10^n
    if k <= n <= 21:
        return sign + digits + "0" * (n - k)
    if 0 < n <= 21:
        return sign + digits[:n] + "." + digits[n:]
    if -6 < n <= 0:
        return sign + "0." + "0" * (-n) + digits
    e = n - 1
    mantissa = digits if k == 1 else digits[0] + "." + digits[1:]
    return f"{sign}{mantissa}e{'+' if e >= 0 else '-'}{abs(e)}"


def st_json(value: object, indent: int | None = None) -> str:
    """`JSON.stringify(value, null, indent)` for values parsed from JSON (dicts keep their order)."""
    return _encode(value, " " * indent if indent else "", 0)


def _encode(value: object, unit: str, level: int) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        # JSON.stringify writes NaN and ±Infinity as null.
        return _number_text(value) if math.isfinite(value) else "null"
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, Mapping):
        items = [(_string(str(k)), v) for k, v in value.items()]
        return _container("{", "}", [f"{k}:{' ' if unit else ''}{_encode(v, unit, level + 1)}" for k, v in items],
                          unit, level)
    if isinstance(value, list | tuple):
        return _container("[", "]", [_encode(v, unit, level + 1) for v in value], unit, level)
    raise TypeError(f"not a JSON value: {type(value).__name__}")


def _container(opening: str, closing: str, parts: list[str], unit: str, level: int) -> str:
    if not parts:
        return opening + closing
    if not unit:
        return opening + ",".join(parts) + closing
    inner = "\n" + unit * (level + 1)
    return opening + inner + ("," + inner).join(parts) + "\n" + unit * level + closing


def _string(text: str) -> str:
    # json.dumps escapes exactly what JSON.stringify does (quotes, backslash, C0 controls, in the
    # same short forms and lower-case hex) except lone surrogates, which JavaScript writes as
    # \udxxx and Python would leave raw (unencodable as UTF-8).
    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", json.dumps(text, ensure_ascii=False))


__all__ = ["js_number", "js_string", "st_json"]
