#!/usr/bin/env python3
"""End-to-end: a real Prometheus server scrapes a 2-rank toy training run.

1. Starts Prometheus on 127.0.0.1 (1 s scrape and evaluation interval, temporary TSDB, the
   shipped alerts.yml rendered with a 5 s stall threshold, file_sd discovery) and the toy trainer
   under `mpirun -np 2`, whose rank 0 writes the file_sd target list as the launcher does.
2. Queries Prometheus' HTTP API for every expression of the Grafana dashboard ($run -> .*,
   $__rate_interval -> 10s) and every alert rule (the comparison made `bool`, so a healthy run
   still returns series), and requires each to return data.
3. Pauses rank 1 and requires HdtrainStalled to fire for rank 1 only.
Both processes are stopped by the PIDs we started (no shell in between). Skips (exit 77) only when
the `prometheus` binary is missing. Every wait is bounded; the whole test takes about 30 s.
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
import tempfile
import time
import urllib.parse
import urllib.request

SKIP = 77


def free_port_block(n):
    """n consecutive free loopback ports (probed, then released; fine on a test machine)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        if base + n > 65535:
            continue
        socks = []
        try:
            for i in range(n):
                t = socket.socket()
                socks.append(t)
                t.bind(("127.0.0.1", base + i))
            return base
        except OSError:
            continue
        finally:
            for t in socks:
                t.close()
    raise RuntimeError("no free port block")


class Prom:
    def __init__(self, port):
        self.base = f"http://127.0.0.1:{port}"

    def get(self, path, **params):
        url = self.base + path + ("?" + urllib.parse.urlencode(params) if params else "")
        with urllib.request.urlopen(url, timeout=5) as r:
            return json.loads(r.read())

    def query(self, expr):
        return self.get("/api/v1/query", query=expr)["data"]["result"]


def wait_for(what, fn, timeout, interval=0.5):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = fn()
            if last:
                return last
        except Exception as e:  # not up yet
            last = e
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def dashboard_exprs(path):
    dash = json.load(open(path))
    out = []
    for p in dash["panels"]:
        for t in p.get("targets", []):
            e = t["expr"].replace("$__rate_interval", "10s").replace("$run", ".*")
            out.append((f"panel '{p['title']}'", e))
    return out


