#!/usr/bin/env python3
"""Side-by-side ViT training step: PyTorch (Debian's python3-torch) vs hdtrain, alternated.

The model is the one in shared/reference/build-and-baseline-notes.md §4(d): width 192, depth 6,
3 heads, patch 14, 729 tokens (378x378), batch 8, fp32, AdamW, cross-entropy over 1000 classes.
Each round runs the PyTorch step in a child process, then hdtrain's (bench/vit_step.cpp), so both
see the same machine conditions; the script prints both medians, the ratio, and each side's peak
resident memory (the whole process: VmHWM for hdtrain, ru_maxrss for PyTorch).

--image S sets the image side (714: 51 x 51 = 2601 tokens, the long-sequence case);
--checkpoint recomputes every block in backward on both sides (hdtrain: autograd/checkpoint.h;
PyTorch: torch.utils.checkpoint), --hd-checkpoint on hdtrain's side only (against PyTorch's
default eager step). --precision bf16 runs PyTorch under torch.autocast("cpu", bfloat16) (its best
CPU mode where the CPU has bf16 arithmetic) and hdtrain with bf16 weights and activations over
fp32 masters (hd_bench_vit_step --precision=bf16).

Usage: /usr/bin/python3 bench/vit_step_compare.py --hd build/bench/hd_bench_vit_step [--rounds 5]
           [--image 714] [--checkpoint | --hd-checkpoint] [--precision fp32|bf16]
"""
import argparse
import os
import statistics
import subprocess
import sys
import time

TORCH_CHILD = r'''
import resource, sys, time, torch, torch.utils.checkpoint
threads = int(sys.argv[1]); steps = int(sys.argv[2]); warmup = int(sys.argv[3])
S = int(sys.argv[4]); recompute = sys.argv[5] == "1"; bf16 = sys.argv[6] == "bf16"
torch.set_num_threads(threads)
torch.manual_seed(0)
D, depth, H, P, B, C = 192, 6, 3, 14, 8, 1000
N = (S // P) ** 2

class Block(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.norm1 = torch.nn.LayerNorm(D, eps=1e-6)
        self.qkv = torch.nn.Linear(D, 3 * D)
        self.proj = torch.nn.Linear(D, D)
        self.norm2 = torch.nn.LayerNorm(D, eps=1e-6)
        self.fc1 = torch.nn.Linear(D, 4 * D)
        self.fc2 = torch.nn.Linear(4 * D, D)
    def forward(self, x):
        b, n, _ = x.shape
        q, k, v = self.qkv(self.norm1(x)).reshape(b, n, 3, H, D // H).permute(2, 0, 3, 1, 4)
        a = ((q @ k.transpose(-2, -1)) * (D // H) ** -0.5).softmax(-1) @ v
        x = x + self.proj(a.transpose(1, 2).reshape(b, n, D))
        return x + self.fc2(torch.nn.functional.gelu(self.fc1(self.norm2(x))))

class ViT(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.patch = torch.nn.Conv2d(3, D, P, P)
        self.pos = torch.nn.Parameter(torch.randn(1, N, D) * 0.02)
        self.blocks = torch.nn.ModuleList([Block() for _ in range(depth)])
        self.norm = torch.nn.LayerNorm(D, eps=1e-6)
        self.head = torch.nn.Linear(D, C)
    def forward(self, x):
        x = self.patch(x).flatten(2).transpose(1, 2) + self.pos
        for blk in self.blocks:
            x = torch.utils.checkpoint.checkpoint(blk, x) if recompute else blk(x)
        return self.head(self.norm(x).mean(1))

model = ViT()
opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
x = torch.randn(B, 3, S, S)
y = torch.arange(B) * 37 % C
for s in range(warmup + steps):
    t0 = time.perf_counter()
    opt.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        logits = model(x)
    loss = torch.nn.functional.cross_entropy(logits.float(), y)
    loss.backward()
    opt.step()
    t = (time.perf_counter() - t0) * 1e3
    if s >= warmup:
        print(f"step_ms={t:.1f}", flush=True)
print(f"peak_rss_mib={resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f}", flush=True)
'''


