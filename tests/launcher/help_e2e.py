#!/usr/bin/env python3
"""Every `hdtrain` command and subcommand answers --help (and -h): exit 0, its usage on stdout,
nothing else done (no files written, no MPI started). Commands are discovered from `hdtrain
--help` and subcommands from each command's own usage ("hdtrain CMD SUB ..."), on top of the
ones listed here, so a new one is covered without editing this file. Also: an unknown command or
subcommand is an error (exit 2, named on stderr).

Usage: help_e2e.py --hdtrain PATH
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile

# At least these must exist (discovery adds any others).
EXPECTED = {"info": [], "pretrain": [], "data": ["synth", "tokenizer", "check"],
            "ckpt": ["inspect", "export", "import"], "ps3": ["encode"]}


def fail(msg):
    print("FAIL: " + msg)
    sys.exit(1)


def check(cond, msg):
    if not cond:
        fail(msg)
    print("ok: " + msg)


def run(hdtrain, args, cwd):
    p = subprocess.run([hdtrain] + args, capture_output=True, text=True, timeout=60, cwd=cwd)
    return p.returncode, p.stdout, p.stderr


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--hdtrain", required=True)
    hdtrain = os.path.abspath(ap.parse_args().hdtrain)
    with tempfile.TemporaryDirectory() as cwd:
        rc, out, _ = run(hdtrain, ["--help"], cwd)
        check(rc == 0 and out.startswith("usage: hdtrain <command>"), "hdtrain --help")
        commands = re.findall(r"^  (\w+)\s", out, re.M)
        check(set(EXPECTED) <= set(commands), "commands listed: %s" % commands)
        for variant in ([], ["-h"]):
            rc, out2, _ = run(hdtrain, variant, cwd)
            check(rc == 0 and out2 == out, "hdtrain %s prints the same usage" % " ".join(variant))

        for cmd in commands:
            for flag in ("--help", "-h"):
                rc, out, err = run(hdtrain, [cmd, flag], cwd)
                check(rc == 0 and re.search(r"^usage:", out, re.M) and "hdtrain " + cmd in out,
                      "hdtrain %s %s: exit %d, usage on stdout %s" % (cmd, flag, rc, err[-200:]))
            subs = set(EXPECTED.get(cmd, [])) | set(re.findall(r"hdtrain %s (\w+)" % cmd, out))
            for sub in sorted(subs):
                for flag in ("--help", "-h"):
                    rc, sout, err = run(hdtrain, [cmd, sub, flag], cwd)
                    check(rc == 0 and re.search(r"^usage:", sout, re.M) and
                          "hdtrain %s %s" % (cmd, sub) in sout,
                          "hdtrain %s %s %s: exit %d, usage on stdout %s"
                          % (cmd, sub, flag, rc, err[-200:]))
            if subs:
                rc, _, err = run(hdtrain, [cmd, "nosuchsub"], cwd)
                check(rc == 2 and "nosuchsub" in err, "hdtrain %s nosuchsub: exit 2, named" % cmd)
        # --help after other options still only prints the usage.
        rc, out, _ = run(hdtrain, ["data", "synth", "--out", "x", "--images", "3", "--help"], cwd)
        check(rc == 0 and "hdtrain data synth" in out, "hdtrain data synth --out x ... --help")
        check(os.listdir(cwd) == [], "no --help wrote anything: %s" % os.listdir(cwd))
        rc, _, err = run(hdtrain, ["nosuchcommand"], cwd)
        check(rc == 2 and "nosuchcommand" in err and "usage: hdtrain" in err,
              "an unknown command: exit 2, named, usage on stderr")
    print("PASS help")


if __name__ == "__main__":
    main()