def alert_exprs(path):
    """(name, expr with its top-level comparison made `bool`) for each rule in alerts.yml."""
    out, name = [], None
    for line in open(path):
        m = re.match(r"\s*- alert: (\S+)", line)
        if m:
            name = m.group(1)
        m = re.match(r"\s*expr: (.*?)(\s+#.*)?$", line)
        if m:
            expr = m.group(1)
            b, n = re.subn(r"(==|!=|>=|<=|>|<)\s*(-?[0-9.e]+)\s*$", r"\1 bool \2", expr)
            assert n == 1, f"alert {name}: expression is not '<expr> <op> <number>': {expr}"
            out.append((f"alert {name}", b))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--trainer", required=True)
    ap.add_argument("--monitoring-dir", required=True)
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    a = ap.parse_args()
    prometheus = shutil.which("prometheus")
    if not prometheus:
        print("SKIP: the `prometheus` binary is not installed (apt-get install prometheus)")
        return SKIP
    mpirun = shutil.which("mpirun")
    assert mpirun, "mpirun not found"
    mon = a.monitoring_dir
    sys.path.insert(0, os.path.join(mon, "prometheus"))
    import render_rules

    tmp = tempfile.mkdtemp(prefix="hd_prom_")
    procs = []
    ok = False
    try:
        os.makedirs(f"{tmp}/targets")
        rules = render_rules.render(open(f"{mon}/prometheus/alerts.yml").read(), 5, "0s")
        open(f"{tmp}/alerts.yml", "w").write(rules)
        prom_port = free_port_block(1)
        rank_port_base = free_port_block(2)
        open(f"{tmp}/prometheus.yml", "w").write(f"""
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files: [{tmp}/alerts.yml]
scrape_configs:
  - job_name: hdtrain
    honor_labels: true
    file_sd_configs:
      - files: ['{tmp}/targets/*.json']
        refresh_interval: 1s
""")
        t0 = time.monotonic()
        plog = open(f"{tmp}/prometheus.log", "w")
        prom = subprocess.Popen([prometheus, f"--config.file={tmp}/prometheus.yml",
                                 f"--storage.tsdb.path={tmp}/data",
                                 f"--web.listen-address=127.0.0.1:{prom_port}"],
                                stdout=plog, stderr=subprocess.STDOUT)
        procs.append(("prometheus", prom))
        tlog = open(f"{tmp}/trainer.log", "w")
        trainer = subprocess.Popen(
            [mpirun, "--allow-run-as-root", "--oversubscribe", "-np", "2", a.trainer,
             "--run", "itest", "--port-base", str(rank_port_base), "--control-dir", tmp,
             "--sd-file", f"{tmp}/targets/itest.json", "--seconds", "80", "--steps", "100000"],
            stdout=tlog, stderr=subprocess.STDOUT, start_new_session=True)
        procs.append(("mpirun", trainer))
        p = Prom(prom_port)
        wait_for("Prometheus ready", lambda: p.get("/api/v1/status/buildinfo")["status"] == "success", 15)

        def both_ranks():
            r = p.query('hdtrain_steps_total{run="itest"} > 0')
            return len(r) == 2 and r
        wait_for("samples from both ranks", both_ranks, 40)
        print(f"both ranks scraped {time.monotonic() - t0:.1f} s after start")
        # rate()/increase() over 10 s need at least two samples per series after the first step.
        time.sleep(4)

        checks = dashboard_exprs(f"{mon}/grafana/hdtrain.json") + alert_exprs(f"{mon}/prometheus/alerts.yml")
        pending = list(checks)
        deadline = time.monotonic() + 15
        while pending and time.monotonic() < deadline:
            pending = [(w, e) for (w, e) in pending if not p.query(e)]
            if pending:
                time.sleep(1)
        for w, e in checks:
            print(("NO DATA " if (w, e) in pending else "ok      ") + f"{w}: {e}")
        assert not pending, f"{len(pending)} of {len(checks)} expressions returned no data"
        print(f"all {len(checks)} dashboard and alert expressions return data")
        firing = [x for x in p.get("/api/v1/alerts")["data"]["alerts"] if x["state"] == "firing"]
        assert not any(x["labels"]["alertname"] == "HdtrainStalled" for x in firing), firing

        # Idle-connection abuse (issue 19, item 10): 200 connections to rank 0's /metrics that
        # send nothing, held for 6 s; every Prometheus scrape meanwhile must still succeed.
        idle = []
        for _ in range(200):
            s_ = socket.create_connection(("127.0.0.1", rank_port_base), timeout=5)
            idle.append(s_)
        time.sleep(6)
        worst = p.query('min_over_time(up{job="hdtrain"}[5s])')
        for s_ in idle:
            s_.close()
        assert len(worst) == 2 and all(float(v["value"][1]) == 1.0 for v in worst), worst
        print("200 idle connections on rank 0 for 6 s: every scrape of both ranks succeeded")

        # Pause rank 1: it keeps serving /metrics but completes no step.
        open(f"{tmp}/pause_rank1", "w").close()
        t_pause = time.monotonic()

        def stalled():
            alerts = p.get("/api/v1/alerts")["data"]["alerts"]
            return [x for x in alerts if x["labels"]["alertname"] == "HdtrainStalled"
                    and x["state"] == "firing"]
        fired = wait_for("HdtrainStalled to fire", stalled, 30)
        ranks = sorted(x["labels"]["rank"] for x in fired)
        print(f"HdtrainStalled fired {time.monotonic() - t_pause:.1f} s after pausing rank 1: ranks {ranks}")
        assert ranks == ["1"], f"expected only rank 1 stalled, got {fired}"
        os.remove(f"{tmp}/pause_rank1")

        open(f"{tmp}/stop", "w").close()
        rc = trainer.wait(timeout=30)
        assert rc == 0, f"toy trainer exited with {rc}"
        ok = True
        return 0
    finally:
        for name, proc in reversed(procs):
            if proc.poll() is None:
                # Our own children, by PID (mpirun by its process group, which holds its ranks).
                if name == "mpirun":
                    os.killpg(proc.pid, signal.SIGTERM)
                else:
                    proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)
        if not ok:
            for log in ("trainer.log", "prometheus.log"):
                path = os.path.join(tmp, log)
                if os.path.exists(path):
                    print(f"----- {log} (last 40 lines)")
                    print("".join(open(path).readlines()[-40:]))
        if a.keep or not ok:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
