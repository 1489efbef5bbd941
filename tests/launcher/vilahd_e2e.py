#!/usr/bin/env python3
"""End-to-end tests of `hdtrain vilahd init` and `hdtrain vilahd ask`, as a new user runs them.

Real processes on real files: a fresh VILA-HD folder written by `init` (tiny preset over the
fixture Qwen2-layout tokenizer), a PNG written here, answers read from stdout, the selection
picture read back as a PNG. Checks: an answer, the stderr summary (mode, steps, image tokens),
byte-identical answers and pictures on a rerun, sampling reproducible per seed, more look-close
steps give more image tokens, bottom-up mode, and every bad input an exit code 2 with a message
naming it (missing/corrupt image, missing folder/tokenizer/tensor file, bad options, a top-down
request to a bottom-up model, init over an existing folder).

Usage: vilahd_e2e.py --hdtrain PATH
"""
import argparse
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
TOKENIZER = os.path.join(HERE, "..", "fixtures", "bpe_tokenizer", "tokenizer.json")


def fail(msg):
    print("FAIL: " + msg)
    sys.exit(1)


def check(cond, msg):
    if not cond:
        fail(msg)
    print("ok: " + msg)


def write_png(path, w, h):
    """An RGB image with a bright square on a gradient (stdlib only)."""
    rows = []
    for y in range(h):
        row = bytearray([0])
        for x in range(w):
            inside = 200 <= x < 260 and 100 <= y < 160
            row += bytes((255, 255, 0) if inside else ((x * 255) // w, (y * 255) // h, 90))
        rows.append(bytes(row))
    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) +
                chunk(b"IDAT", zlib.compress(b"".join(rows))) + chunk(b"IEND", b""))


