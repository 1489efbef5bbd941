#!/usr/bin/env python3
"""End-to-end tests of `mpirun -np 2 hdtrain pretrain` (run by CTest, one case per test).

Everything is real: mpirun ranks, the synthetic dataset on disk, HDF5 checkpoints read back with
h5dump, the JSON-lines metrics files and the /metrics endpoint. Cases:

  data          synthesize the shared micro dataset + tokenizer (the fixture the others need)
  determinism   two runs, same seed: identical per-step losses and identical final checkpoints
  resume        stop at step 3 (train.stop_at_step), run again: the resumed run's losses and
                final checkpoint equal the uninterrupted run's
  signal        SIGTERM to rank 0 alone mid-run: every rank stops at the same step, a
                checkpoint is written, mpirun exits 0, /metrics answered while it ran, and a
                restart resumes from that checkpoint
  signal_mpirun SIGTERM to the job's launcher (what a scheduler or Ctrl-C does), launched with
                scripts/hdrun as scripts/demo.sh does: every rank checkpoints at the next step
                and the job exits 0 within seconds (mpirun alone delivers SIGTERM only after
                odls_base_sigkill_timeout); the delay is printed and bounded
  listen        under `hdrun --local` (the demo's launch) no rank listens on a non-loopback
                address: /metrics on 127.0.0.1, no MPI TCP transport (by default every rank
                listens on 0.0.0.0 and [::]); mpirun's own listeners are printed
  abnormal_exit  a bad config, a rank that cannot start (its /metrics port taken) and a rank
                killed with -9 mid-run end the job under hdrun in seconds, not at a kill timeout
  nonfinite     a poisoned loss at step 2: skipped (null in the log), counted, training goes on
  nonfinite_limit  poisoned steps 1 and 2 with max_nonfinite_in_a_row 2: a clear error, exit != 0
  device        the model on the second host device cpu:1: the same losses, checkpoint and
                evaluation as the host run; a host checkpoint resumes on it
  bad_config    typo in a --set, typo in a file (file:line:col), model.device that cannot
                be used, wrong world size, missing
                dataset: exit code, message naming the thing, nothing written
"""
import argparse
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

HERE = os.path.dirname(os.path.abspath(__file__))
MICRO = os.path.join(HERE, "micro.textproto")
HDRUN = os.path.join(HERE, "..", "..", "scripts", "hdrun")


def fail(msg):
    print("FAIL: " + msg)
    sys.exit(1)


def check(cond, msg):
    if not cond:
        fail(msg)
    print("ok: " + msg)


class Env:
    def __init__(self, a):
        self.hdtrain = a.hdtrain
        self.mpirun = a.mpirun.split()
        self.work = a.work
        self.data = os.path.join(a.work, "data")

    def hdrun_env(self):
        """Environment for HDRUN: it runs this test's mpirun."""
        return dict(os.environ, HD_MPIRUN=self.mpirun[0])

    def hdrun_cmd(self, run_dir, sets=()):
        """The command line of cmd() launched through scripts/hdrun."""
        return [HDRUN] + self.cmd(run_dir, sets)[1:]

    def cmd(self, run_dir, sets=(), np=2, config=MICRO):
        c = self.mpirun + ["-np", str(np), self.hdtrain, "pretrain", "--config", config,
                           "--set", "run_dir=" + run_dir, "--set", "data.dir=" + self.data]
        for s in sets:
            c += ["--set", s]
        return c

    def run(self, run_dir, sets=(), np=2, config=MICRO, expect_rc=0):
        c = self.cmd(run_dir, sets, np, config)
        print("$ " + " ".join(c), flush=True)
        p = subprocess.run(c, capture_output=True, text=True, timeout=240)
        sys.stdout.write(p.stdout[-3000:])
        sys.stdout.write(p.stderr[-3000:])
        if expect_rc is not None:
            ok = p.returncode == 0 if expect_rc == 0 else p.returncode != 0
            if not ok:
                fail("exit code %d (expected %s) for %s" % (p.returncode, expect_rc, " ".join(c)))
        return p


