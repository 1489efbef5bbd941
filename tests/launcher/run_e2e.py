#!/usr/bin/env python3
"""End-to-end tests of `hdtrain run` (a staged run) under real mpirun, on the micro pipeline
(pipeline_micro.textproto: micro PS3 -> VILA-HD align -> SFT -> eval, 2 ranks) and the dataset
of the launcher e2e fixture.

Cases (one per CTest test):
  full       the uninterrupted run: every stage's folder, done marker, result and eval.json;
             stage transitions load the right weights (stage 1 starts from the PS3 stage's final
             checkpoint, stage 2 from stage 1's result; frozen parts carry them to the end)
  midstage   stop_at_step inside the PS3 stage and inside the SFT stage, each then the same
             command again: the result folders and eval.json equal the uninterrupted run's bytes
  boundary   --stop-after-stage at each boundary, and a crash between a stage's result and its
             done marker, then the same command: same bytes; a done stage is never redone
  kill9      rank 1 SIGKILLed inside the SFT stage (after its first checkpoint), then the same
             command: the job ends, the rerun resumes the stage and equals an uninterrupted run
             of the same config, byte for byte
  reshard    the SFT stage stopped on 2 ranks, resumed on 1 (N -> M): it resumes at the stopped
             step, and the result equals the 2-rank run's within float tolerance
  bad_config every bad stage field exits 2 before any work, naming stages[i].field

Usage: run_e2e.py CASE --hdtrain PATH --mpirun "mpirun ..." --work DIR
"""
import argparse
import filecmp
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
CONFIG = os.path.join(HERE, "pipeline_micro.textproto")
TOKENIZER = os.path.join(HERE, "..", "fixtures", "bpe_tokenizer", "tokenizer.json")
STAGES = ["00_ps3_pretrain", "01_vilahd_align", "02_vilahd_sft", "03_eval"]


def fail(msg):
    print("FAIL: " + msg)
    sys.exit(1)


def check(cond, msg):
    if not cond:
        fail(msg)
    print("ok: " + msg)


class Env:
    def __init__(self, a):
        self.hdtrain, self.mpirun, self.work = a.hdtrain, a.mpirun.split(), a.work
        self.data = os.path.join(a.work, "data")

    def command(self, run_dir, sets=(), extra=(), np=2):
        c = self.mpirun + ["-np", str(np), self.hdtrain, "run", "--config", CONFIG,
                           "--set", "run_dir=" + run_dir, "--set", "data.dir=" + self.data,
                           "--set", "vilahd.tokenizer=" + TOKENIZER]
        for s in sets:
            c += ["--set", s]
        c += list(extra)
        print("$ " + " ".join(c), flush=True)
        return c

    def run(self, run_dir, sets=(), extra=(), expect_rc=0, np=2):
        c = self.command(run_dir, sets, extra, np)
        p = subprocess.run(c, capture_output=True, text=True, timeout=300)
        sys.stdout.write(p.stdout[-2500:] + p.stderr[-2500:])
        if expect_rc is not None and (p.returncode == 0) != (expect_rc == 0):
            fail("exit code %d (expected %s)" % (p.returncode, expect_rc))
        return p


def fresh(env, name):
    d = os.path.join(env.work, "run_" + name)
    shutil.rmtree(d, ignore_errors=True)
    return d


