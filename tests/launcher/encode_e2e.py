#!/usr/bin/env python3
"""End-to-end tests of `hdtrain ps3 encode`, the HF (safetensors) round trip and `hdtrain info`.

Everything is real: a micro `mpirun -np 2 hdtrain pretrain` run on the shared synthetic data
(pretrain_e2e.py's `data` fixture), `hdtrain ps3 encode` processes writing HDF5 files read back
with h5dump (raw little-endian bytes via `h5dump -b LE`, parsed with the standard library),
`hdtrain ckpt export/import` files. Cases:

  info      `hdtrain info` exits 0 and prints the version and the CUDA line
  train     the micro run (2 steps, 2 ranks) the other cases encode from (a CTest fixture)
  encode    shapes, ascending in-range positions, probabilities in (0,1), selection maps that
            are exactly the high-res positions (sum = M), byte-identical re-encoding, more
            look-close steps, a prompt (posterior maps exist and differ from the prior, the prior
            does not change), --selection-png with the GT box from the record or --box, and
            clear errors (missing/corrupt image, missing checkpoint,
            config that does not match the checkpoint, bad config)
  reference checkpoints written by the reference package itself (ps3-torch save_pretrained,
            tests/fixtures/ref_ps3/) with a config that has only a model section
            (ref_tiny.textproto: no run_dir, data or train): the full model (no
            logit_scale/logit_bias: a note, init values) as a file, as its HF folder and imported
            into a step folder, equal to the reference's own forward (low-res pooled feature and
            selection probabilities to float rounding; the selected cells hold the same
            probabilities, ties broken by index); with --prompt (its text tower); the vision-only
            file without --prompt, and with --prompt an error naming the missing text tower
  hf        `ckpt export` -> .safetensors -> `ckpt import`: encoding from the .safetensors and
            from the imported folder gives the same datasets as from the original checkpoint; a
            shape mismatch against the .safetensors names the tensor; `pretrain` with
            checkpoint.init_from = the imported folder starts from exactly those weights
"""
import argparse
import array
import filecmp
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
MICRO = os.path.join(HERE, "micro.textproto")
REF_TINY = os.path.join(HERE, "ref_tiny.textproto")
REF_DIR = os.path.join(HERE, "..", "fixtures", "ref_ps3")
# micro.textproto's model: width 32, low_res 112 (8 x 8 tokens), scales 224/448, k = 24.
W, LOW_TOKENS, SCALES, K = 32, 64, (224, 448), 24
GRIDS = tuple(s // 14 for s in SCALES)


def fail(msg):
    print("FAIL: " + msg)
    sys.exit(1)


def check(cond, msg):
    if not cond:
        fail(msg)
    print("ok: " + msg)


def run(cmd, expect_rc=0, env=None):
    print("$ " + " ".join(cmd), flush=True)
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    sys.stdout.write(p.stdout[-2000:])
    sys.stdout.write(p.stderr[-2000:])
    if expect_rc is not None and p.returncode != expect_rc:
        fail("exit code %d (expected %d) for %s" % (p.returncode, expect_rc, " ".join(cmd)))
    return p


# ---- HDF5 through h5dump ------------------------------------------------------------------------
def h5_names(path):
    out = subprocess.run(["h5dump", "-n", path], capture_output=True, text=True, check=True).stdout
    return sorted(m.group(1) for m in re.finditer(r"^\s*dataset\s+(\S+)$", out, re.M))


def h5_dataset(path, name):
    """(shape, raw little-endian bytes, values) of one dataset (f32 or i64)."""
    with tempfile.NamedTemporaryFile(suffix=".bin") as tmp:
        hdr = subprocess.run(["h5dump", "-d", name, "-b", "LE", "-o", tmp.name, path],
                             capture_output=True, text=True, check=True).stdout
        raw = open(tmp.name, "rb").read()
    m = re.search(r"DATASPACE\s+SIMPLE \{ \( ([\d, ]+) \)", hdr)
    shape = tuple(int(x) for x in m.group(1).split(","))
    code = "q" if "H5T_STD_I64LE" in hdr else "f"
    vals = array.array(code)
    vals.frombytes(raw)
    if sys.byteorder != "little":
        vals.byteswap()
    n = 1
    for d in shape:
        n *= d
    if len(vals) != n:
        fail("%s %s: %d values for shape %s" % (path, name, len(vals), shape))
    return shape, raw, list(vals)


def h5_attr(path, name):
    out = subprocess.run(["h5dump", "-a", "/" + name, path], capture_output=True, text=True,
                         check=True).stdout
    data = out.split("DATA {", 1)[1]
    strings = re.findall(r'"((?:[^"\\]|\\.)*)"', data)
    if strings:
        return strings[0]
    return [int(x) for x in re.findall(r"-?\d+", re.sub(r"\(\d+\):", "", data))]


def h5_all(path):
    """name -> (shape, raw bytes) of every dataset."""
    return {n: h5_dataset(path, n)[:2] for n in h5_names(path)}


# ---- the command lines ----------------------------------------------------------------------------
class Env:
    def __init__(self, a):
        self.hdtrain = a.hdtrain
        self.mpirun = a.mpirun.split()
        self.work = a.work
        self.data = os.path.join(a.work, "data")
        self.run_dir = os.path.join(a.work, "enc_run")  # the `train` fixture's run
        self.image = os.path.join(self.data, "eval", "00000016.jpg")

    def encode(self, out, checkpoint=None, sets=(), extra=(), expect_rc=0, image=None):
        c = [self.hdtrain, "ps3", "encode", "--config", MICRO, "--set", "data.dir=" + self.data,
             "--checkpoint", checkpoint or self.run_dir, "--image", image or self.image,
             "--out", out]
        for s in sets:
            c += ["--set", s]
        return run(c + list(extra), expect_rc)

    def pretrain(self, run_dir, sets=()):
        c = self.mpirun + ["-np", "2", self.hdtrain, "pretrain", "--config", MICRO,
                           "--set", "run_dir=" + run_dir, "--set", "data.dir=" + self.data]
        for s in sets:
            c += ["--set", s]
        return run(c)


def fresh(env, name):
    d = os.path.join(env.work, name)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    return d


def first_caption(env):
    with open(os.path.splitext(env.image)[0] + ".json") as f:
        return json.load(f)["text"][0]


def png_size(path):
    """(width, height) from a PNG's IHDR chunk."""
    with open(path, "rb") as f:
        head = f.read(24)
    if head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        fail("%s is not a PNG" % path)
    return struct.unpack(">II", head[16:24])


def safetensors_tensors(path):
    """name -> raw bytes of every tensor in a safetensors file (header parsed by hand)."""
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n])
    base = 8 + n
    return {k: blob[base + v["data_offsets"][0]:base + v["data_offsets"][1]]
            for k, v in header.items() if k != "__metadata__"}


