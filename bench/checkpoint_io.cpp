// Checkpoint I/O throughput and the training loop's blocked time (issue 5 benchmark).
//
//   mpirun --allow-run-as-root --oversubscribe --bind-to none -np 2 hd_bench_checkpoint_io
//     [DIR] [MiB_total] [repeats]
//
// Saves MiB_total (default 1024) of f32 shards spread over the ranks (64 tensors of uneven dim 0,
// FSDP layout), `repeats` times (default 3); prints per-repeat and median figures:
//  * write: save_checkpoint wall time (files written, fsynced, manifest committed), GB/s;
//  * read: load_checkpoint on the same layout after POSIX_FADV_DONTNEED evicted the files from
//    the page cache (so the disk is read, not memory), every checksum verified, GB/s;
//  * blocked: what the caller waits for in a synchronous save (= write) vs AsyncCheckpointer::save
//    (the snapshot memcpy), seconds.
// Compare with the raw disk: `dd if=/dev/zero of=DIR/dd.bin bs=1M count=1024 conv=fdatasync`
// (bench/checkpoint_io.sh runs both). Prints figures only, never asserts (noisy shared machines).
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "parallel/checkpoint/checkpoint.h"
#include "parallel/checkpoint/train_state.h"

using namespace hd;
using namespace hd::parallel;
namespace fs = std::filesystem;

namespace {

double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

void evict(const fs::path& dir) {
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    if (!e.is_regular_file()) continue;
    const int fd = ::open(e.path().c_str(), O_RDONLY);
    if (fd < 0) continue;
    ::fdatasync(fd);
    ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    ::close(fd);
  }
}

}  // namespace

int main(int argc, char** argv) {
  auto pg = make_mpi_group();
  const fs::path dir = argc > 1 ? argv[1] : "/tmp/hd_bench_ckpt";
  const int64_t total_mib = argc > 2 ? std::atoll(argv[2]) : 1024;
  const int repeats = argc > 3 ? std::atoi(argv[3]) : 3;
  const int rank = pg->rank(), world = pg->world_size();

  // 64 tensors of [rows, 4096] f32 with rows varying around the mean, summing to total_mib.
  const int64_t cols = 4096, n_tensors = 64;
  const int64_t total_rows = total_mib * (1 << 20) / (cols * 4);
  std::vector<ckpt::ShardRef> shards;
  int64_t rows_left = total_rows, local_bytes = 0;
  for (int64_t t = 0; t < n_tensors; ++t) {
    const int64_t rows = t + 1 == n_tensors ? rows_left : total_rows / n_tensors + (t % 3) - 1;
    rows_left -= rows;
    ckpt::ShardRef ref{
        make_shard_info("layers." + std::to_string(t) + ".weight", {rows, cols}, rank, world), {}};
    ref.shard = Tensor::empty({ref.info.padded_length});
    float* d = ref.shard.data<float>();
    for (int64_t i = 0; i < ref.info.padded_length; ++i)
      d[i] = float((i * 2654435761u) % 1000) * 1e-3f;
    local_bytes += ref.info.length * 4;
    shards.push_back(std::move(ref));
  }
  const double total_gb = double(total_rows * cols * 4) / 1e9;
  if (rank == 0) {
    fs::remove_all(dir);
    fs::create_directories(dir);
    std::printf("checkpoint_io: %d ranks, %.3f GB in %lld tensors (%.3f GB on rank 0), %s\n", world,
                total_gb, static_cast<long long>(n_tensors), double(local_bytes) / 1e9,
                dir.c_str());
  }
  pg->barrier().wait();

  std::vector<double> write_s, read_s, async_blocked_s;
  auto io = make_mpi_group();
  ckpt::AsyncCheckpointer async(io, {1000, 0});
  for (int r = 0; r < repeats; ++r) {
    pg->barrier().wait();
    double t0 = now();
    const fs::path step = ckpt::save_checkpoint(dir, 2 * r, shards, *pg);
    const double w = now() - t0;
    evict(step);
    pg->barrier().wait();
    t0 = now();
    ckpt::load_checkpoint(step, shards);
    pg->barrier().wait();
    const double rd = now() - t0;
    async.save(dir, 2 * r + 1, shards, ckpt::TrainerState{});
    const double blocked = async.last_blocked_seconds();
    async.wait();
    write_s.push_back(w), read_s.push_back(rd), async_blocked_s.push_back(blocked);
    if (rank == 0) {
      std::printf(
          "  repeat %d: write %.3f s (%.2f GB/s)  read %.3f s (%.2f GB/s)  async save blocked "
          "%.3f s\n",
          r, w, total_gb / w, rd, total_gb / rd, blocked);
      fs::remove_all(step);
      fs::remove_all(ckpt::step_dir(dir, 2 * r + 1));
    }
  }
  if (rank == 0) {
    std::printf(
        "median: write %.2f GB/s  read %.2f GB/s  training blocked: sync save %.3f s, "
        "async save %.3f s\n",
        total_gb / median(write_s), total_gb / median(read_s), median(write_s),
        median(async_blocked_s));
    fs::remove_all(dir);
  }
  return 0;
}