def parse_steps(text):
    return [float(line.split()[0].split("=")[1]) for line in text.splitlines() if line.startswith("step_ms=")]


def parse_peak_rss(text):
    for word in text.split():
        if word.startswith("peak_rss_mib="):
            return float(word.split("=")[1])
    sys.exit(f"vit_step_compare: no peak_rss_mib in the child's output:\n{text}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hd", required=True, help="path to hd_bench_vit_step")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=3, help="timed steps per round and side")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--image", type=int, default=378, help="image side (a multiple of 14)")
    ap.add_argument("--checkpoint", action="store_true", help="activation checkpointing, both sides")
    ap.add_argument("--hd-checkpoint", action="store_true", help="activation checkpointing, hdtrain only")
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                    help="bf16: PyTorch autocast, hdtrain bf16 over fp32 masters")
    args = ap.parse_args()
    if args.image % 14:
        sys.exit(f"vit_step_compare: --image {args.image} is not a multiple of the patch (14)")
    if not os.access(args.hd, os.X_OK):
        sys.exit(f"vit_step_compare: {args.hd} is not an executable (build with cmake first)")
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), OPENBLAS_NUM_THREADS=str(args.threads),
               MKL_NUM_THREADS=str(args.threads), HD_NUM_THREADS=str(args.threads))
    torch_ms, hd_ms, torch_rss, hd_rss = [], [], [], []
    hd_args = [f"--steps={args.steps}", f"--warmup={args.warmup}", f"--image={args.image}",
               f"--precision={args.precision}"]
    if args.checkpoint or args.hd_checkpoint:
        hd_args.append("--checkpoint")
    for r in range(args.rounds):
        t = subprocess.run(["/usr/bin/python3", "-c", TORCH_CHILD, str(args.threads), str(args.steps),
                            str(args.warmup), str(args.image), "1" if args.checkpoint else "0",
                            args.precision],
                           env=env, capture_output=True, text=True)
        if t.returncode != 0:
            sys.exit(f"vit_step_compare: PyTorch child failed:\n{t.stderr}")
        h = subprocess.run([args.hd] + hd_args, env=env, capture_output=True, text=True)
        if h.returncode != 0:
            sys.exit(f"vit_step_compare: hdtrain child failed:\n{h.stderr}")
        torch_ms += parse_steps(t.stdout)
        hd_ms += parse_steps(h.stdout)
        torch_rss.append(parse_peak_rss(t.stdout))
        hd_rss.append(parse_peak_rss(h.stdout))
        print(f"round {r + 1}/{args.rounds}: torch {statistics.median(parse_steps(t.stdout)):.0f} ms, "
              f"hdtrain {statistics.median(parse_steps(h.stdout)):.0f} ms", flush=True)
    mt, mh = statistics.median(torch_ms), statistics.median(hd_ms)
    print(f"PyTorch median step: {mt:.0f} ms ({len(torch_ms)} steps)")
    print(f"hdtrain median step: {mh:.0f} ms ({len(hd_ms)} steps)")
    tokens = (args.image // 14) ** 2
    print(f"setup: {tokens} tokens, batch 8, {args.threads} threads, {args.precision}, "
          f"activation checkpointing: "
          f"PyTorch {'on' if args.checkpoint else 'off'}, hdtrain "
          f"{'on' if args.checkpoint or args.hd_checkpoint else 'off'}")
    print(f"ratio hdtrain/PyTorch: {mh / mt:.2f} (issue 15 targets: fp32 <= 0.50, bf16 <= 0.80)")
    rt, rh = statistics.median(torch_rss), statistics.median(hd_rss)
    print(f"peak RSS median: PyTorch {rt:.0f} MiB, hdtrain {rh:.0f} MiB, ratio {rh / rt:.2f}")


if __name__ == "__main__":
    main()