# ---- cases ------------------------------------------------------------------------------------------
def case_info(env):
    p = run([env.hdtrain, "info"])
    check(re.search(r"^hdtrain \d+\.\d+\.\d+ \(", p.stdout, re.M) is not None,
          "hdtrain info prints the version: %s" % p.stdout.splitlines()[0])
    check(re.search(r"^cuda: ", p.stdout, re.M | re.I) is not None and "CUDA" in p.stdout.upper(),
          "hdtrain info prints the CUDA line")
    flags = open("/proc/cpuinfo").read()
    native = " avx512_bf16 " in flags.replace("\n", " ") or " amx_bf16 " in flags.replace("\n", " ")
    m = re.search(r"^cpu vector extensions: (.*)$", p.stdout, re.M)
    check(m is not None and ("avx2" in m.group(1)) == (" avx2 " in flags.replace("\n", " ")),
          "hdtrain info lists the CPU's vector extensions: %s" % (m.group(0) if m else p.stdout))
    # The hot loops run their AVX-512 instantiation exactly where the CPU has AVX-512 (F, BW,
    # VL, DQ) and the environment does not turn it off; elsewhere the line says why.
    words = set(flags.split())
    avx512 = {"avx512f", "avx512bw", "avx512vl", "avx512dq"} <= words
    off = os.environ.get("HD_CPU_AVX512") == "0"
    m = re.search(r"^cpu kernels: (.*)$", p.stdout, re.M)
    check(m is not None and m.group(1).startswith("avx512" if avx512 and not off else "avx2 (AVX-512: "),
          "hdtrain info says which vector kernels run: %s" % (m.group(0) if m else p.stdout))
    # bf16 GEMMs go through oneDNN exactly where the CPU has bf16 arithmetic; elsewhere the line
    # says why (oneDNN's version and ISA).
    m = re.search(r"^bf16 compute: (.*)$", p.stdout, re.M)
    check(m is not None and ("through oneDNN" in m.group(1)) == native and
          (native or "oneDNN" in m.group(1)),
          "hdtrain info says how bf16 computes on this CPU: %s" % (m.group(0) if m else p.stdout))
    # bf16 attention of head dims 16/32/64 runs the vdpbf16ps kernel exactly where the CPU has
    # AVX512_BF16 and the AVX-512 kernels are on.
    m = re.search(r"^bf16 attention \(head dims 16, 32, 64\): (.*)$", p.stdout, re.M)
    check(m is not None and m.group(1).startswith("vdpbf16ps kernel") ==
          ("avx512_bf16" in words and avx512 and not off),
          "hdtrain info says which bf16 attention runs: %s" % (m.group(0) if m else p.stdout))
    check(run([env.hdtrain, "info", "--help"]).stdout.startswith("usage: hdtrain info"),
          "hdtrain info --help")


