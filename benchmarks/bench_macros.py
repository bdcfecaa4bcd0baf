"""Hostile macro text (issue #26 item 4): seconds and sizes of one `substitute` call per input.

    python benchmarks/bench_macros.py [--timeout 60] [--module-dir DIR] [NAME-FILTER ...]

Each input runs in its own child process under a 2 GiB address-space limit and a timeout, so a
quadratic or cubic case shows as "TIMEOUT" instead of taking the machine down. `--module-dir`
points at a folder holding another copy of the module as `macros_under_test.py` (to measure the
code before a change); by default the installed `tavern.prompt.macros` runs. Printed per input:
seconds, input and output length, the largest variable, an exception if one escaped, and the
first warning.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import textwrap

CASES = {
    "timeDiff:: x2000 (24 KB)": '"{{timeDiff::" * 2000',
    "random:: x2000 unclosed": '"{{random::" * 2000',
    "random:: x8000 unclosed": '"{{random::" * 8000',
    "reverse: x2400 unclosed": '"{{reverse:" * 2400',
    'banned " x2400 unclosed': "'{{banned \"' * 2400",
    "pick:: x2400 unclosed": '"{{pick::" * 2400',
    "roll: x3400 unclosed": '"{{roll:" * 3400',
    "// x6000 unclosed": '"{{//" * 6000',
    "setvar:: x2400 unclosed": '"{{setvar::" * 2400',
    "setvar doubling, 24 lines": '"{{setvar::x::abcdefgh}}\\n" + "{{setvar::x::{{getvar::x}}{{getvar::x}}}}\\n" * 24',
    "datetimeformat + 20k spaces": '"{{datetimeformat" + " " * 20000',
    "datetimeformat + 20k [": '"{{datetimeformat " + "[" * 20000 + "}}"',
    "20k line breaks, no trim": '"\\n" * 20000 + "{{x"',
    "read a 20k-digit+x variable": '"{{setvar::n::" + "1" * 20000 + "x}}\\n{{getvar::n}}"',
    "roll with 5000 digits": '"{{roll:" + "9" * 5000 + "}}"',
    "time_UTC+2000": '"{{time_UTC+2000}}"',
    "hex variable, 400 digits": '"{{setvar::x::0x" + "f" * 400 + "}}\\n{{getvar::x}}"',
    "addvar on 100k-deep [": '"{{setvar::x::" + "[" * 100000 + "}}\\n{{addvar::x::1}}"',
    "getvar x20000 of a 1 KB var": '"{{setvar::v::" + "a" * 1000 + "}}\\n" + "{{getvar::v}}" * 20000',
    "description x20000 (10 KB)": '"{{description}}" * 20000',
    "roll:1000d6 x5000": '"{{roll:1000d6}}" * 5000',
    "pick::a::b x20000": '"{{pick::a::b}}" * 20000',
}

CHILD = textwrap.dedent(
    """
    import json, resource, sys, time
    from datetime import datetime
    resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
    if sys.argv[1]:
        sys.path.insert(0, sys.argv[1])
        from macros_under_test import MacroContext, substitute
    else:
        from tavern.prompt.macro_context import MacroContext
        from tavern.prompt.macros import substitute
    text = eval(sys.argv[2])
    ctx = MacroContext(char="Mira", user="Ann", chat_id="c", now=datetime(2024, 9, 15, 14, 3), rng_seed=1,
                       description="d" * 10000, original="sys")
    start = time.perf_counter()
    try:
        out, err = substitute(text, ctx), ""
    except BaseException as e:
        out, err = "", f"{type(e).__name__}: {str(e)[:60]}"
    seconds = time.perf_counter() - start
    var = max((len(str(v)) for v in ctx.variables.values()), default=0)
    warning = (getattr(ctx, "warnings", None) or [""])[0][:70]
    print(f"{seconds:7.3f} s  in {len(text):>8,}  out {len(out):>11,}  var {var:>11,}  {err}{warning}")
    """
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--module-dir", default="")
    parser.add_argument("only", nargs="*")
    args = parser.parse_args()
    for name, expr in CASES.items():
        if args.only and not any(o in name for o in args.only):
            continue
        try:
            done = subprocess.run(
                [sys.executable, "-c", CHILD, args.module_dir, expr],
                capture_output=True,
                text=True,
                timeout=args.timeout,
            )
            lines = (done.stdout or done.stderr).strip().splitlines()
            result = lines[-1] if lines else f"exit {done.returncode}"
        except subprocess.TimeoutExpired:
            result = f"TIMEOUT > {args.timeout:.0f} s"
        print(f"{name:30s} {result}", flush=True)


if __name__ == "__main__":
    main()