def tensors(path):
    """name -> raw bytes of a safetensors file."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    return {k: data[v["data_offsets"][0]:v["data_offsets"][1]]
            for k, v in header.items() if k != "__metadata__"}


def vila(run, stage, sub="vila"):
    d = os.path.join(run, "stages", stage, sub)
    return {part: tensors(os.path.join(d, part, "model.safetensors"))
            for part in ("llm", "mm_projector", "vision_tower")}


def without_seconds(x):
    if isinstance(x, dict):
        return {k: without_seconds(v) for k, v in x.items() if k != "seconds"}
    if isinstance(x, list):
        return [without_seconds(v) for v in x]
    return x


def same_tree(a, b):
    """Every file of a equals b's, byte for byte (checkpoint folders and logs excepted)."""
    bad = []
    for root, _, files in os.walk(a):
        for f in files:
            pa = os.path.join(root, f)
            rel = os.path.relpath(pa, a)
            if "checkpoints" in rel or rel.endswith(".jsonl") or f in ("done", "hdtrain.lock") \
                    or f.startswith("config"):
                continue
            pb = os.path.join(b, rel)
            if not os.path.exists(pb):
                bad.append(rel)
            elif f == "eval.json":  # equal but for the timings
                if without_seconds(json.load(open(pa))) != without_seconds(json.load(open(pb))):
                    bad.append(rel)
            elif not filecmp.cmp(pa, pb, shallow=False):
                bad.append(rel)
    return bad


def reference(env):
    """The uninterrupted run (made once, shared by the cases)."""
    ref = os.path.join(env.work, "run_reference")
    if not os.path.exists(os.path.join(ref, "stages", STAGES[-1], "done")):
        shutil.rmtree(ref, ignore_errors=True)
        env.run(ref)
    return ref


def case_full(env):
    ref = os.path.join(env.work, "run_reference")
    shutil.rmtree(ref, ignore_errors=True)
    p = env.run(ref)
    check("hdtrain run: done (4 stages)" in p.stdout, "the run reports all 4 stages done")
    for s in STAGES:
        check(os.path.exists(os.path.join(ref, "stages", s, "done")), s + " has its done marker")
    ev = json.load(open(os.path.join(ref, "eval.json")))
    check(ev == json.load(open(os.path.join(ref, "stages", STAGES[3], "eval.json"))),
          "eval.json in the run folder (and the eval stage's folder)")
    # Metrics carry the stage they came from (the JSON lines mirror the Prometheus labels).
    for s, label in zip(STAGES[:3], ("ps3_pretrain", "vilahd_align", "vilahd_sft")):
        with open(os.path.join(ref, "stages", s, "metrics_rank0.jsonl")) as f:
            labels = {json.loads(line)["stage"] for line in f if line.strip()}
        check(labels == {label}, "%s metrics labelled stage=%s (%s)" % (s, label, labels))
    # Stage 1 starts from the PS3 stage's final weights (exported from its checkpoint).
    ps3 = os.path.join(env.work, "ps3_final.safetensors")
    subprocess.run([env.hdtrain, "ckpt", "export",
                    os.path.join(ref, "stages", STAGES[0], "checkpoints", "step_00000004"),
                    "--out", ps3], check=True, capture_output=True)
    ps3_t = tensors(ps3)
    init = vila(ref, STAGES[1], "init")
    vt = init["vision_tower"]
    check(len(vt) > 20 and all(ps3_t.get(k) == v for k, v in vt.items()),
          "stage 1's vision tower = the PS3 stage's final checkpoint (%d tensors)" % len(vt))
    a1, s2 = vila(ref, STAGES[1]), vila(ref, STAGES[2])
    check(a1["llm"] == init["llm"], "alignment kept the LLM frozen (every bit)")
    check(a1["mm_projector"] != init["mm_projector"], "alignment trained the projector")
    selection = ("selection_feature_proj", "highres_selection_feature_module",
                 "prompt_proj_for_highres")  # top_down_selection: trained in both stages
    frozen = {k: v for k, v in vt.items() if not any(m in k for m in selection)}
    check(len(frozen) > 10 and all(s2["vision_tower"][k] == v for k, v in frozen.items()),
          "the frozen vision tower reaches the SFT result unchanged (%d tensors)" % len(frozen))
    check(any(s2["vision_tower"][k] != v for k, v in vt.items() if k not in frozen),
          "PS3's selection modules (top_down_selection) were trained")
    check(s2["llm"] != a1["llm"], "SFT trained the LLM, starting from stage 1's result")
    lines = open(os.path.join(ref, "stages", STAGES[2], "metrics_rank0.jsonl")).read().split("\n")
    check(len([l for l in lines if l.strip()]) >= 4, "the SFT stage logged its steps")