def losses(run_dir, rank=0):
    """step -> total loss (None for a skipped step) from the rank's JSON-lines file."""
    out = {}
    with open(os.path.join(run_dir, "metrics_rank%d.jsonl" % rank)) as f:
        for line in f:
            rec = json.loads(line)
            if "step" in rec and "loss" in rec:
                out[rec["step"]] = rec["loss"]["total"]
    return out


def close(x, y, tol=1e-5):
    """Equal structure, numbers within tol (relative; the thread count may differ)."""
    if isinstance(x, dict):
        return isinstance(y, dict) and x.keys() == y.keys() and all(close(x[k], y[k]) for k in x)
    if isinstance(x, list):
        return isinstance(y, list) and len(x) == len(y) and all(close(a, b) for a, b in zip(x, y))
    if isinstance(x, float) or isinstance(y, float):
        return abs(x - y) <= tol * max(1.0, abs(x), abs(y))
    return x == y


def checkpoint_dump(step_dir):
    """Every tensor of every rank's HDF5 file, printed with 9 significant digits (exact f32)."""
    files = sorted(f for f in os.listdir(step_dir) if f.endswith(".h5"))
    if not files:
        fail("no rank files in " + step_dir)
    text = ""
    for f in files:
        p = subprocess.run(["h5dump", "-m", "%.9g", os.path.join(step_dir, f)],
                           capture_output=True, text=True, check=True)
        text += p.stdout.split("\n", 1)[1]  # drop the HDF5 "file name" line
    return text


def step_dirs(run_dir):
    d = os.path.join(run_dir, "checkpoints")
    if not os.path.isdir(d):
        return []
    return sorted(x for x in os.listdir(d)
                  if x.startswith("step_") and os.path.exists(os.path.join(d, x, "manifest.pb")))


def fresh(env, name):
    d = os.path.join(env.work, name)
    shutil.rmtree(d, ignore_errors=True)
    return d


def case_data(env):
    shutil.rmtree(env.data, ignore_errors=True)
    subprocess.run([env.hdtrain, "data", "synth", "--out", env.data, "--images", "16",
                    "--eval-images", "4", "--resolution", "448", "--seed", "5"], check=True)
    p = subprocess.run([env.hdtrain, "data", "tokenizer", "--data", env.data, "--vocab", "200"],
                       check=True, capture_output=True, text=True)
    sys.stdout.write(p.stdout + p.stderr)
    check(os.path.exists(os.path.join(env.data, "tokenizer.model")), "dataset and tokenizer ready")
    check("LOG(INFO)" not in p.stdout + p.stderr, "SentencePiece's INFO log stays out of the output")


def case_determinism(env):
    a, b = fresh(env, "det_a"), fresh(env, "det_b")
    pa = env.run(a)
    env.run(b)
    la, lb = losses(a), losses(b)
    check(sorted(la) == list(range(6)), "run A logged steps 0..5: %s" % la)
    check(all(v is not None and v == v for v in la.values()), "every loss is finite")
    check(la == lb, "same seed -> identical losses %s" % la)
    check(losses(a, 1) == la, "rank 1 reports the same (cross-rank mean) losses")
    check(step_dirs(a) == ["step_00000002", "step_00000004", "step_00000006"],
          "checkpoints every 2 steps and at the end: %s" % step_dirs(a))
    da = checkpoint_dump(os.path.join(a, "checkpoints", "step_00000006"))
    db = checkpoint_dump(os.path.join(b, "checkpoints", "step_00000006"))
    check(da == db and "GROUP \"exp_avg_sq\"" in da, "identical final checkpoints (params + moments)")
    check("retrieval top-1" in pa.stdout and "recall of box patches" in pa.stdout,
          "the held-out evaluation is printed at the end")
    ev = json.load(open(os.path.join(a, "eval.json")))
    check(set(ev) >= {"top_down", "bottom_up", "retrieval_forced", "retrieval_top_down"} and
          len(ev["top_down"]["per_scale"]) == len(ev["scales"]),
          "eval.json in the run folder: %s" % sorted(ev))
    # `hdtrain ps3 eval` on the run's final checkpoint reproduces the run's own evaluation.
    out = os.path.join(a, "ps3_eval.json")
    c = [env.hdtrain, "ps3", "eval", "--config", MICRO, "--set", "data.dir=" + env.data,
         "--checkpoint", a, "--out", out]
    p = subprocess.run(c, capture_output=True, text=True, timeout=120)
    sys.stdout.write(p.stdout[-2000:] + p.stderr[-2000:])
    check(p.returncode == 0 and close(json.load(open(out)), ev),
          "hdtrain ps3 eval on the run folder reproduces the run's eval.json")
    p = subprocess.run(c[:-4] + ["--checkpoint", os.path.join(a, "nope")], capture_output=True,
                       text=True, timeout=60)
    check(p.returncode == 2 and "nope" in p.stderr, "ps3 eval names a missing checkpoint, exit 2: %s" %
          p.stderr.strip()[-200:])
    with open(os.path.join(a, "metrics_rank0.jsonl")) as f:
        sel = [json.loads(l).get("selection") for l in f if '"step"' in l]
    check(all(x and set(x) == {"prior_in_box", "prior_outside", "posterior_in_box",
                               "posterior_outside", "grad_norm"} for x in sel) and
          any(x["grad_norm"] > 0 for x in sel), "selection statistics logged every step: %s" % sel[:1])
    c = fresh(env, "det_c")
    env.run(c, ["seed=4"])
    check(losses(c) != la, "another seed gives other losses")