def case_train(env):
    shutil.rmtree(env.run_dir, ignore_errors=True)
    env.pretrain(env.run_dir, ["train.steps=2", "eval.at_end=false"])
    check(os.path.exists(os.path.join(env.run_dir, "checkpoints", "step_00000002", "manifest.pb")),
          "micro run wrote its step-2 checkpoint (2 ranks)")


def check_encoding(path, look_close, prompt):
    names = h5_names(path)
    want = ["/high_res_pooled", "/high_res_positions", "/high_res_tokens", "/low_res_pooled",
            "/low_res_tokens"]
    for group in ("prior_probs", "selection_maps") + (("posterior_probs",) if prompt else ()):
        want += ["/%s/scale_%d" % (group, s) for s in SCALES]
    check(names == sorted(want), "%s holds exactly the expected datasets: %s" % (path, names))
    m = K * look_close
    for name, shape in (("/low_res_tokens", (LOW_TOKENS, W)), ("/low_res_pooled", (W,)),
                        ("/high_res_tokens", (m, W)), ("/high_res_positions", (m,)),
                        ("/high_res_pooled", (W,))):
        got = h5_dataset(path, name)[0]
        check(got == shape, "%s shape %s == %s" % (name, got, shape))
    _, _, pos = h5_dataset(path, "/high_res_positions")
    cells = sum(g * g for g in GRIDS)
    check(all(a < b for a, b in zip(pos, pos[1:])), "positions strictly ascending")
    check(0 <= pos[0] and pos[-1] < cells, "positions within [0, %d): %d..%d" % (cells, pos[0], pos[-1]))
    for name in ("/low_res_tokens", "/high_res_tokens", "/high_res_pooled"):
        v = h5_dataset(path, name)[2]
        check(all(x == x and abs(x) < 1e30 for x in v) and any(x != 0 for x in v),
              "%s finite and not all zero" % name)
    ones, offset = [], 0
    for s, g in zip(SCALES, GRIDS):
        for group in ("prior_probs",) + (("posterior_probs",) if prompt else ()):
            shape, _, v = h5_dataset(path, "/%s/scale_%d" % (group, s))
            check(shape == (g, g) and all(0 < x < 1 for x in v),
                  "/%s/scale_%d is [%d, %d] with every value in (0, 1)" % (group, s, g, g))
        shape, _, sel = h5_dataset(path, "/selection_maps/scale_%d" % s)
        check(shape == (g, g) and all(x in (0.0, 1.0) for x in sel),
              "/selection_maps/scale_%d is a [%d, %d] 0/1 map" % (s, g, g))
        ones += [offset + i for i, x in enumerate(sel) if x == 1.0]
        offset += g * g
    check(len(ones) == m, "selection maps sum to the %d high-res tokens" % m)
    check(ones == pos, "the selected cells are exactly the high-res positions")
    check(h5_attr(path, "config") == "micro" and h5_attr(path, "scales") == list(SCALES) and
          h5_attr(path, "grids") == list(GRIDS) and h5_attr(path, "look_close_steps") == [look_close],
          "attributes: config name, scales, grids, look-close steps")
    check(h5_attr(path, "prompt") == (prompt or ""), "attribute prompt = %r" % prompt)


