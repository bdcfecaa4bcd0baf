"""Hostile macro text (issue #26 item 4): linear time, bounded output and variables, no traceback.

The inputs that hung or blew up run in a child process with a 1.5 GiB address-space limit and a
generous time bound that only catches a hang (they take well under a second; before the fix,
2,000 unclosed ``{{timeDiff::`` ran for minutes and 24 lines of ``{{setvar}}`` built a 134 MB
variable)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from datetime import UTC, datetime

import pytest

from tavern.prompt.macro_context import (
    MAX_DRAWS,
    MAX_EXPANSION_CHARS,
    MAX_VARIABLE_CHARS,
    MAX_VARIABLES_CHARS,
    MacroContext,
)
from tavern.prompt.macros import substitute

HANG_BOUND_S = 60  # a hang, not a speed test: each case takes well under a second

_CHILD = textwrap.dedent(
    """
    import json, resource, sys
    from datetime import datetime
    resource.setrlimit(resource.RLIMIT_AS, (3 << 29, 3 << 29))
    from tavern.prompt.macro_context import MacroContext
    from tavern.prompt.macros import substitute
    spec = json.loads(sys.argv[1])
    text = eval(spec["text"])
    ctx = MacroContext(char="Mira", user="Ann", chat_id="c", now=datetime(2024, 9, 15, 14, 3), rng_seed=1,
                       description=eval(spec.get("description", "''")))
    out = substitute(text, ctx)
    print(json.dumps({
        "same": out == text, "in": len(text), "out": len(out), "head": out[:60], "tail": out[-60:],
        "variables": {k: [len(str(v)), str(v)[:20]] for k, v in ctx.variables.items()},
        "warnings": ctx.warnings,
    }))
    """
)


def run_bounded(text: str, **spec: str) -> dict:
    """substitute(eval(text)) in a child with a memory limit; what came out, in brief."""
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, json.dumps({"text": text, **spec})],
        capture_output=True,
        text=True,
        timeout=HANG_BOUND_S,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


@pytest.mark.parametrize(
    "text",
    [
        '"{{timeDiff::" * 2000',  # the 24 KB: cubic, minutes
        '"{{timeDiff::a::" * 50000',
        '"{{random::" * 50000',
        '"{{reverse:" * 50000',
        "'{{banned \"' * 50000",
        '"{{pick::" * 50000',
        '"{{roll:" * 50000',
        '"{{// " * 50000',
        '"{{setvar::" * 50000',
        '"{{addglobalvar::a::" * 50000',
        '"{{datetimeformat " * 50000',
        '"{{datetimeformat" + " " * 100000',
        '"{{datetimeformat " + "[" * 100000 + "x"',
        '"\\n" * 100000 + "{{x"',  # a long run of line breaks and no {{trim}}
    ],
)
def test_unclosed_macros_repeated_cost_linear_time_and_stay_as_written(text: str) -> None:
    result = run_bounded(text)
    assert result["same"], result  # nothing matched, nothing lost


def test_a_run_of_line_breaks_before_trim_is_still_trimmed() -> None:
    result = run_bounded('"a" + "\\r\\n" * 50000 + "{{trim}}" + "\\n" * 50000 + "b"')
    assert result["head"] == "ab"


def test_a_long_number_like_variable_reads_in_linear_time() -> None:
    # "\d+\.?\d*" tried every split of the digits: 20,000 digits and an "x" took 8 s to read.
    result = run_bounded('"{{setvar::n::" + "1" * 100000 + "x}}\\n{{getvar::n}}"')
    assert result["out"] == 100002 and result["tail"].endswith("1x")


def test_a_line_that_doubles_a_variable_stops_at_the_variable_limit() -> None:
    # The 24 lines: each doubles x (8 characters to start), 134 MB by the end.
    doubling = '"{{setvar::x::abcdefgh}}\\n" + "{{setvar::x::{{getvar::x}}{{getvar::x}}}}\\n" * 24'
    result = run_bounded(doubling)
    size, head = result["variables"]["x"]
    assert size == MAX_VARIABLE_CHARS  # the last value that fit: 8 << 17 characters
    assert head == "abcdefgh" * 2 + "abcd"
    assert any("setvar::x" in w and "keeps its last value" in w for w in result["warnings"])
    assert all("\n" not in w for w in result["warnings"])


def test_expansion_stops_at_the_limit_and_leaves_the_rest_as_written() -> None:
    result = run_bounded('"{{description}}" * 20000', description='"d" * 10000')  # 200 MB before
    assert result["out"] <= result["in"] + MAX_EXPANSION_CHARS
    assert result["tail"].endswith("{{description}}")
    assert result["warnings"][0].startswith("macros: stopped expanding at 4,194,304 added characters")


def ctx(**kwargs: object) -> MacroContext:
    base: dict[str, object] = {"char": "Mira", "user": "Ann", "chat_id": "c", "rng_seed": 3}
    base.update(kwargs)
    return MacroContext(**base)  # type: ignore[arg-type]


def test_the_expansion_limit_is_shared_by_the_texts_of_one_context() -> None:
    c = ctx(description="d" * 600, max_expansion=1000)
    assert substitute("{{description}}", c) == "d" * 600
    assert substitute("{{description}}", c) == "{{description}}"  # 1,200 would be over 1,000
    assert substitute("{{char}}", c) == "Mira"  # small ones still fit
    assert len(c.warnings) == 1


def test_variables_keep_their_values_once_expansion_has_stopped() -> None:
    c = ctx(max_expansion=10, variables={"x": "kept", "big": "b" * 50})
    out = substitute("{{getvar::big}}\n{{setvar::x::{{getvar::big}}}}", c)
    assert out.startswith("{{getvar::big}}\n")
    assert c.variables["x"] == "kept"  # not "{{getvar::big", the macro left as written


def test_all_variables_together_have_a_limit() -> None:
    full = {f"v{i}": "a" * MAX_VARIABLE_CHARS for i in range(MAX_VARIABLES_CHARS // MAX_VARIABLE_CHARS)}
    c = ctx(variables=dict(full))
    assert substitute("{{setvar::new::abc}}{{setvar::v0::short}}", c) == ""
    assert "new" not in c.variables  # would go over the total
    assert c.variables["v0"] == "short"  # shrinking one is fine
    assert "the variables would hold" in c.warnings[0]


def test_dice_and_picks_stop_at_the_draw_limit() -> None:
    c = ctx()
    rolls = MAX_DRAWS // 1000
    out = substitute("{{roll:1000d6}} " * (rolls + 5), c).split()
    assert all(3000 <= int(x) <= 6000 for x in out[:rolls])  # 1000d6 sums near 3,500
    assert out[rolls:] == ["{{roll:1000d6}}"] * 5
    assert substitute("{{pick::a::b}}", c) == "{{pick::a::b}}"
    assert c.warnings == [
        "macros: stopped drawing at 20,000 dice and random picks; the ones left stay as written"
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[{{roll:" + "9" * 5000 + "}}]", "[]"),  # int() refused 5,000 digits: a traceback
        ("[{{roll:1d6+" + "9" * 5000 + "}}]", "[]"),
        ("{{time_UTC+2000}}", "11:23 PM"),  # moment: 2,000 minutes ahead (timezone() refused a day)
        ("{{time_UTC+99999999999}}", "Invalid date"),
        ("{{time_UTC-" + "9" * 5000 + "}}", "Invalid date"),
        ("{{setvar::x::0x" + "f" * 400 + "}}\n{{getvar::x}}", "\nInfinity"),  # float() overflowed
        ("{{timeDiff::0001-01-01T00:00+14:00::9999-12-31}}", "Invalid date"),
        ("{{datetimeformat [[[[ YYYY}}", "[[[[ 2024"),  # unclosed "[" stay literal, as in moment
    ],
)
def test_values_out_of_range_give_a_result_not_a_traceback(text: str, expected: str) -> None:
    assert substitute(text, ctx(now=datetime(2024, 9, 15, 14, 3, tzinfo=UTC))) == expected


def test_appending_to_something_too_deep_to_be_a_list_concatenates() -> None:
    c = ctx()
    assert substitute("{{setvar::x::" + "[" * 100000 + "}}\n{{addvar::x::1}}", c) == "\n"
    assert c.variables["x"] == "[" * 100000 + "1"  # json.loads raised RecursionError