def case_resume(env):
    full, part = fresh(env, "res_full"), fresh(env, "res_part")
    env.run(full)
    p1 = env.run(part, ["train.stop_at_step=3"])
    check("stop_at_step = 3 reached" in p1.stdout, "first run stops at step 3")
    check("hdtrain pretrain: stopped at step 3 (stop_at_step)" in p1.stdout,
          "the last line says why it stopped (not 'done at step 3 of 6')")
    with open(os.path.join(part, "metrics_rank0.jsonl")) as f:
        times = [re.search(r'"time": ([0-9.e+]+),', l).group(1) for l in f]
    check(all(re.fullmatch(r"\d{10}\.\d{6}", t) for t in times) and len(set(times)) == len(times),
          "JSON-lines time in microseconds, distinct per step: %s" % times)
    check(step_dirs(part)[-1] == "step_00000003", "checkpoint at step 3: %s" % step_dirs(part))
    check(sorted(losses(part)) == [0, 1, 2], "first run logged steps 0..2")
    p2 = env.run(part)
    check("[resume] from" in p2.stdout and "step 3" in p2.stdout, "second run resumes at step 3")
    lf, lp = losses(full), losses(part)
    check(sorted(lp) == list(range(6)), "together the runs logged steps 0..5")
    check(lf == lp, "resumed losses == uninterrupted losses: %s vs %s" % (lp, lf))
    check(checkpoint_dump(os.path.join(full, "checkpoints", "step_00000006")) ==
          checkpoint_dump(os.path.join(part, "checkpoints", "step_00000006")),
          "resumed final checkpoint == uninterrupted final checkpoint")


def free_port_base():
    """A base port whose pair (base, base + 1) is free now. ctest runs several e2e cases at once:
    each process starts probing at its own pid-derived offset, so two cases probing at the same
    moment do not both pick the first free pair (the second trainer then fails to bind)."""
    start = (os.getpid() * 7919) % 1000
    for k in range(1000):
        base = 19470 + 10 * ((start + k) % 1000)
        ok = True
        for p in (base, base + 1):
            s = socket.socket()
            try:
                s.bind(("127.0.0.1", p))
            except OSError:
                ok = False
            finally:
                s.close()
        if ok:
            return base
    fail("no free port pair")


def rank_pids(launcher_pid):
    """{rank: pid} of the hdtrain processes below launcher_pid (mpirun, or hdrun -> mpirun),
    from their environment."""
    parent = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % pid) as f:
                parent[int(pid)] = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            pass

    def below(pid):
        while pid in parent and pid > 1:
            pid = parent[pid]
            if pid == launcher_pid:
                return True
        return False

    out = {}
    for pid in parent:
        if not below(pid):
            continue
        try:
            with open("/proc/%d/environ" % pid, "rb") as f:
                env = dict(kv.split(b"=", 1) for kv in f.read().split(b"\0") if b"=" in kv)
            if b"OMPI_COMM_WORLD_RANK" in env and os.path.basename(
                    os.readlink("/proc/%d/exe" % pid)) == "hdtrain":
                out[int(env[b"OMPI_COMM_WORLD_RANK"])] = pid
        except (OSError, ValueError):
            pass
    return out


