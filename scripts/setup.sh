#!/usr/bin/env bash
# Installs the Debian 12 packages hdtrain builds and tests with (skips apt when all are present).
# The CUDA toolkit is not a Debian package here: when nvcc is on the machine the CUDA backend is
# built (HD_CUDA=ON), otherwise the CPU build goes on without it.
set -euo pipefail
PACKAGES=(
  build-essential cmake ninja-build ccache pkg-config git
  libopenmpi-dev openmpi-bin
  libhdf5-dev hdf5-tools
  libprotobuf-dev protobuf-compiler
  libabsl-dev
  prometheus-cpp-dev prometheus
  libopenblas-dev libdnnl-dev
  libpng-dev libjpeg-dev libarchive-dev nlohmann-json3-dev libsentencepiece-dev sentencepiece libicu-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  python3-torch python3-numpy
)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all ${#PACKAGES[@]} Debian packages present"
  exit 0
fi
echo "setup: installing ${missing[*]}"
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO=sudo
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
