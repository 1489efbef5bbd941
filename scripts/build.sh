#!/usr/bin/env bash
# Configures and builds hdtrain (Release) into build/ (or $HD_BUILD_DIR). Extra args go to cmake.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${HD_BUILD_DIR:-$root/build}"
jobs="${HD_JOBS:-$(nproc)}"
# ccache keys on the compiler's paths: relative to the checkout, so a clone in another folder (CI
# builds a fresh clone) reuses what this machine compiled before instead of starting cold.
export CCACHE_BASEDIR="${CCACHE_BASEDIR:-$root}"
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release "$@"
cmake --build "$build" -j "$jobs"