def start_training(c, run_dir, env=None):
    """Starts command c in the background and returns once rank 0 has logged 2 steps."""
    print("$ " + " ".join(c), flush=True)
    p = subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    log = os.path.join(run_dir, "metrics_rank0.jsonl")
    deadline = time.time() + 120
    while time.time() < deadline and p.poll() is None:
        if os.path.exists(log) and len(open(log).read().splitlines()) >= 2:
            break
        time.sleep(0.2)
    check(p.poll() is None, "run is training (2 steps logged)")
    return p


def case_signal(env):
    d = fresh(env, "sig")
    port = free_port_base()
    c = env.cmd(d, ["train.steps=400", "checkpoint.every_steps=0", "monitoring.serve=true",
                    "monitoring.port_base=%d" % port])
    p = start_training(c, d)
    # Prometheus text from both ranks while the run trains.
    for r in (0, 1):
        body = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % (port + r), timeout=10).read()
        check(b"hdtrain_steps_total" in body and (b'rank="%d"' % r) in body,
              "rank %d serves /metrics with hdtrain_steps_total" % r)
    pids = rank_pids(p.pid)
    check(sorted(pids) == [0, 1], "found both rank processes: %s" % pids)
    os.kill(pids[0], signal.SIGTERM)  # one rank only: the all-reduce makes both stop
    out, _ = p.communicate(timeout=120)
    sys.stdout.write(out[-3000:])
    check(p.returncode == 0, "mpirun exits 0 after SIGTERM (rc %d)" % p.returncode)
    dirs = step_dirs(d)
    check(len(dirs) == 1, "exactly one checkpoint (the signal's): %s" % dirs)
    step = int(dirs[0][5:])
    check(0 < step < 400, "stopped early, at step %d" % step)
    check("[stop] a stop signal" in out, "rank 0 reports the stop")
    check(max(losses(d, 0)) == max(losses(d, 1)) == step - 1, "both ranks stopped after the same step")
    p2 = env.run(d, ["train.steps=%d" % (step + 2), "eval.at_end=false"])
    check("[resume] from" in p2.stdout and ("step %d" % step) in p2.stdout,
          "a restart resumes from the signal's checkpoint")
    check(max(losses(d)) == step + 1, "and trains steps %d..%d" % (step, step + 1))


def case_signal_mpirun(env):
    d = fresh(env, "sig_mpirun")
    c = env.hdrun_cmd(d, ["train.steps=100000", "checkpoint.every_steps=0", "eval.at_end=false"])
    p = start_training(c, d, env.hdrun_env())
    sent = time.time()
    p.send_signal(signal.SIGTERM)
    out, _ = p.communicate(timeout=120)
    delay = time.time() - sent
    sys.stdout.write(out[-3000:])
    print("SIGTERM to the launcher -> checkpoint written and job exited: %.2f s" % delay)
    check(p.returncode == 0, "the job exits 0 after SIGTERM (rc %d)" % p.returncode)
    dirs = step_dirs(d)
    check(len(dirs) == 1, "exactly one checkpoint (the signal's): %s" % dirs)
    step = int(dirs[0][5:])
    check("[stop] a stop signal reached a rank: checkpoint at step %d" % step in out,
          "rank 0 reports the stop and its checkpoint")
    check(max(losses(d, 0)) == max(losses(d, 1)) == step - 1, "both ranks stopped after the same step")
    # A micro step and its checkpoint take well under a second; mpirun's own SIGTERM path would
    # not even signal the ranks before odls_base_sigkill_timeout (1 s default: SIGKILL follows at
    # once, no checkpoint; demo.sh used 30 s). 15 s leaves room for a loaded machine.
    check(delay < 15, "stopped %.2f s after SIGTERM (< 15 s)" % delay)


