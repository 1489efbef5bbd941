// Image-unique, rank-sharded, resumable sampling.
//
// The global order is a pure function of (seed, epoch): epoch e visits every image once, in a
// Philox-keyed permutation, and global batch b is positions [b*G, (b+1)*G) of it (G = global
// batch size, the incomplete tail batch of an epoch is dropped). Hence within a global batch
// every image appears at most once, whatever the number of ranks; rank r of R takes the
// contiguous slice [r*G/R, (r+1)*G/R) of each global batch, so ranks never overlap. Nothing
// depends on R except that slicing, which is why a state saved on R ranks resumes on R' ranks
// with the same global order.
#pragma once

#include <cstdint>
#include <vector>

namespace hd::data {

// What one image contributes in one pass (§2.1: one sample per image per pass).
struct SampleSpec {
  int64_t image = 0;
  bool is_global = false;  // global caption, box = whole image
  int64_t box = -1;        // index of the local caption/box when !is_global
  uint64_t key = 0;        // seeds the per-sample text randomness (sentence masking)
};

// The sampler's position: all a checkpoint needs to resume.
struct SamplerState {
  uint64_t seed = 0;
  int64_t epoch = 0;
  int64_t batch = 0;  // next global batch within the epoch
  bool operator==(const SamplerState&) const = default;
};

class Sampler {
 public:
  // boxes_per_image[i] = number of local caption/box pairs; has_global[i] whether image i has a
  // global caption. If only one kind exists it is used (§2.1).
  Sampler(std::vector<int64_t> boxes_per_image, std::vector<bool> has_global, int64_t global_batch,
          uint64_t seed, double global_caption_prob = 0.25);

  int64_t batches_per_epoch() const;
  int64_t global_batch() const { return global_batch_; }
  // The permutation of image ids for an epoch (cached: valid until another epoch is asked for).
  // Not thread-safe: one thread per Sampler (the loader keeps its own copy).
  const std::vector<int64_t>& permutation(int64_t epoch) const;
  // Rank `rank` of `world`'s share of global batch (epoch, batch). global_batch % world == 0.
  std::vector<SampleSpec> batch(int64_t epoch, int64_t batch, int rank, int world) const;
  // The choice (global caption or which box) for an image in an epoch.
  SampleSpec spec(int64_t image, int64_t epoch) const;

  // Sequential use: returns this rank's share of the next global batch and advances.
  std::vector<SampleSpec> next(int rank, int world);
  const SamplerState& state() const { return state_; }
  void load_state(const SamplerState& s);

 private:
  std::vector<int64_t> boxes_;
  std::vector<bool> has_global_;
  int64_t global_batch_;
  double global_prob_;
  SamplerState state_;
  mutable int64_t cached_epoch_ = -1;
  mutable std::vector<int64_t> cached_perm_;
};

}  // namespace hd::data