def case_encode(env):
    out = fresh(env, "enc_out")
    p = run([env.hdtrain, "ps3", "--help"])
    check("--checkpoint PATH" in p.stdout and "/high_res_positions" in p.stdout, "ps3 --help")
    check("--look-close" in run([env.hdtrain, "ps3", "encode", "--help"]).stdout, "ps3 encode --help")

    a, b = os.path.join(out, "a.h5"), os.path.join(out, "b.h5")
    env.encode(a)  # the run folder: its newest complete checkpoint
    check(h5_attr(a, "checkpoint").endswith("checkpoints/step_00000002"),
          "a run folder resolves to its newest checkpoint: %s" % h5_attr(a, "checkpoint"))
    check_encoding(a, 1, None)
    env.encode(b)
    check(filecmp.cmp(a, b, shallow=False), "encoding twice gives identical bytes")

    two = os.path.join(out, "look2.h5")
    env.encode(two, extra=["--look-close", "2"])
    check_encoding(two, 2, None)

    caption = first_caption(env)
    pr = os.path.join(out, "prompt.h5")
    env.encode(pr, extra=["--prompt", caption])
    check_encoding(pr, 1, caption)
    for s in SCALES:
        prior = h5_dataset(pr, "/prior_probs/scale_%d" % s)[1]
        post = h5_dataset(pr, "/posterior_probs/scale_%d" % s)[1]
        check(post != prior, "scale %d: posterior (top-down) differs from the prior" % s)
        check(prior == h5_dataset(a, "/prior_probs/scale_%d" % s)[1],
              "scale %d: the prior does not depend on the prompt" % s)

    # --selection-png: the picture (size from the PNG header; its pixels are checked by
    # tests/ps3/model/selection_png_test.cpp) with the GT box of the caption's own record.
    png = os.path.join(out, "sel", "sel.png")
    p = env.encode(os.path.join(out, "sel.h5"), extra=["--prompt", caption, "--selection-png", png])
    check("GT box from 00000016.json text 0" in p.stdout, "the GT box comes from the image's record")
    check(png_size(png) == (448, 448 + 16), "selection PNG: the 448 x 448 image + the legend strip")
    p = env.encode(os.path.join(out, "sel2.h5"),
                   extra=["--selection-png", png, "--box", "10,20,200,120.5"])
    check("GT box from --box" in p.stdout, "--box is used without a prompt")
    p = env.encode(os.path.join(out, "sel3.h5"), extra=["--selection-png", png])
    check("no GT box known" in p.stdout, "no prompt, no --box: no box drawn")
    for box, msg in (("1,2,3", "needs four numbers"), ("5,5,1,9", "inverted"), ("a,1,2,3", "'a'")):
        p = env.encode(os.path.join(out, "sel4.h5"), extra=["--selection-png", png, "--box", box],
                       expect_rc=1)
        check("--box" in p.stderr and msg in p.stderr, "--box %s: %s" % (box, p.stderr.strip()))
    p = env.encode(os.path.join(out, "sel4.h5"), extra=["--box", "1,2,3,4"], expect_rc=1)
    check("only used with --selection-png" in p.stderr, "--box alone is an error")

    # Errors: exit code, the thing at fault named, no output file left behind.
    bad = os.path.join(out, "bad.h5")
    p = env.encode(bad, image=os.path.join(out, "missing.png"), expect_rc=1)
    check("missing.png" in p.stderr and "does not exist" in p.stderr, "missing image named")
    corrupt = os.path.join(out, "corrupt.jpg")
    with open(env.image, "rb") as f:
        head = f.read(600)  # a JPEG cut short
    with open(corrupt, "wb") as f:
        f.write(head)
    p = env.encode(bad, image=corrupt, expect_rc=1)
    check("corrupt.jpg" in p.stderr, "corrupt image named: %s" % p.stderr.strip())
    p = env.encode(bad, checkpoint=os.path.join(out, "nowhere"), expect_rc=1)
    check("--checkpoint" in p.stderr and "nowhere" in p.stderr, "missing checkpoint named")
    p = env.encode(bad, checkpoint=out, expect_rc=1)
    check("holds no complete checkpoint" in p.stderr, "a folder without checkpoints is named")
    p = env.encode(bad, sets=["model.vision.mlp_hidden=48"], expect_rc=1)
    check(re.search(r"shape mismatch for 'vision_model\.[\w.]+'", p.stderr) is not None,
          "config/checkpoint shape mismatch names the tensor")
    p = env.encode(bad, sets=["train.stpes=3"], expect_rc=2)
    check("unknown field 'stpes'" in p.stderr, "a bad config exits 2, naming the field")
    check(not os.path.exists(bad) and not os.path.exists(bad + ".partial"),
          "no output file after a failure")