def listening(pid):
    """[(address, port)] of the TCP sockets process pid listens on (IPv4 and IPv6)."""
    inodes = set()
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            link = os.readlink("/proc/%d/fd/%s" % (pid, fd))
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    out = []
    for table in ("tcp", "tcp6"):
        with open("/proc/%d/net/%s" % (pid, table)) as f:
            for line in f.read().splitlines()[1:]:
                cols = line.split()
                if cols[3] != "0A" or cols[9] not in inodes:  # 0A: LISTEN
                    continue
                addr, port = cols[1].split(":")
                if table == "tcp":
                    ip = ".".join(str(int(addr[i:i + 2], 16)) for i in (6, 4, 2, 0))
                else:
                    ip = "::1" if addr == "0" * 24 + "01000000" else (
                        "::" if addr == "0" * 32 else addr)
                out.append((ip, int(port, 16)))
    return out


def mpirun_pids():
    """Pids of the running orterun processes; processes of other tests come and go meanwhile
    (ctest -j), so one that vanishes between listing and reading is skipped."""
    out = []
    for x in os.listdir("/proc"):
        if not x.isdigit():
            continue
        try:
            if os.path.basename(os.readlink("/proc/%s/exe" % x)).startswith("orterun"):
                out.append(int(x))
        except OSError:
            continue
    return out


def case_listen(env):
    d = fresh(env, "listen")
    port = free_port_base()
    c = [HDRUN, "--local"] + env.cmd(d, ["train.steps=100000", "checkpoint.every_steps=0",
                                          "eval.at_end=false", "monitoring.serve=true",
                                          "monitoring.port_base=%d" % port])[1:]
    p = start_training(c, d, env.hdrun_env())
    try:
        pids = rank_pids(p.pid)
        check(sorted(pids) == [0, 1], "found both rank processes: %s" % pids)
        for rank, pid in sorted(pids.items()):
            socks = listening(pid)
            print("rank %d listens on %s" % (rank, socks))
            check((("127.0.0.1", port + rank)) in socks, "rank %d serves /metrics on 127.0.0.1" % rank)
            exposed = [s for s in socks if s[0] not in ("127.0.0.1", "::1")]
            check(not exposed, "rank %d listens on no other address (%s)" % (rank, exposed))
        for pid in mpirun_pids():
            try:
                print("mpirun (pid %d) listens on %s (OpenMPI 4.1: one wildcard out-of-band "
                      "listener is not configurable)" % (pid, listening(pid)))
            except OSError:
                pass  # another test's mpirun that exited meanwhile
    finally:
        p.send_signal(signal.SIGTERM)
        p.communicate(timeout=120)
    check(p.returncode == 0, "and stops cleanly on SIGTERM (rc %d)" % p.returncode)


def timed_run(env, c):
    print("$ " + " ".join(c), flush=True)
    t = time.time()
    p = subprocess.run(c, capture_output=True, text=True, timeout=240, env=env.hdrun_env())
    return p, time.time() - t


def case_abnormal_exit(env):
    d = fresh(env, "abnormal")
    p, secs = timed_run(env, env.hdrun_cmd(d, ["train.stpes=3"]))
    print("bad config under hdrun: exit %d after %.2f s" % (p.returncode, secs))
    check(p.returncode == 2, "a bad config exits 2 under hdrun (rc %d)" % p.returncode)
    check("unknown field 'stpes'" in p.stderr, "and names the field")
    check(secs < 10, "within seconds (%.2f s < 10 s)" % secs)
    # Rank 1's /metrics port is taken: rank 1 cannot start, rank 0 would wait in a collective.
    port = free_port_base()
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", port + 1))
    blocker.listen(1)
    try:
        p, secs = timed_run(env, env.hdrun_cmd(d, ["monitoring.serve=true",
                                                   "monitoring.port_base=%d" % port]))
    finally:
        blocker.close()
    print("rank 1 cannot start under hdrun: exit %d after %.2f s" % (p.returncode, secs))
    sys.stdout.write((p.stdout + p.stderr)[-2000:])
    check(p.returncode != 0, "a rank that cannot start fails the job (rc %d)" % p.returncode)
    check(str(port + 1) in p.stdout + p.stderr, "the message names the taken port %d" % (port + 1))
    check(secs < 20, "within seconds (%.2f s < 20 s)" % secs)
    # A dead peer: rank 1 killed mid-run; rank 0 must not wait for the watchdog.
    d = fresh(env, "dead_peer")
    p = start_training(env.hdrun_cmd(d, ["train.steps=100000", "checkpoint.every_steps=0",
                                         "eval.at_end=false"]), d, env.hdrun_env())
    pids = rank_pids(p.pid)
    check(sorted(pids) == [0, 1], "found both rank processes: %s" % pids)
    t = time.time()
    os.kill(pids[1], signal.SIGKILL)
    out, _ = p.communicate(timeout=120)
    secs = time.time() - t
    print("rank 1 killed (-9) under hdrun: exit %d after %.2f s" % (p.returncode, secs))
    check(p.returncode != 0, "a dead rank fails the job (rc %d)" % p.returncode)
    check(secs < 20, "within seconds (%.2f s < 20 s)" % secs)