def case_midstage(env):
    ref = reference(env)
    for stage, sets in ((0, ["stages.0.stop_at_step=2"]), (2, ["stages.2.stop_at_step=2"])):
        run = fresh(env, "mid%d" % stage)
        p = env.run(run, sets)
        check("stopped in stage %d" % stage in p.stdout, "stop_at_step stops stage %d" % stage)
        check(not os.path.exists(os.path.join(run, "stages", STAGES[stage], "done")),
              "no done marker for the stopped stage")
        p = env.run(run)
        check("hdtrain run: done" in p.stdout and "[resume]" in p.stdout,
              "the same command resumes stage %d from its checkpoint and finishes" % stage)
        bad = same_tree(ref, run)
        check(not bad, "resumed run == uninterrupted run, byte for byte (differs: %s)" % bad)


def case_boundary(env):
    ref = reference(env)
    for i in (0, 1, 2):
        run = fresh(env, "boundary%d" % i)
        p = env.run(run, extra=["--stop-after-stage", str(i)])
        check("stopped after stage %d" % i in p.stdout, "--stop-after-stage %d stops there" % i)
        check(not os.path.exists(os.path.join(run, "stages", STAGES[i + 1])),
              "stage %d has not started" % (i + 1))
        p = env.run(run)
        for j in range(i + 1):
            check("[run] stage %d (%s): done, skipped" % (j, STAGES[j][3:]) in p.stdout,
                  "finished stage %d is not redone" % j)
        bad = same_tree(ref, run)
        check(not bad, "stopped at boundary %d + rerun == uninterrupted (differs: %s)" % (i, bad))
    # A crash after stage 1 wrote its result but before its done marker: the rerun takes the
    # stage's final checkpoint, writes the same result, and goes on.
    run = fresh(env, "crash")
    env.run(run, extra=["--stop-after-stage", "1"])
    os.remove(os.path.join(run, "stages", STAGES[1], "done"))
    shutil.rmtree(os.path.join(run, "stages", STAGES[1], "vila"))
    p = env.run(run)
    check("[resume] stage vilahd_align" in p.stdout, "the crashed stage resumes at its last step")
    bad = same_tree(ref, run)
    check(not bad, "crash at the boundary + rerun == uninterrupted (differs: %s)" % bad)


def hdtrain_pids(run_dir):
    """{rank: pid} of the hdtrain processes whose command line names run_dir."""
    pids = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                argv = f.read().split(b"\0")
            if not argv[0].endswith(b"hdtrain") or ("run_dir=" + run_dir).encode() not in argv:
                continue
            with open("/proc/%s/environ" % pid, "rb") as f:
                env = dict(kv.split(b"=", 1) for kv in f.read().split(b"\0") if b"=" in kv)
            pids[int(env[b"OMPI_COMM_WORLD_RANK"])] = int(pid)
        except (OSError, KeyError, ValueError):
            pass
    return pids


# The kill and reshard cases run a longer SFT stage, so that there is a mid-stage to hit.
LONG_SFT = ["stages.2.steps=40", "stages.2.checkpoint_every=2"]


def reference_long(env):
    """An uninterrupted run with LONG_SFT, made afresh by each case that needs it."""
    ref = fresh(env, "reference_long")
    env.run(ref, LONG_SFT)
    return ref


