#!/usr/bin/env python3
"""Reliability of unattended `mpirun -np 2 hdtrain pretrain` runs (issue 19), one case per test.

Each case reproduces an operator's failure for real (2 mpirun ranks, files damaged on disk, a
second job, a full file system) and checks what the run does about it. Shared helpers and the
micro config come from pretrain_e2e.py; the dataset is the launcher_e2e_data fixture.

  bad_manifest  a corrupt manifest (step 4) and a manifest-less leftover (step 5): both moved
                aside as step_N.invalid-<time> with a warning; the run resumes from step 2 and
                saves steps 4 and 6 again (before: "step_00000004 already exists" on every rerun)
  corrupt       a flipped byte in rank 1's shard of the newest checkpoint: on_corrupt=error stops
                naming the checksum; the default falls back to the previous checkpoint on every
                rank (bit-identical losses after it), moves the bad folder aside, and counts it
                in hdtrain_checkpoint_fallbacks_total
  all_corrupt   the only checkpoint is damaged: moved aside, the model initialised again (a failed
                load leaves part of its values in the shards), training from step 0 repeats a
                fresh run's losses bit for bit
  lock          a second job on a busy run folder exits 2 at once naming the holder (host, pid,
                SLURM job id, start time); a lock left by SIGKILLed ranks is taken over
  init_from     a checkpoint of another depth: missing / unused entries are errors listing them,
                accepted only with checkpoint.init_from_allow_missing / _allow_unused
  disk_full     run_dir/checkpoints on a 512 KiB tmpfs: "No space left on device", no .tmp left;
                with async saves the failure stops the run at the next step, not the next save
                (needs root for the mount; exits 77 = skipped otherwise)
  data_check    `hdtrain data check` finds what training would skip: a truncated JPEG, random
                bytes named .jpg, a box outside its image, a JSON syntax error (named with line
                and column); exit 1. A 2-rank run prints the bad record's warning once, not once
                per rank
"""
import argparse
import glob
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pretrain_e2e import (Env, check, fail, free_port_base, fresh, losses,  # noqa: E402
                          rank_pids)


def step_dirs(run_dir):
    """Checkpoint folders proper (step_NNNNNNNN with a manifest; not .tmp or .invalid-*)."""
    d = os.path.join(run_dir, "checkpoints")
    if not os.path.isdir(d):
        return []
    return sorted(x for x in os.listdir(d) if re.fullmatch(r"step_\d{8}", x) and
                  os.path.exists(os.path.join(d, x, "manifest.pb")))


def out_of(p):
    return (p.stdout or "") + (p.stderr or "")


def flip_byte(h5_file):
    """Flips one byte in the middle of the file's largest dataset (data, not HDF5 metadata)."""
    p = subprocess.run(["h5dump", "-p", "-H", h5_file], capture_output=True, text=True, check=True)
    spans = [(int(s), int(o)) for s, o in re.findall(r"SIZE (\d+)\s+OFFSET (\d+)", p.stdout)]
    if not spans:
        fail("no contiguous dataset found in " + h5_file)
    size, offset = max(spans)
    at = offset + size // 2
    with open(h5_file, "r+b") as f:
        f.seek(at)
        b = f.read(1)
        f.seek(at)
        f.write(bytes([b[0] ^ 0x40]))
    print("flipped byte %d of %s (dataset of %d bytes at %d)" % (at, h5_file, size, offset))


def moved_aside(run_dir, step):
    return glob.glob(os.path.join(run_dir, "checkpoints", "step_%08d.invalid-*" % step))