def case_nonfinite(env):
    d = fresh(env, "nf")
    p = env.run(d, ["train.debug_nonfinite_steps=2", "eval.at_end=false"])
    l0 = losses(d)
    check(sorted(l0) == list(range(6)), "all 6 steps ran")
    check(l0[2] is None, "step 2 (poisoned) logged as non-finite (null)")
    check(all(l0[s] is not None for s in (0, 1, 3, 4, 5)), "the other steps are finite")
    check(losses(d, 1)[2] is None, "rank 1 (not poisoned) skipped step 2 too")
    check("1 step(s) skipped for a non-finite loss" in p.stdout, "the skip is counted")
    check(step_dirs(d)[-1] == "step_00000006", "training finished with its final checkpoint")


def case_nonfinite_limit(env):
    d = fresh(env, "nfl")
    p = env.run(d, ["train.debug_nonfinite_steps=[1,2]", "train.max_nonfinite_in_a_row=2"],
                expect_rc=1)
    check("non-finite loss in 2 steps in a row (train.max_nonfinite_in_a_row = 2), last at step 2"
          in p.stderr, "clear error after 2 non-finite steps in a row")
    check(sorted(losses(d)) == [0, 1, 2], "stopped after step 2")


def case_recompute(env):
    """train.activation_checkpointing end to end: the same losses as the plain run."""
    plain, recomputed = fresh(env, "rec_plain"), fresh(env, "rec_on")
    env.run(plain)
    p = env.run(recomputed, ["train.activation_checkpointing=vision,text"])
    lp, lr = losses(plain), losses(recomputed)
    check(sorted(lr) == list(range(6)) and all(v is not None for v in lr.values()),
          "the recomputed run logged 6 finite losses: %s" % lr)
    # Equal to rounding: a block run several times per step (low-res pass, look-close steps)
    # sums its gradients in another order when each run is recomputed on its own.
    check(all(close(lp[k], lr[k], 1e-4) for k in lp), "same losses as the plain run: %s vs %s" %
          (lp, lr))
    with open(os.path.join(recomputed, "config.textproto")) as f:
        check('activation_checkpointing: "vision,text"' in f.read(),
              "the resolved config records the switch")


def case_precision(env):
    """train.precision=bf16 end to end: bf16 towers, f32 losses and masters; tracks fp32."""
    plain, a, b = fresh(env, "prec_fp32"), fresh(env, "prec_bf16_a"), fresh(env, "prec_bf16_b")
    env.run(plain)
    env.run(a, ["train.precision=bf16"])
    env.run(b, ["train.precision=bf16"])
    lp, la, lb = losses(plain), losses(a), losses(b)
    check(sorted(la) == list(range(6)) and all(v is not None and v == v for v in la.values()),
          "the bf16 run logged 6 finite losses: %s" % la)
    check(la == lb, "bf16: same seed -> identical losses")
    check(la != lp, "bf16 really ran (its losses are not fp32's)")
    worst = max(abs(la[k] - lp[k]) / lp[k] for k in lp)
    check(worst < 0.05, "bf16 losses within 5%% of fp32's at every step (worst %.4f): %s vs %s" %
          (worst, la, lp))
    check(la[5] < 0.5 * la[0], "bf16 training lowers the loss: %s" % la)