def png_size(path):
    with open(path, "rb") as f:
        head = f.read(24)
    return head[:8] == b"\x89PNG\r\n\x1a\n", struct.unpack(">II", head[16:24])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--hdtrain", required=True)
    hdtrain = os.path.abspath(ap.parse_args().hdtrain)
    work = tempfile.mkdtemp(prefix="hd_vilahd_e2e_")

    def run(*args):
        p = subprocess.run([hdtrain, "vilahd"] + list(args), capture_output=True, text=True,
                           timeout=300, cwd=work)
        return p.returncode, p.stdout, p.stderr

    gpu = subprocess.run([hdtrain, "info"], capture_output=True, text=True).stdout
    has_gpu = re.search(r"cuda: \d+ device", gpu) is not None
    try:
        model = os.path.join(work, "model")
        rc, out, err = run("init", "--out", model, "--tokenizer", TOKENIZER, "--seed", "3")
        check(rc == 0 and "parameters" in out, "init writes a folder: %s %s" % (out.strip(), err))
        for f in ("config.json", "llm/config.json", "llm/tokenizer.json", "llm/model.safetensors",
                  "mm_projector/model.safetensors", "vision_tower/model.safetensors"):
            check(os.path.isfile(os.path.join(model, f)), "init wrote " + f)
        image = os.path.join(work, "sign.png")
        write_png(image, 512, 384)

        ask = ["ask", "--checkpoint", model, "--image", image, "--question",
               "What colour is the square?", "--max-new-tokens", "8"]
        png1, png2 = os.path.join(work, "a.png"), os.path.join(work, "b.png")
        rc, out1, err1 = run(*ask, "--selection-png", png1)
        check(rc == 0, "ask answers: exit %d %s" % (rc, err1))
        m = re.search(r"\((after_prompt), 1 look-close step\(s\), (\d+) image tokens: 196 low-res", err1)
        check(m is not None, "the summary names mode, steps and image tokens: " + err1.strip())
        tokens1 = int(m.group(2))
        check(tokens1 > 196, "high-res tokens were added (%d image tokens)" % tokens1)
        ok, (w, h) = png_size(png1)
        check(ok and w == 512 and h > 384, "the selection picture is a PNG of the image + legend (%dx%d)" % (w, h))
        rc, out2, _ = run(*ask, "--selection-png", png2)
        check(rc == 0 and out2 == out1, "the same question gives the same answer")
        check(open(png1, "rb").read() == open(png2, "rb").read(), "and the same picture")

        sample = ask + ["--temperature", "0.9", "--top-p", "0.95", "--seed", "5"]
        rc_a, out_a, _ = run(*sample)
        rc_b, out_b, _ = run(*sample)
        check(rc_a == 0 and rc_b == 0 and out_a == out_b, "sampling is reproducible for a seed")

        rc, _, err = run(*ask, "--look-close", "2")
        m2 = re.search(r"2 look-close step\(s\), (\d+) image tokens", err)
        check(rc == 0 and m2 and int(m2.group(1)) > tokens1,
              "two look-close steps give more image tokens (%s)" % err.strip())
        rc, _, err = run(*ask, "--mode", "after_image")
        check(rc == 0 and "(after_image" in err, "bottom-up mode runs")

        # train (2 steps) and eval on records about the PNG, as `hdtrain data synth` writes them.
        with open(os.path.join(work, "sft.jsonl"), "w") as f:
            for word in ("YELLOW", "SQUARE", "BRIGHT"):
                f.write(json.dumps({"image": "sign.png", "box": [200, 100, 260, 160], "conversations": [
                    {"from": "human", "value": "<image>\nWhat is in the box?"},
                    {"from": "gpt", "value": word}]}) + "\n")
        with open(os.path.join(work, "eval_mc.jsonl"), "w") as f:
            for i in range(2):
                f.write(json.dumps({"image": "sign.png", "question": "What colour is the square?",
                                    "options": ["yellow", "red", "blue", "green"], "answer": "A",
                                    "box": [200, 100, 260, 160]}) + "\n")
        trained = os.path.join(work, "trained")
        rc, out, err = run("train", "--init", model, "--data", work, "--out", trained, "--steps", "2",
                           "--batch", "2", "--trainable", "llm,projector,top_down_selection")
        check(rc == 0 and "step 2/2 loss" in out and os.path.isfile(os.path.join(trained, "config.json")),
              "train runs 2 steps and writes a folder: %s" % (out + err)[-300:])
        report = os.path.join(work, "eval.json")
        rc, out, err = run("eval", "--checkpoint", trained, "--data", work, "--max-look-close", "1",
                           "--out", report)
        check(rc == 0 and "low-res only" in out and "top-down @" in out, "eval prints the table: " + out[-400:])
        rep = json.load(open(report))
        names = [m["name"] for m in rep["modes"]]
        check(rep["questions"] == 2 and names[:3] == ["low-res only", "bottom-up", "top-down x1"],
              "the report has every mode: %s" % names)
        check(all(0 <= m["accuracy"] <= 1 and len(m["chosen"]) == 2 for m in rep["modes"]),
              "accuracies and per-question choices are in the report")
        low = rep["modes"][0]
        check(low["mean_image_tokens"] == 196 and low["gt_recall"] == -1,
              "low-res only: 196 image tokens and no selection")

        bad_mc, bad_sft = os.path.join(work, "bad_mc.jsonl"), os.path.join(work, "bad_sft.jsonl")
        with open(bad_mc, "w") as f:
            f.write(json.dumps({"image": "ghost.png", "question": "q", "options": ["a", "b", "c", "d"],
                                "answer": "B"}) + "\n")
        with open(bad_sft, "w") as f:
            f.write(json.dumps({"image": "ghost.png", "conversations": [
                {"from": "human", "value": "<image>\nq"}, {"from": "gpt", "value": "a"}]}) + "\n")
        # Malformed records are skipped with their file and line named.
        with open(os.path.join(work, "mixed_mc.jsonl"), "w") as f:
            f.write("not json\n")
            f.write(json.dumps({"image": "sign.png", "question": "What colour?",
                                "options": ["yellow", "red", "blue", "green"], "answer": "A"}) + "\n")
        rc, out, err = run("eval", "--checkpoint", trained, "--data", work, "--mc",
                           os.path.join(work, "mixed_mc.jsonl"), "--max-look-close", "1")
        check(rc == 0 and "mixed_mc.jsonl line 1: malformed JSON" in err and out.startswith("1 questions"),
              "a malformed question is skipped, named by file and line: %s" % err[-200:])

        bad = os.path.join(work, "corrupt.jpg")
        with open(bad, "wb") as f:
            f.write(b"\xff\xd8\xff\xe0 not really a jpeg")
        no_tok = os.path.join(work, "no_tok")
        shutil.copytree(model, no_tok)
        os.remove(os.path.join(no_tok, "llm", "tokenizer.json"))
        cut = os.path.join(work, "cut")
        shutil.copytree(model, cut)
        vt = os.path.join(cut, "vision_tower", "model.safetensors")
        with open(vt, "r+b") as f:
            f.truncate(os.path.getsize(vt) // 2)
        bottom_up = os.path.join(work, "bottom_up")
        rc, _, _ = run("init", "--out", bottom_up, "--tokenizer", TOKENIZER, "--mode", "after_image")
        check(rc == 0, "init a bottom-up model")
        base = ["ask", "--checkpoint", model, "--image", image, "--question", "q"]
        cases = [
            (["ask", "--checkpoint", model, "--image", os.path.join(work, "nope.png"), "--question", "q"], "nope.png"),
            (["ask", "--checkpoint", model, "--image", bad, "--question", "q"], "corrupt.jpg"),
            (["ask", "--checkpoint", os.path.join(work, "absent"), "--image", image, "--question", "q"], "absent"),
            (["ask", "--checkpoint", no_tok, "--image", image, "--question", "q"], "tokenizer.json"),
            (["ask", "--checkpoint", cut, "--image", image, "--question", "q"], "model.safetensors"),
            (["ask", "--checkpoint", bottom_up, "--image", image, "--question", "q", "--mode", "after_prompt"],
             "prompt head"),
            (base + ["--mode", "sideways"], "sideways"),
            (base + ["--look-close", "0"], "--look-close"),
            (base + ["--look-close", "two"], "--look-close"),
            (base + ["--selection-png", "x.jpg"], "x.jpg"),
            (base + ["--temperature", "hot"], "--temperature"),
            (base + ["--device", "tpu"], "tpu"),
            (base + ["--device", "cuda"], "--device cuda"),
            (base + ["--bogus", "1"], "bogus"),
            (["ask", "--checkpoint", model, "--image", image], "--question"),
            (["init", "--out", model, "--tokenizer", TOKENIZER], "already holds"),
            (["train", "--init", model, "--data", work, "--out", trained], "already holds"),
            (["train", "--init", model, "--data", work, "--out", os.path.join(work, "t2"), "--trainable", "eyes"], "eyes"),
            (["train", "--init", model, "--data", os.path.join(work, "nodata"), "--out", os.path.join(work, "t3")], "sft.jsonl"),
            (["eval", "--checkpoint", model, "--data", work, "--mc", os.path.join(work, "none.jsonl")], "none.jsonl"),
            (["eval", "--checkpoint", model, "--data", work, "--mc", bad_mc], "ghost.png"),
            (["train", "--init", model, "--data", work, "--out", os.path.join(work, "t4"), "--sft", bad_sft], "ghost.png"),
            (["init", "--out", os.path.join(work, "x"), "--tokenizer", os.path.join(work, "none.json")], "none.json"),
        ]
        if has_gpu:  # then --device cuda is a real run, checked below instead
            cases = [c for c in cases if c[1] != "--device cuda"]
            rc, out_gpu, err = run(*ask, "--device", "cuda")
            check(rc == 0, "ask on the GPU: %s" % err.strip()[-200:])
        for args, needle in cases:
            rc, out, err = run(*args)
            check(rc == 2 and needle in err and not out.strip(),
                  "exit 2 naming '%s' for %s: %s" % (needle, " ".join(args[-2:]), err.strip()[-160:]))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
