#!/usr/bin/env bash
# Sets everything up and runs the main job. Until PS3 pre-training lands (its own issue), the
# main job is the ViT training-step benchmark: hdtrain against PyTorch, side by side.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
"$root/scripts/setup.sh"
"$root/scripts/build.sh"
/usr/bin/python3 "$root/bench/vit_step_compare.py" --hd "${HD_BUILD_DIR:-$root/build}/bench/hd_bench_vit_step" "$@"
