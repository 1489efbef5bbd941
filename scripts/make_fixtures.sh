#!/usr/bin/env bash
# Regenerates every PyTorch fixture in tests/fixtures/ (needs Debian's python3-torch).
# Tests never need torch at run time: the generated .bin files are committed.
set -euo pipefail
cd "$(dirname "$0")/../tests/fixtures"
PY=/usr/bin/python3  # Debian's python3 has torch; the first python3 on PATH may not
if ! "$PY" -c 'import torch' 2>/dev/null; then
  echo "make_fixtures: $PY cannot import torch; install it with: apt-get install python3-torch" >&2
  exit 1
fi
for script in make_*.py; do
  echo "== $script"
  "$PY" "$script"
done
