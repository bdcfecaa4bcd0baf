"""Fuzzing lorebook regex keys: whatever the pattern, reading the key never raises, never takes
more than a bounded amount of memory, and either refuses the pattern or gives a regex that runs.

The cases run in one child Python under an address-space limit, so a pattern the bounds miss
fails the test with a MemoryError there instead of exhausting this machine."""

from __future__ import annotations

import resource
import subprocess
import sys

_LIMIT = 1536 * 1024 * 1024

_FUZZ = r"""
import time
from hypothesis import HealthCheck, given, settings, strategies as st
from tavern.lore.keys import MAX_EXPANSION, Key, parse_regex_key, pattern_size, PatternTooBig

count = st.one_of(st.integers(0, 12), st.integers(0, 200_000), st.integers(0, 10**12))
quantifier = st.one_of(
    st.builds("{{{}}}".format, count),
    st.builds("{{{},}}".format, count),
    st.builds("{{{},{}}}".format, count, count),
    st.sampled_from(["*", "+", "?", "*?", "{", "}", "{,3}", "{e<=1}", "{2"]),
)
atom = st.sampled_from(
    ["a", "b", ".", "\\d", "\\w", "\\b", "[a-c]", "[^]", "[]", "[{]", "\\p{L}", "\\x{41}", "\\{",
     "\\", "\\1", "$", "^", "é", "/", "\\/"]
)
opener = st.sampled_from(["(", "(?:", "(?=", "(?<!", "(?<n>", "[", "|"])
piece = st.one_of(atom, quantifier, opener, st.just(")"), st.just("]"))
# Free-form soup (mostly malformed patterns) and well-formed nested repeats (the memory bombs).
soup = st.lists(piece, min_size=1, max_size=40).map("".join)
nested = st.recursive(
    st.builds("{}{}".format, atom, quantifier),
    lambda inner: st.one_of(
        st.builds("{}{}{})".format, opener.filter(lambda o: o.startswith("(")), inner, st.just("")),
        st.builds("(?:{}){}".format, inner, quantifier),
        st.builds("{}|{}".format, inner, inner),
        st.builds("{}{}".format, inner, inner),
    ),
    max_leaves=8,
)
body = st.one_of(soup, nested)
flags = st.sampled_from(["", "i", "m", "s", "y", "gi", "ii", "u"])


@settings(max_examples=400, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(body, flags)
def check(pattern, flag):
    started = time.monotonic()
    key = "/" + pattern + "/" + flag
    parsed = parse_regex_key(key)
    Key(key, False, True)  # the scan's own entry point: never raises either
    if parsed is not None and parsed.pattern is not None:
        assert pattern_size(pattern) <= MAX_EXPANSION
        parsed.pattern.search("ab" * 200 + "é", timeout=1.0)
    elif parsed is not None:
        assert parsed.error and "\n" not in parsed.error
    # Only catches a hang (a compile that unrolled millions of units takes seconds).
    assert time.monotonic() - started < 20


check()
print("fuzzed")
"""


def test_any_regex_key_is_read_within_bounds():
    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (_LIMIT, _LIMIT))

    done = subprocess.run(
        [sys.executable, "-c", _FUZZ], capture_output=True, text=True, timeout=600, preexec_fn=cap
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stdout.strip().endswith("fuzzed")
