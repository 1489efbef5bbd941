#!/usr/bin/env bash
# Regenerates every fixture in tests/fixtures/ (needs Debian's python3-torch and python3-pil).
# Tests never need torch or Pillow at run time: the generated files are committed.
#
# make_ref_*.py need the reference package itself (ps3-torch 0.1.3, timm 1.0.15), which is not a
# Debian package: they run only when HD_REF_PYTHON names a Python that has them, e.g.
#   /usr/bin/python3 -m venv --system-site-packages /tmp/refvenv
#   /tmp/refvenv/bin/pip install --no-deps ps3-torch==0.1.3 timm==1.0.15 safetensors
#   HD_REF_PYTHON=/tmp/refvenv/bin/python scripts/make_fixtures.sh
# (each such script says what else it needs in its docstring).
set -euo pipefail
cd "$(dirname "$0")/../tests/fixtures"
PY=/usr/bin/python3  # Debian's python3 has torch; the first python3 on PATH may not
if ! "$PY" -c 'import torch' 2>/dev/null; then
  echo "make_fixtures: $PY cannot import torch; install it with: apt-get install python3-torch" >&2
  exit 1
fi
if ! "$PY" -c 'import PIL' 2>/dev/null; then
  echo "make_fixtures: $PY cannot import PIL; install it with: apt-get install python3-pil" >&2
  exit 1
fi
for script in make_*.py; do
  case "$script" in
    make_ref_*.py)
      if [[ -z "${HD_REF_PYTHON:-}" ]]; then
        echo "== $script skipped (set HD_REF_PYTHON, see the top of this script)"
        continue
      fi
      echo "== $script ($HD_REF_PYTHON)"
      "$HD_REF_PYTHON" "$script"
      ;;
    *)
      echo "== $script"
      "$PY" "$script"
      ;;
  esac
done
