#include "ps3/data/sampler.h"

#include <numeric>

#include "autograd/error.h"
#include "autograd/random.h"

namespace hd::data {
namespace {
// Stream ids: the permutation and the per-image choices draw from separate Philox streams so
// neither shifts when the other changes.
constexpr uint64_t kPermStream = 0x5045524d00000000ull;    // "PERM"
constexpr uint64_t kChoiceStream = 0x43484f4900000000ull;  // "CHOI"

uint64_t below(uint32_t hi, uint32_t lo, uint64_t n) {
  return uint64_t(uniform01_f64(hi, lo) * double(n)) % n;
}
}  // namespace

Sampler::Sampler(std::vector<int64_t> boxes_per_image, std::vector<bool> has_global,
                 int64_t global_batch, uint64_t seed, double global_caption_prob)
    : boxes_(std::move(boxes_per_image)),
      has_global_(std::move(has_global)),
      global_batch_(global_batch),
      global_prob_(global_caption_prob) {
  HD_CHECK(boxes_.size() == has_global_.size(), "Sampler: ", boxes_.size(), " box counts but ",
           has_global_.size(), " global flags");
  HD_CHECK(global_batch >= 1 && int64_t(boxes_.size()) >= global_batch, "Sampler: global batch ",
           global_batch, " needs at least that many images, dataset has ", boxes_.size(),
           " (image-unique batches cannot repeat an image)");
  for (size_t i = 0; i < boxes_.size(); ++i)
    HD_CHECK(boxes_[i] > 0 || has_global_[i], "Sampler: image ", i, " has no caption");
  state_.seed = seed;
}

int64_t Sampler::batches_per_epoch() const {
  return int64_t(boxes_.size()) / global_batch_;
}

const std::vector<int64_t>& Sampler::permutation(int64_t epoch) const {
  if (cached_epoch_ == epoch) return cached_perm_;
  int64_t n = int64_t(boxes_.size());
  std::vector<int64_t> perm(static_cast<size_t>(n));
  std::iota(perm.begin(), perm.end(), 0);
  Generator g(state_.seed, kPermStream + uint64_t(epoch));
  // Fisher-Yates, one Philox block per swap: a pure function of (seed, epoch).
  for (int64_t i = n - 1; i > 0; --i) {
    auto w = g.block(uint64_t(i));
    std::swap(perm[size_t(i)], perm[size_t(below(w[0], w[1], uint64_t(i + 1)))]);
  }
  cached_epoch_ = epoch;
  cached_perm_ = std::move(perm);
  return cached_perm_;
}

SampleSpec Sampler::spec(int64_t image, int64_t epoch) const {
  Generator g(state_.seed, kChoiceStream + uint64_t(epoch));
  auto w = g.block(uint64_t(image));
  SampleSpec s;
  s.image = image;
  int64_t nb = boxes_[size_t(image)];
  bool g_ok = has_global_[size_t(image)];
  s.is_global = nb == 0 || (g_ok && uniform01_f64(w[0], w[1]) < global_prob_);
  if (!s.is_global) s.box = int64_t(below(w[2], w[3], uint64_t(nb)));
  auto k = g.block(uint64_t(image) + (uint64_t(1) << 40));
  s.key = (uint64_t(k[0]) << 32) | k[1];
  return s;
}

std::vector<SampleSpec> Sampler::batch(int64_t epoch, int64_t batch, int rank, int world) const {
  HD_CHECK(world >= 1 && rank >= 0 && rank < world, "Sampler: rank ", rank, " of ", world);
  HD_CHECK(global_batch_ % world == 0, "Sampler: global batch ", global_batch_,
           " is not divisible by ", world, " ranks");
  HD_CHECK(batch >= 0 && batch < batches_per_epoch(), "Sampler: batch ", batch, " of epoch ", epoch,
           " out of range (", batches_per_epoch(), " per epoch)");
  const std::vector<int64_t>& perm = permutation(epoch);
  int64_t per_rank = global_batch_ / world;
  std::vector<SampleSpec> out;
  for (int64_t i = 0; i < per_rank; ++i)
    out.push_back(spec(perm[size_t(batch * global_batch_ + rank * per_rank + i)], epoch));
  return out;
}

std::vector<SampleSpec> Sampler::next(int rank, int world) {
  auto out = batch(state_.epoch, state_.batch, rank, world);
  if (++state_.batch == batches_per_epoch()) state_.batch = 0, ++state_.epoch;
  return out;
}

void Sampler::load_state(const SamplerState& s) {
  HD_CHECK(s.seed == state_.seed, "Sampler: state has seed ", s.seed, ", sampler has ",
           state_.seed);
  HD_CHECK(s.epoch >= 0 && s.batch >= 0 && s.batch < batches_per_epoch(), "Sampler: state (epoch ",
           s.epoch, ", batch ", s.batch, ") out of range");
  state_ = s;
}

}  // namespace hd::data