def case_kill9(env):
    ref = reference_long(env)
    run = fresh(env, "kill9")
    job = subprocess.Popen(env.command(run, LONG_SFT), stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
    first = os.path.join(run, "stages", STAGES[2], "checkpoints", "step_00000002")
    deadline = time.time() + 240
    while not os.path.exists(first) and job.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    pids = hdtrain_pids(run)
    check(os.path.exists(first) and job.poll() is None and sorted(pids) == [0, 1],
          "the SFT stage wrote its first checkpoint while both ranks run (%s)" % pids)
    os.kill(pids[1], signal.SIGKILL)
    out, _ = job.communicate(timeout=120)
    sys.stdout.write(out[-1500:])
    check(job.returncode != 0, "the job fails when rank 1 is killed (rc %d)" % job.returncode)
    check(not os.path.exists(os.path.join(run, "stages", STAGES[2], "done")),
          "the killed stage has no done marker")
    p = env.run(run, LONG_SFT)
    check("[resume] stage vilahd_sft" in p.stdout and "hdtrain run: done" in p.stdout,
          "the same command resumes the SFT stage from a checkpoint and finishes")
    for j in (0, 1):
        check("[run] stage %d (%s): done, skipped" % (j, STAGES[j][3:]) in p.stdout,
              "finished stage %d is not redone" % j)
    bad = same_tree(ref, run)
    check(not bad, "killed (-9) + rerun == uninterrupted, byte for byte (differs: %s)" % bad)


def case_reshard(env):
    ref = reference_long(env)
    run = fresh(env, "reshard")
    p = env.run(run, LONG_SFT + ["stages.2.stop_at_step=10"])
    check("stopped in stage 2" in p.stdout, "stop_at_step stops the SFT stage on 2 ranks")
    p = env.run(run, LONG_SFT, np=1)
    check("[resume] stage vilahd_sft" in p.stdout and "step 10" in p.stdout,
          "1 rank resumes the 2-rank SFT stage at step 10")
    check("hdtrain run: done" in p.stdout, "and finishes the run")
    a, b = vila(ref, STAGES[2]), vila(run, STAGES[2])
    worst, count = 0.0, 0
    for part in a:
        for name, raw in a[part].items():
            x = struct.unpack("<%df" % (len(raw) // 4), raw)
            y = struct.unpack("<%df" % (len(raw) // 4), b[part][name])
            scale = max(1e-3, max(abs(v) for v in x))
            worst = max(worst, max(abs(u - v) for u, v in zip(x, y)) / scale)
            count += 1
    print("N -> M: %d tensors, worst difference %.3g of the tensor's scale" % (count, worst))
    check(count > 20 and worst < 1e-3,
          "2 -> 1 rank resume = the 2-rank run within 1e-3 of each tensor's scale (%.3g)" % worst)
    check(os.path.exists(os.path.join(run, "eval.json")), "the evaluation ran on the result")


def case_bad_config(env):
    run = fresh(env, "bad")
    cases = [
        (["stages.1.kind=sfft"], "stages[1].kind = 'sfft' is not one of"),
        (["stages.1.trainable=llm,eyes"], "stages[1].trainable names 'eyes'"),
        (["stages.2.global_batch=3"], "stages[2].global_batch = 3 is not divisible by the world size 2"),
        (["stages.0.steps=0"], "stages[0].steps = 0 must be >= 1"),
        (["stages.3.steps=5"], "stages[3].steps is set, but an eval stage does not train"),
        (["stages.0.trainable=llm"], "stages[0].trainable applies to VILA-HD stages"),
        (["stages.1.warmup_steps=3"], "stages[1].warmup_steps = 3 must be in [0, steps = 3)"),
        (["train.micro_batches=4"], "stages[0] (ps3_pretrain"),
        (["vilahd.tokenizer="], "vilahd.tokenizer is empty"),
        (["stages.7.steps=1"], "stage index '7' is not one of 0..3"),
        (["stages.1.stpes=1"], "stages have no field 'stpes'"),
    ]
    for sets, msg in cases:
        p = env.run(run, sets, expect_rc=2)
        check(p.returncode == 2 and msg in p.stderr, "%s -> exit 2 naming it: %s" % (sets, msg))
    check(not os.path.exists(os.path.join(run, "stages")), "nothing was run")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("case")
    ap.add_argument("--hdtrain", required=True)
    ap.add_argument("--mpirun", required=True)
    ap.add_argument("--work", required=True)
    a = ap.parse_args()
    env = Env(a)
    if not os.path.exists(os.path.join(env.data, "sft.jsonl")):
        fail("no dataset in %s (the launcher_e2e_data test makes it)" % env.data)
    globals()["case_" + a.case](env)
    print("PASS " + a.case)


if __name__ == "__main__":
    main()