def case_bad_manifest(env):
    d = fresh(env, "bad_manifest")
    env.run(d, ["train.stop_at_step=4", "eval.at_end=false"])
    ck = os.path.join(d, "checkpoints")
    check(step_dirs(d) == ["step_00000002", "step_00000004"], "checkpoints 2 and 4 written")
    with open(os.path.join(ck, "step_00000004", "manifest.pb"), "wb") as f:
        f.write(b"not a protobuf \xff\xff")
    os.makedirs(os.path.join(ck, "step_00000005"))
    shutil.copy(os.path.join(ck, "step_00000004", "rank_00000.h5"), os.path.join(ck, "step_00000005"))
    p = env.run(d, ["eval.at_end=false"], expect_rc=None)
    out = out_of(p)
    check(p.returncode == 0, "the rerun finishes (rc %d; before the fix: 'already exists')" %
          p.returncode)
    check("already exists" not in out, "no save is blocked by a leftover folder")
    check("[resume] from %s" % os.path.join(ck, "step_00000002") in p.stdout,
          "resumes from the newest valid checkpoint (step 2)")
    for step, why in ((4, "corrupt manifest.pb"), (5, "missing manifest.pb")):
        aside = moved_aside(d, step)
        check(len(aside) == 1, "step %d moved aside: %s" % (step, aside))
        check("moved %s aside to %s" % (os.path.join(ck, "step_%08d" % step), aside[0]) in p.stderr
              and why in p.stderr, "the warning names step %d, why (%s) and where it went" %
              (step, why))
    check(step_dirs(d) == ["step_00000002", "step_00000004", "step_00000006"],
          "steps 4 and 6 saved again: %s" % step_dirs(d))
    p = env.run(d, ["eval.at_end=false"])
    check("moved" not in p.stderr and "warning" not in p.stderr,
          "a third run finds nothing to move aside")


def fallback_count(port, rank):
    body = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % (port + rank),
                                  timeout=10).read().decode()
    m = re.search(r"^hdtrain_checkpoint_fallbacks_total\{[^}]*\} (\S+)$", body, re.M)
    return float(m.group(1)) if m else None


def case_corrupt(env):
    d = fresh(env, "corrupt")
    ck = os.path.join(d, "checkpoints")
    # The 8-step schedule from the start, so steps 4 and 5 after the fallback are comparable.
    env.run(d, ["train.steps=8", "train.stop_at_step=6", "eval.at_end=false"])
    first = losses(d)
    flip_byte(os.path.join(ck, "step_00000006", "rank_00001.h5"))

    p = env.run(d, ["train.steps=8", "eval.at_end=false", "checkpoint.on_corrupt=error"],
                expect_rc=None)
    out = out_of(p)
    check(p.returncode == 1, "on_corrupt=error: exit 1 (rc %d)" % p.returncode)
    check("checksum mismatch" in out and "rank_00001.h5" in out and "on_corrupt" in out,
          "the error names the checksum, the file and checkpoint.on_corrupt")
    check(os.path.exists(os.path.join(ck, "step_00000006")) and not moved_aside(d, 6),
          "on_corrupt=error moves nothing")

    t0 = time.time()
    p = env.run(d, ["train.steps=8", "eval.at_end=false"], expect_rc=None)
    wall = time.time() - t0
    out = out_of(p)
    check(p.returncode == 0, "the default (fallback) resumes and finishes (rc %d)" % p.returncode)
    check("[resume] from %s" % os.path.join(ck, "step_00000004") in p.stdout,
          "every rank resumed from step 4 (rank 0 alone could read step 6)")
    m = re.search(r"after 1 corrupt checkpoint\(s\) in ([0-9.]+) s", p.stdout)
    check(m is not None, "the resume line says one checkpoint was skipped")
    print("fallback time (load attempts, checks, move aside): %s s; whole run %.1f s" %
          (m.group(1), wall))
    check("WARNING" in p.stderr and "checksum mismatch" in p.stderr and "moved" in p.stderr,
          "a loud warning with the reason")
    check(len(moved_aside(d, 6)) == 1, "the bad folder moved aside: %s" % moved_aside(d, 6))
    after = losses(d)
    check(after[4] == first[4] and after[5] == first[5],
          "steps 4 and 5 after the fallback repeat the first run's bit for bit")
    check(step_dirs(d) == ["step_00000002", "step_00000004", "step_00000006", "step_00000008"],
          "steps 6 and 8 saved: %s" % step_dirs(d))

    # The metric, scraped from both ranks of a running job.
    flip_byte(os.path.join(ck, "step_00000008", "rank_00000.h5"))
    port = free_port_base()
    log = os.path.join(d, "metrics_rank0.jsonl")
    seen = len(open(log).read().splitlines())
    c = env.cmd(d, ["train.steps=400", "eval.at_end=false", "monitoring.serve=true",
                    "monitoring.port_base=%d" % port])
    print("$ " + " ".join(c), flush=True)
    job = subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and job.poll() is None:
        if len(open(log).read().splitlines()) >= seen + 2:
            break
        time.sleep(0.2)
    check(job.poll() is None, "the job trains after falling back")
    counts = [fallback_count(port, r) for r in (0, 1)]
    pids = rank_pids(job.pid)
    os.kill(pids[0], signal.SIGTERM)
    out, _ = job.communicate(timeout=120)
    sys.stdout.write(out[-2000:])
    check(counts == [1.0, 1.0], "hdtrain_checkpoint_fallbacks_total is 1 on both ranks: %s" % counts)
    check("[resume] from %s" % os.path.join(ck, "step_00000006") in out, "resumed from step 6")