def case_device(env):
    """Issue 18 without a GPU: the model on the second host device cpu:1 (autograd/device.h),
    batches made on the host. Every tensor the trainer, model, losses, FSDP, checkpoints or the
    evaluation put on the wrong device is an error there; the run must equal the host run bit
    for bit, and a host checkpoint resumes on it (device shards staged through the host)."""
    host, dev, moved = fresh(env, "dev_host"), fresh(env, "dev_cpu1"), fresh(env, "dev_moved")
    ph = env.run(host)
    pd = env.run(dev, ["model.device=cpu:1"])
    check("model.device = 'cpu:1': the second host device" in pd.stderr,
          "the device choice is reported: %s" % pd.stderr.strip()[-300:])
    lh, ld = losses(host), losses(dev)
    check(sorted(ld) == list(range(6)) and ld == lh,
          "cpu:1 losses == host losses: %s vs %s" % (ld, lh))
    check(checkpoint_dump(os.path.join(host, "checkpoints", "step_00000006")) ==
          checkpoint_dump(os.path.join(dev, "checkpoints", "step_00000006")),
          "the cpu:1 run's final checkpoint (staged through the host) == the host run's")
    check(close(json.load(open(os.path.join(dev, "eval.json"))),
                json.load(open(os.path.join(host, "eval.json")))),
          "the end-of-run evaluation of the cpu:1 run == the host run's")
    env.run(moved, ["train.stop_at_step=3"])
    p = env.run(moved, ["model.device=cpu:1"])
    check("[resume] from" in p.stdout and losses(moved) == lh,
          "a host checkpoint resumed on cpu:1 continues as the uninterrupted run: %s" %
          losses(moved))


def case_bad_config(env):
    d = fresh(env, "bad")
    p = env.run(d, ["train.stpes=3"], expect_rc=2)
    check("--set train.stpes=3: unknown field 'stpes' in train (did you mean 'steps'?)" in p.stderr,
          "override typo named")
    check(not os.path.exists(d), "nothing written for a bad config")
    bad = os.path.join(env.work, "bad.textproto")
    with open(MICRO) as f:
        text = f.read().replace("  lr: 1e-3\n", "  lr: 1e-3\n  stpes: 20\n")
    with open(bad, "w") as f:
        f.write(text)
    line = text.splitlines().index("  stpes: 20") + 1
    p = env.run(d, [], config=bad, expect_rc=2)
    check("%s:%d:3: unknown field 'stpes' in train" % (bad, line) in p.stderr,
          "file typo named with file:line:col")
    p = env.run(d, ["train.activation_checkpointing=vision,txt"], expect_rc=2)
    check("train.activation_checkpointing = 'vision,txt': 'txt' is not one of vision, text, llm"
          in p.stderr, "unknown tower named: %s" % p.stderr.strip()[-300:])
    p = env.run(d, ["train.precision=fp16"], expect_rc=2)
    check("train.precision = 'fp16' is not one of fp32, bf16" in p.stderr,
          "unknown precision named: %s" % p.stderr.strip()[-300:])
    p = env.run(d, ["model.device=gpu"], expect_rc=2)
    check("model.device = 'gpu' is not one of cpu, cuda, auto" in p.stderr,
          "unknown device named: %s" % p.stderr.strip()[-300:])
    # Issue 18: on this machine (no GPU, or the host-only trainer) cuda is refused before MPI
    # starts, by every rank, naming the setting; auto trains on the CPU.
    p = env.run(d, ["model.device=cuda"], expect_rc=2)
    check("error (rank 1): model.device = 'cuda'" in p.stderr and
          "set model.device: cpu or auto" in p.stderr,
          "cuda without a usable GPU named: %s" % p.stderr.strip()[-400:])
    check(not os.path.exists(d), "nothing written for a device that cannot be used")
    p = env.run(d, ["train.global_batch=3"], expect_rc=2)
    check("train.global_batch = 3 is not divisible by world size 2" in p.stderr,
          "wrong world size named")
    p = env.run(d, ["data.dir=" + os.path.join(env.work, "no_such_data")], expect_rc=1)
    check("data.train_dir '%s/no_such_data/train' does not exist" % env.work in p.stdout + p.stderr,
          "missing dataset named")
    p = env.run(d, ["checkpoint.init_from=" + os.path.join(env.work, "nowhere")], expect_rc=1)
    check("checkpoint.init_from" in p.stdout + p.stderr, "missing init_from named")


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
