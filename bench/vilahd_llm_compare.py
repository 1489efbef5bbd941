#!/usr/bin/env python3
"""Side-by-side Qwen2 LLM: HF transformers' Qwen2ForCausalLM vs hdtrain (bench/vilahd_llm.cpp).

Same config (the presets of vilahd/qwen2_config.cpp), fp32, 2 threads each, random weights and
the same token pattern: forward+backward of the LM loss on [B, T], and greedy generation with the
KV cache (prompt P, G new tokens; HF through past_key_values, the loop written out because
generate() imports torch.distributed, which Debian's torch 1.13 cannot on Python 3.11). Rounds
alternate the two processes so both see the same machine conditions; medians are printed with
the ratio hdtrain time / PyTorch time (the issue's target: <= 0.8).

Needs transformers (4.46.3) next to Debian's torch, e.g. the fixture venv:
  /tmp/hfvenv/bin/python bench/vilahd_llm_compare.py --hd build/bench/hd_bench_vilahd_llm \
      --config tiny [--rounds 3]
"""
import argparse
import os
import re
import statistics
import subprocess
import sys

PRESETS = {
    "tiny": dict(vocab_size=512, hidden_size=64, intermediate_size=176, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True),
    "small": dict(vocab_size=32000, hidden_size=512, intermediate_size=2816, num_hidden_layers=8,
                  num_attention_heads=8, num_key_value_heads=2, tie_word_embeddings=True),
}

TORCH_CHILD = r'''
import json, sys, time, torch
from transformers import Qwen2Config, Qwen2ForCausalLM
spec = json.loads(sys.argv[1]); B, T, P, G, steps, warmup, gens = map(int, sys.argv[2:9])
torch.set_num_threads(2)
torch.manual_seed(0)
cfg = Qwen2Config(**spec, rope_theta=1e6, max_position_embeddings=8192, attn_implementation="eager")
model = Qwen2ForCausalLM(cfg).float()
V = cfg.vocab_size
ids = torch.tensor([(i * 7919 + 13) % V for i in range(B * T)]).reshape(B, T)
for s in range(warmup + steps):
    model.zero_grad(set_to_none=True)
    t0 = time.perf_counter()
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    t = (time.perf_counter() - t0) * 1e3
    if s >= warmup:
        print(f"fwd_bwd_ms={t:.1f} loss={loss.item():.4f}", flush=True)
prompt = ids.reshape(-1)[:P].reshape(1, P)
with torch.no_grad():
    for g in range(gens + 1):
        t0 = time.perf_counter()
        out = model(input_ids=prompt, use_cache=True)
        pkv, nxt, n = out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True), 1
        while n < G:
            out = model(input_ids=nxt, past_key_values=pkv, use_cache=True)
            pkv, nxt, n = out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True), n + 1
        t = (time.perf_counter() - t0) * 1e3
        if g > 0:
            print(f"gen_ms={t:.1f} tokens={n}", flush=True)
'''


def values(text, key):
    return [float(v) for v in re.findall(key + r"=([\d.]+)", text)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--hd", required=True)
    ap.add_argument("--config", default="tiny", choices=sorted(PRESETS))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--prompt", type=int, default=64)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--gens", type=int, default=2)
    a = ap.parse_args()
    import json
    spec = json.dumps(PRESETS[a.config])
    env = dict(os.environ, HD_NUM_THREADS="2", OMP_NUM_THREADS="2")
    t_step, t_gen, h_step, h_gen = [], [], [], []
    for r in range(a.rounds):
        t = subprocess.run([sys.executable, "-c", TORCH_CHILD, spec] +
                           [str(v) for v in (a.batch, a.seq, a.prompt, a.new_tokens, a.steps, a.warmup, a.gens)],
                           capture_output=True, text=True, env=env)
        if t.returncode != 0:
            sys.exit("torch child failed:\n" + t.stderr[-2000:])
        h = subprocess.run([a.hd, f"--config={a.config}", f"--batch={a.batch}", f"--seq={a.seq}",
                            f"--prompt={a.prompt}", f"--new-tokens={a.new_tokens}", f"--steps={a.steps}",
                            f"--warmup={a.warmup}", f"--gens={a.gens}"], capture_output=True, text=True, env=env)
        if h.returncode != 0:
            sys.exit("hdtrain failed:\n" + h.stderr[-2000:])
        t_step += values(t.stdout, "fwd_bwd_ms"); t_gen += values(t.stdout, "gen_ms")
        h_step += values(h.stdout, "fwd_bwd_ms"); h_gen += values(h.stdout, "gen_ms")
        print(f"round {r + 1}/{a.rounds}: fwd+bwd torch {statistics.median(values(t.stdout, 'fwd_bwd_ms')):.0f} ms, "
              f"hdtrain {statistics.median(values(h.stdout, 'fwd_bwd_ms')):.0f} ms; generation torch "
              f"{statistics.median(values(t.stdout, 'gen_ms')):.0f} ms, hdtrain "
              f"{statistics.median(values(h.stdout, 'gen_ms')):.0f} ms", flush=True)
    tokens = a.batch * a.seq
    ms, mg, hs, hg = map(statistics.median, (t_step, t_gen, h_step, h_gen))
    print(f"config {a.config}, B={a.batch} T={a.seq}, 2 threads, fp32, medians over {len(t_step)} steps:")
    print(f"  forward+backward: PyTorch {ms:.0f} ms ({tokens / ms * 1e3:.0f} tok/s), hdtrain {hs:.0f} ms "
          f"({tokens / hs * 1e3:.0f} tok/s), time ratio hdtrain/PyTorch {hs / ms:.2f}")
    print(f"  generation ({a.prompt} prompt + {a.new_tokens} new, KV cache): PyTorch {mg:.0f} ms "
          f"({a.new_tokens / mg * 1e3:.1f} tok/s), hdtrain {hg:.0f} ms ({a.new_tokens / hg * 1e3:.1f} tok/s), "
          f"time ratio {hg / mg:.2f}")


if __name__ == "__main__":
    main()
