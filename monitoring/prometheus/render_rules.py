#!/usr/bin/env python3
"""Writes a copy of alerts.yml with another stall threshold and `for` duration.

    render_rules.py --stall-seconds 300 --stall-for 30s [--input alerts.yml] --output out.yml

The stalled-training rule is the one operators tune per job (a job with 20-minute checkpoints needs
a longer threshold than one with 1-second steps); the integration test uses seconds.
"""
import argparse
import pathlib
import re
import sys


def render(text: str, stall_seconds: float, stall_for: str) -> str:
    text, n1 = re.subn(r"> [0-9.]+(\s+# stall-threshold)", rf"> {stall_seconds:g}\1", text)
    text, n2 = re.subn(r"for: \S+(\s+# stall-for)", rf"for: {stall_for}\1", text)
    if n1 != 1 or n2 != 1:
        raise SystemExit(f"render_rules: stall markers not found exactly once ({n1}, {n2})")
    return text


def main() -> int:
    here = pathlib.Path(__file__).resolve().parent
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--input", default=str(here / "alerts.yml"))
    p.add_argument("--output", required=True)
    p.add_argument("--stall-seconds", type=float, required=True)
    p.add_argument("--stall-for", default="1m")
    a = p.parse_args()
    text = pathlib.Path(a.input).read_text()
    pathlib.Path(a.output).write_text(render(text, a.stall_seconds, a.stall_for))
    return 0


if __name__ == "__main__":
    sys.exit(main())