def case_reference(env):
    out = fresh(env, "enc_ref")
    with open(REF_TINY) as f:
        text = f.read()
    check(not re.search(r"^\s*(run_dir|data|train)\b", text, re.M),
          "ref_tiny.textproto has no run_dir, data or train section")
    with open(os.path.join(REF_DIR, "reference.json")) as f:
        ref = json.load(f)
    check(not ref["has_logit_scale"], "the reference's save_pretrained wrote no logit_scale/bias")
    image = os.path.join(REF_DIR, "image.png")

    def encode(path, checkpoint, extra=(), expect_rc=0):
        return run([env.hdtrain, "ps3", "encode", "--config", REF_TINY, "--checkpoint", checkpoint,
                    "--image", image, "--out", path] + list(extra), expect_rc)

    full_st = os.path.join(REF_DIR, "full", "model.safetensors")
    a = os.path.join(out, "full.h5")
    p = encode(a, full_st)
    check(re.search(r"note: .*has no logit_scale, logit_bias .*logit_scale = 2\.30259, "
                    r"logit_bias = -10", p.stdout) is not None,
          "missing logit_scale/logit_bias: a note with their init values")
    # Against the reference's own forward on the same image (it is already 224 x 224: no resize).
    fwd = ref["forward"]
    pooled = h5_dataset(a, "/low_res_pooled")[2]
    err = max(abs(x - y) for x, y in zip(pooled, fwd["low_res_pooled"]))
    check(len(pooled) == 16 and err < 1e-5, "low-res pooled feature = the reference's (max |diff| %.2g)"
          % err)
    budget = {"112": 2, "224": 10}  # the reference 0.1.3 drops the rounding remainder: 2 + 9
    for s in ("112", "224"):
        probs = h5_dataset(a, "/prior_probs/scale_" + s)[2]
        rp = fwd["prior_probs"][s]
        err = max(abs(x - y) / abs(y) for x, y in zip(probs, rp))
        check(len(probs) == len(rp) and err < 1e-5,
              "scale %s: selection probabilities = the reference's (max rel. diff %.2g)" % (s, err))
        sel = [i for i, v in enumerate(h5_dataset(a, "/selection_maps/scale_" + s)[2]) if v == 1.0]
        check(len(sel) == budget[s], "scale %s: %d cells selected" % (s, len(sel)))
        # Top-k with ties: the reference (torch.topk) and hdtrain (ascending index) may pick
        # different cells of equal probability, never cells of other probabilities.
        mine = sorted((rp[i] for i in sel), reverse=True)[:len(fwd["selected"][s])]
        theirs = sorted((rp[i] for i in fwd["selected"][s]), reverse=True)
        check(mine == theirs, "scale %s: the selected cells hold the probabilities the reference "
              "selected %s" % (s, [round(v, 6) for v in theirs]))

    # The HF folder (save_pretrained's output) and the file imported into a step folder.
    b = os.path.join(out, "folder.h5")
    encode(b, os.path.join(REF_DIR, "full"))
    check(h5_all(b) == h5_all(a), "the save_pretrained folder encodes like its model.safetensors")
    imported = os.path.join(out, "imported")
    run([env.hdtrain, "ckpt", "import", full_st, "--out", imported])
    c = os.path.join(out, "imported.h5")
    p = encode(c, os.path.join(imported, "step_00000000"))
    check("has no logit_scale, logit_bias" in p.stdout and h5_all(c) == h5_all(a),
          "imported into a step folder: the same note and the same encoding")

    # --prompt runs the reference's text tower: a tokenizer within its 64-token vocabulary.
    tok = os.path.join(out, "tok")
    run([env.hdtrain, "data", "tokenizer", "--data", env.data, "--out", tok, "--vocab", "60"])
    d = os.path.join(out, "prompt.h5")
    encode(d, full_st, ["--prompt", "A red square!", "--set", "data.tokenizer=" + tok + ".model"])
    check(h5_attr(d, "prompt_clean") == "a red square", "the prompt is cleaned like the reference's")
    for s in ("112", "224"):
        post = h5_dataset(d, "/posterior_probs/scale_" + s)[1]
        check(post != h5_dataset(d, "/prior_probs/scale_" + s)[1],
              "scale %s: top-down probabilities from the reference's text tower" % s)

    # Vision only (PS3VisionModel.save_pretrained): no text_model.* at all.
    vis = os.path.join(REF_DIR, "vision", "model.safetensors")
    e = os.path.join(out, "vision.h5")
    encode(e, vis)
    check(len(h5_dataset(e, "/high_res_positions")[2]) == 12 and
          h5_dataset(e, "/low_res_pooled")[1] != h5_dataset(a, "/low_res_pooled")[1],
          "the vision-only checkpoint encodes without --prompt (its own weights)")
    bad = os.path.join(out, "bad.h5")
    p = encode(bad, vis, ["--prompt", "a red square"], expect_rc=1)
    check("has no text tower" in p.stderr and "vision-only" in p.stderr and "--prompt" in p.stderr,
          "vision-only with --prompt: the error names the missing text tower")
    check(not os.path.exists(bad) and not os.path.exists(bad + ".partial"), "and writes nothing")