def skipped_count(port, rank):
    """Sum of hdtrain_samples_skipped_total over its reasons on one rank's /metrics."""
    body = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % (port + rank),
                                  timeout=10).read().decode()
    return sum(float(v) for v in re.findall(r"^hdtrain_samples_skipped_total\{[^}]*\} (\S+)$", body, re.M))


def case_skipped(env):
    """Issue 19, item 6: a truncated JPEG in the training set is skipped with a message and
    counted in hdtrain_samples_skipped_total (it stayed 0 before: the trainer never read the
    loader's bad-input log), and the run's summary says how many were skipped."""
    d = fresh(env, "skipped")
    data = os.path.join(env.work, "data_skipped")
    shutil.rmtree(data, ignore_errors=True)
    shutil.copytree(env.data, data)
    victim = sorted(glob.glob(os.path.join(data, "train", "*.jpg")))[0]
    with open(victim, "r+b") as f:
        f.truncate(os.path.getsize(victim) // 3)
    port = free_port_base()
    c = env.cmd(d, ["train.steps=400", "eval.at_end=false", "monitoring.serve=true",
                    "monitoring.port_base=%d" % port, "data.dir=" + data])
    print("$ " + " ".join(c), flush=True)
    job = subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    counts = [0.0, 0.0]
    deadline = time.time() + 150
    while time.time() < deadline and job.poll() is None and sum(counts) < 1:
        time.sleep(0.5)
        try:
            counts = [skipped_count(port, r) for r in (0, 1)]
        except OSError:
            pass  # not listening yet
    pids = rank_pids(job.pid)
    if 0 in pids:
        os.kill(pids[0], signal.SIGTERM)
    out, _ = job.communicate(timeout=120)
    sys.stdout.write(out[-2000:])
    check(sum(counts) >= 1, "hdtrain_samples_skipped_total counts the truncated JPEG: %s" % counts)
    check(os.path.basename(victim) in out, "the skip names the file")
    m = re.search(r"\[train\] (\d+) sample\(s\) skipped for bad input", out)
    check(m is not None and int(m.group(1)) >= 1, "the run's summary counts it")
    shutil.rmtree(data, ignore_errors=True)


def case_data_check(env):
    root = os.path.join(env.work, "data_check")
    data = os.path.join(root, "train")
    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(os.path.join(env.data, "train"), data)
    jpgs = sorted(glob.glob(os.path.join(data, "*.jpg")))
    jsons = sorted(glob.glob(os.path.join(data, "*.json")))
    truncated, noise = jpgs[0], jpgs[1]
    with open(truncated, "r+b") as f:
        f.truncate(os.path.getsize(truncated) // 3)
    with open(noise, "wb") as f:
        f.write(os.urandom(5000))
    outside = jsons[2]
    rec = json.load(open(outside))
    rec["box"][0] = [1e6, 1e6, 1e6 + 10, 1e6 + 10]
    json.dump(rec, open(outside, "w"))
    broken = jsons[3]
    with open(broken, "w") as f:
        f.write('{"text": ["a sign"],\n "box": [[1, 2, 3, 4]]\n "global_text": "x"}\n')
    c = [env.hdtrain, "data", "check", "--data", data]
    print("$ " + " ".join(c), flush=True)
    p = subprocess.run(c, capture_output=True, text=True, timeout=240)
    out = p.stdout + p.stderr
    sys.stdout.write(out[-3000:])
    check(p.returncode == 1, "exit 1 when there are bad inputs (rc %d)" % p.returncode)
    for path, what in ((truncated, "truncated JPEG"), (noise, "random bytes"),
                       (outside, "box outside the image"), (broken, "JSON syntax error")):
        check(os.path.basename(path) in out, "%s named (%s)" % (what, os.path.basename(path)))
    check("box entirely outside the image" in out, "the box's reason given")
    # The missing comma ends line 2; the parser stops after the unexpected string on line 3.
    check(re.search(r"malformed JSON at line 3, column 14: syntax error", out) is not None,
          "the JSON error's line and column given")
    m = re.search(r"(\d+) bad inputs", out)
    check(m is not None and int(m.group(1)) == 4, "4 bad inputs counted: %s" % (m and m.group(1)))
    clean = subprocess.run([env.hdtrain, "data", "check", "--data", os.path.join(env.data, "train")],
                           capture_output=True, text=True, timeout=240)
    check(clean.returncode == 0 and " 0 bad inputs" in clean.stdout,
          "the intact dataset checks clean: " + clean.stdout.strip())

    # Once per job: both ranks parse every record; the broken one is reported once.
    os.remove(truncated), os.remove(noise)  # keep the run itself short and quiet
    d = fresh(env, "warn_once")
    # data.dir has no tokenizer yet: the setup trains one on the same records (quietly).
    p = env.run(d, ["train.steps=2", "eval.at_end=false", "data.dir=" + root])
    lines = [l for l in (p.stdout + p.stderr).splitlines() if os.path.basename(broken) in l]
    print("\n".join(lines))
    warnings = len(lines)
    check(warnings == 1, "the broken record is reported once in the job's output (%d)" % warnings)
    shutil.rmtree(root, ignore_errors=True)


def kill_job(job):
    """SIGKILLs the ranks of an mpirun job (killing mpirun alone would orphan them) and reaps it."""
    for pid in rank_pids(job.pid).values():
        os.kill(pid, signal.SIGKILL)
    try:
        job.communicate(timeout=30)  # mpirun notices and reaps its ranks
    except subprocess.TimeoutExpired:
        job.kill()
        job.communicate(timeout=30)


def case_all_corrupt(env):
    d = fresh(env, "all_corrupt")
    ck = os.path.join(d, "checkpoints")
    env.run(d, ["train.steps=4", "train.stop_at_step=2", "eval.at_end=false"])
    first = losses(d)
    seen = len(open(os.path.join(d, "metrics_rank0.jsonl")).read().splitlines())
    flip_byte(os.path.join(ck, "step_00000002", "rank_00001.h5"))
    p = env.run(d, ["train.steps=4", "eval.at_end=false"])
    check("[resume] no checkpoint in %s loads (1 damaged, moved aside" % ck in p.stdout and
          "starting again from the beginning" in p.stdout, "no checkpoint left: says so")
    with open(os.path.join(d, "metrics_rank0.jsonl")) as f:
        again = [json.loads(l) for l in f.read().splitlines()[seen:]]
    again = {r["step"]: r["loss"]["total"] for r in again if "step" in r}
    check(sorted(again) == [0, 1, 2, 3], "trained from step 0")
    check(again[0] == first[0] and again[1] == first[1],
          "the model was initialised again: steps 0 and 1 repeat the first run bit for bit "
          "(not the damaged checkpoint's partly loaded values)")
    check(len(moved_aside(d, 2)) == 1, "the damaged folder moved aside")


def lock_file(run_dir):
    return os.path.join(run_dir, "hdtrain.lock")


def case_lock(env):
    d = fresh(env, "lock")
    c = env.cmd(d, ["train.steps=100000", "checkpoint.every_steps=0", "eval.at_end=false"])
    print("$ SLURM_JOB_ID=4242 " + " ".join(c), flush=True)
    a = subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         env=dict(os.environ, SLURM_JOB_ID="4242"))
    log = os.path.join(d, "metrics_rank0.jsonl")
    deadline = time.time() + 120
    while time.time() < deadline and a.poll() is None:
        if os.path.exists(log) and len(open(log).read().splitlines()) >= 2:
            break
        time.sleep(0.2)
    check(a.poll() is None, "job A trains")
    holder = rank_pids(a.pid)[0]

    t0 = time.time()
    b = subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        b_out, b_err = b.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        kill_job(b)
        kill_job(a)
        fail("job B on the same run folder was still running after 60 s (no lock)")
    wall = time.time() - t0
    sys.stdout.write(b_out[-2000:] + b_err[-2000:])
    check(b.returncode == 2, "job B exits 2 (rc %d)" % b.returncode)
    check(wall < 20, "job B exits at once (%.1f s under mpirun)" % wall)
    host = socket.gethostname()
    for what in ("is locked by another job", "host %s" % host, "pid %d" % holder, "job 4242",
                 "started ", lock_file(d)):
        check(what in b_err, "job B's error names: %s" % what)
    check(a.poll() is None and len(open(log).read().splitlines()) > 2, "job A keeps training")

    # SIGKILL every rank of A: its lock file stays, naming a dead process.
    kill_job(a)
    check("pid: %d" % holder in open(lock_file(d)).read(), "the dead job's lock file remains")
    p = env.run(d, ["train.steps=2", "checkpoint.every_steps=0", "eval.at_end=false"])
    check("stale lock of host %s, pid %d, job 4242 (SLURM_JOB_ID), started " % (host, holder) in
          p.stderr and "that process is gone; taking it over" in p.stderr,
          "job C takes over the stale lock with a message naming the dead holder")
    check(open(lock_file(d)).read() == "", "job C released the lock at exit")


def case_init_from(env):
    src = fresh(env, "init_src")
    env.run(src, ["train.steps=2", "eval.at_end=false"])
    shallow_ckpt = os.path.join(src, "checkpoints", "step_00000002")

    deep = fresh(env, "init_deep")
    sets = ["train.steps=2", "eval.at_end=false", "model.vision.depth=3",
            "checkpoint.init_from=" + shallow_ckpt]
    p = env.run(deep, sets, expect_rc=None)
    out = out_of(p)
    check(p.returncode == 1, "a deeper model from a shallower checkpoint fails (rc %d)" %
          p.returncode)
    check("does not match the model (another architecture?): 12 parameters of the model are "
          "missing from it: vision_model.trunk.blocks.2.norm1.weight, " in out and
          "set checkpoint.init_from_allow_missing: true" in out,
          "the error counts and lists the missing ones")
    check(", ... (2 more); " in out, "the list stops after the first 10 names")
    check(step_dirs(deep) == [], "nothing trained")
    p = env.run(deep, sets + ["checkpoint.init_from_allow_missing=true"])
    check(re.search(r"\[init\] parameters from .*: \d+ loaded, 12 missing \(allowed by "
                    r"checkpoint.init_from_allow_missing: kept initialised\)", p.stdout) is not None,
          "allowed explicitly: trains, saying how many stayed initialised")

    shallow = fresh(env, "init_shallow")
    sets = ["train.steps=2", "eval.at_end=false",
            "checkpoint.init_from=" + os.path.join(deep, "checkpoints", "step_00000002")]
    p = env.run(shallow, sets, expect_rc=None)
    out = out_of(p)
    check(p.returncode == 1 and "12 of its parameters are unused by the model: "
          "vision_model.trunk.blocks.2." in out and "set checkpoint.init_from_allow_unused: true" in
          out, "a shallower model: unused entries counted and listed")
    check("optim." not in out, "optimizer moments are not counted as unused")
    p = env.run(shallow, sets + ["checkpoint.init_from_allow_unused=true"])
    check("unused (allowed" in p.stdout, "allowed explicitly: trains")


def case_disk_full(env):
    d = fresh(env, "disk_full")
    ck = os.path.join(d, "checkpoints")
    os.makedirs(ck)
    m = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", ck],
                       capture_output=True, text=True)
    if m.returncode != 0:
        print("SKIP: cannot mount a tmpfs (%s); needs root" % m.stderr.strip())
        sys.exit(77)
    try:
        p = env.run(d, ["eval.at_end=false"], expect_rc=None)
        out = out_of(p)
        check(p.returncode == 1, "sync save on a full disk: exit 1 (rc %d)" % p.returncode)
        check("No space left on device" in out, "the error says 'No space left on device'")
        check(os.listdir(ck) == [], "no half-written folder left: %s" % os.listdir(ck))
        check(max(losses(d)) == 1, "stopped at the save after step 2")

        os.remove(os.path.join(d, "metrics_rank0.jsonl"))
        sets = ["eval.at_end=false", "checkpoint.async=true", "checkpoint.every_steps=4",
                "train.steps=12"]
        p = env.run(d, sets, expect_rc=None)
        out = out_of(p)
        check(p.returncode == 1, "async save on a full disk: exit 1 (rc %d)" % p.returncode)
        check("No space left on device" in out and "step 4" in out,
              "the error names the step and the errno text")
        last = max(losses(d))
        check(last <= 5, "stopped at the step boundary after the failed save (last step %d; the "
              "next save would be after step 7)" % last)
        check(os.listdir(ck) == [], "no half-written folder left: %s" % os.listdir(ck))
    finally:
        subprocess.run(["umount", ck])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("case")
    ap.add_argument("--hdtrain", required=True)
    ap.add_argument("--mpirun", required=True)
    ap.add_argument("--work", required=True)
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    env = Env(a)
    globals()["case_" + a.case](env)
    print("PASS " + a.case)


if __name__ == "__main__":
    main()
