#!/usr/bin/env bash
# Sets everything up and runs every test: Debian packages, Release build, ctest.
#   scripts/test.sh             the whole suite
#   scripts/test.sh --sanitize  the whole suite under AddressSanitizer + UBSan (build-asan/)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
"$root/scripts/setup.sh"
if [ "${1:-}" = "--sanitize" ]; then
  export HD_BUILD_DIR="$root/build-asan"
  "$root/scripts/build.sh" -DHD_SANITIZE=ON -DHD_BUILD_BENCH=OFF
  # OpenMPI keeps allocations until exit by design: suppress those (scripts/lsan.supp). The slow
  # unwinder gives full stacks through libraries built without frame pointers, so the
  # suppressions can match; keeping MPI components loaded keeps their frames named. Tests that
  # never start MPI override it with the fast unwinder (tests/CMakeLists.txt).
  export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:fast_unwind_on_malloc=0
  export LSAN_OPTIONS="suppressions=$root/scripts/lsan.supp:fast_unwind_on_malloc=0"
  export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
  export OMPI_MCA_mca_base_component_disable_dlclose=1
else
  export HD_BUILD_DIR="${HD_BUILD_DIR:-$root/build}"
  "$root/scripts/build.sh"
fi
cd "$HD_BUILD_DIR"
ctest --output-on-failure -j "${HD_JOBS:-$(nproc)}" --timeout 900
