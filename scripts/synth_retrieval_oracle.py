#!/usr/bin/env python3
"""Upper bounds for caption -> image retrieval on a synthetic eval split, for models that read
only part of a caption.

The evaluation's retrieval without GT forcing (hdtrain ps3 eval, "top-down selection, caption ->
image") ranks the first N held-out images for every caption of those images. An oracle that
knows only which sign colours each image has picks uniformly among the images with the
caption's colour; one that also knows the kind of detail (a shape, a number, a word) picks among
the images with that (colour, kind). Their expected top-1 is what a model reaches without
reading the details at high resolution (docs/training.md, "Selection").

usage: scripts/synth_retrieval_oracle.py DATA_DIR [N ...]   (default N: 8 16)
"""
import glob
import json
import re
import sys


def kind(caption):
    if "small" in caption:
        return "shape"
    if "reading" in caption:
        return "number" if re.search(r"\d", caption) else "word"
    return caption.split(" with ", 1)[-1]  # patterns: the pattern itself is the detail


def oracle_top1(keys):
    hits = [1.0 / sum(1 for other in keys if k in other) for ks in keys for k in ks]
    return sum(hits) / len(hits)


def main():
    if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help"):
        print(__doc__)
        return 0 if len(sys.argv) >= 2 else 2
    data = sys.argv[1]
    sizes = [int(n) for n in sys.argv[2:]] or [8, 16]
    files = sorted(glob.glob(f"{data}/eval/*.json"))
    if not files:
        print(f"synth_retrieval_oracle: no eval/*.json records under {data}", file=sys.stderr)
        return 1
    for n in sizes:
        images = [json.load(open(f))["text"] for f in files[:n]]
        colour = [[re.match(r"a (\w+) ", t).group(1) for t in texts] for texts in images]
        colour_kind = [[(re.match(r"a (\w+) ", t).group(1), kind(t)) for t in texts]
                       for texts in images]
        chance = 1.0 / len(images)
        for name, keys in (("colour only", colour), ("colour + kind", colour_kind)):
            top1 = oracle_top1(keys)
            print(f"{data}: {len(images)} images, {name:13s} oracle top-1 {top1:.3f} "
                  f"(chance {chance:.3f}, {top1 / chance:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
