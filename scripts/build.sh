#!/usr/bin/env bash
# Configures and builds hdtrain (Release) into build/ (or $HD_BUILD_DIR). Extra args go to cmake.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${HD_BUILD_DIR:-$root/build}"
jobs="${HD_JOBS:-$(nproc)}"
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release "$@"
cmake --build "$build" -j "$jobs"
