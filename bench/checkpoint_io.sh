#!/bin/sh
# bench/checkpoint_io.sh BUILD_DIR [DIR] [MiB] [repeats]: the raw disk (dd with fdatasync, same
# size, same folder) next to checkpoint write/read throughput at 2 ranks. Prints figures only.
build=$1; dir=${2:-/tmp/hd_bench_ckpt}; mib=${3:-1024}; rep=${4:-3}
mkdir -p "$dir"
for i in $(seq "$rep"); do
  dd if=/dev/zero of="$dir/dd.bin" bs=1M count="$mib" conv=fdatasync 2>&1 | tail -1 | sed 's/^/raw disk (dd): /'
  rm -f "$dir/dd.bin"
done
mpirun --allow-run-as-root --oversubscribe --bind-to none -np 2 \
  "$build/bench/hd_bench_checkpoint_io" "$dir/ckpt" "$mib" "$rep"