def case_hf(env):
    out = fresh(env, "enc_hf")
    st = os.path.join(out, "model.safetensors")
    run([env.hdtrain, "ckpt", "export", os.path.join(env.run_dir, "checkpoints"), "--out", st])
    imported = os.path.join(out, "imported")
    run([env.hdtrain, "ckpt", "import", st, "--out", imported])
    step0 = os.path.join(imported, "step_00000000")
    check(os.path.exists(os.path.join(step0, "manifest.pb")), "imported into step_00000000")

    caption = first_caption(env)
    ref, from_st, from_imp = (os.path.join(out, n + ".h5") for n in ("ref", "st", "imp"))
    for path, ck in ((ref, os.path.join(env.run_dir, "checkpoints", "step_00000002")),
                     (from_st, st), (from_imp, step0)):
        env.encode(path, checkpoint=ck, extra=["--prompt", caption])
    r = h5_all(ref)
    check(len(r) == 5 + 3 * len(SCALES), "reference encoding has %d datasets" % len(r))
    check(h5_attr(from_st, "checkpoint_format") == "safetensors", "read as safetensors")
    check(h5_all(from_st) == r, "encoding from the .safetensors == from the original checkpoint")
    check(h5_all(from_imp) == r, "encoding from the imported folder == from the original checkpoint")

    p = env.encode(os.path.join(out, "bad.h5"), checkpoint=st, sets=["model.vision.mlp_hidden=48"],
                   expect_rc=1)
    check(re.search(r"tensor 'vision_model\.[\w.]+' has shape", p.stderr) is not None,
          "safetensors shape mismatch names the tensor")

    # init_from: a 1-step run from the imported folder with another seed, its only step skipped
    # (train.debug_nonfinite_steps poisons step 0, so no update): the saved parameters must be
    # exactly the imported ones, resharded from 1 to 2 ranks and back.
    init_run = os.path.join(out, "init_run")
    p = env.pretrain(init_run, ["seed=11", "train.steps=1", "train.warmup_steps=0", "eval.at_end=false",
                                "checkpoint.init_from=" + step0, "train.debug_nonfinite_steps=0"])
    check(re.search(r"\[init\] parameters from %s: \d+ loaded, 0 missing, 0 unused\n" %
                    re.escape(step0), p.stdout) is not None,
          "pretrain reports init_from with nothing missing or unused")
    st2 = os.path.join(out, "init_run.safetensors")
    run([env.hdtrain, "ckpt", "export", os.path.join(init_run, "checkpoints"), "--out", st2])
    orig, after = safetensors_tensors(st), safetensors_tensors(st2)
    check(sorted(orig) == sorted(after) and len(orig) > 10, "same %d tensors" % len(orig))
    diff = [k for k in orig if orig[k] != after[k]]
    check(not diff, "every parameter of the init_from run equals the imported one bit for bit %s"
          % diff[:3])
    # And the same run without the poisoned step moves away from them (it does train).
    moved = os.path.join(out, "init_run2")
    env.pretrain(moved, ["seed=11", "train.steps=1", "train.warmup_steps=0", "eval.at_end=false",
                         "checkpoint.init_from=" + step0])
    st3 = os.path.join(out, "init_run2.safetensors")
    run([env.hdtrain, "ckpt", "export", os.path.join(moved, "checkpoints"), "--out", st3])
    trained = safetensors_tensors(st3)
    check(sum(orig[k] != trained[k] for k in orig) > len(orig) // 2,
          "a normal step from the imported weights updates them")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("case")
    ap.add_argument("--hdtrain", required=True)
    ap.add_argument("--mpirun", required=True)
    ap.add_argument("--work", required=True)
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    globals()["case_" + a.case](Env(a))
    print("PASS " + a.case)


if __name__ == "__main__":
    main()
