// PatchSelector and split_budget: see patch_selection.h and vision_model.h.
#include "ps3/patch_selection.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <functional>
#include <numeric>

#include "autograd/error.h"
#include "ops/factory.h"
#include "ops/resample.h"
#include "ops/shape.h"
#include "ps3/vision_model.h"

namespace hd::ps3 {

std::vector<int64_t> split_budget(const std::vector<int64_t>& scales, int64_t total) {
  HD_CHECK(total >= 0, "split_budget: total ", total, " is negative");
  if (scales.empty()) return {};
  // Pixel counts s^2 can reach 1.4e7 each; total * s^2 stays far below 2^63.
  int64_t pixels = 0;
  for (int64_t s : scales) {
    HD_CHECK(s > 0, "split_budget: scale ", s, " is not positive");
    pixels += s * s;
  }
  std::vector<int64_t> out;
  int64_t used = 0;
  for (int64_t s : scales) {
    out.push_back(total * s * s / pixels);
    used += out.back();
  }
  out.back() += total - used;  // remainder to the last scale (the 2026-01-04 fix, §1.6)
  return out;
}

int64_t StepSelection::total() const {
  return std::accumulate(counts.begin(), counts.end(), int64_t(0));
}

PatchSelector::PatchSelector(std::vector<int64_t> grids, int64_t batch)
    : grids_(std::move(grids)), batch_(batch) {
  for (int64_t g : grids_) {
    taken_.emplace_back(size_t(batch_ * g * g), uint8_t(0));
    taken_count_.push_back(0);
  }
}

int64_t PatchSelector::remaining(size_t scale) const {
  return grids_.at(scale) * grids_.at(scale) - taken_count_.at(scale);
}

namespace {

// A candidate's rank as one unsigned 128-bit key, larger = taken first: the score's bits made
// order-preserving in the high half, the complement of the index in the low half (the tie rule:
// ascending index). Selecting the k largest keys with nth_element is O(cells) with plain
// integer compares; the comparator-driven partial_sort over doubles it replaced took ~3 ms of
// the demo step's 70 (the 72900 cells of its 3780 scale, plus a vector of every score).
using RankKey = unsigned __int128;

RankKey rank_key(double score, int64_t index) {
  // +0.0 for -0.0 (they tie, as the comparison of values did); NaN was mapped to +inf.
  const uint64_t bits = std::bit_cast<uint64_t>(score + 0.0);
  const uint64_t ordered = (bits >> 63) ? ~bits : bits | (uint64_t(1) << 63);
  return (RankKey(ordered) << 64) | RankKey(~uint64_t(index));
}

int64_t index_of(RankKey key) {
  return int64_t(~uint64_t(key));
}

}  // namespace

StepSelection PatchSelector::select(const std::vector<Tensor>& probs, const Tensor& gt_first,
                                    const std::vector<int64_t>& budget) {
  const size_t ns = grids_.size();
  HD_CHECK(probs.size() == ns && budget.size() == ns, "PatchSelector: ", probs.size(),
           " probability maps and ", budget.size(), " budgets for ", ns, " scales");
  // Values read in f64 (every probability dtype converts exactly); tensors, not std::vectors,
  // so the buffers come from the allocator's cache instead of fresh pages every step.
  Tensor gt0;
  if (gt_first.defined()) {
    const int64_t g0 = grids_[0];
    HD_CHECK(gt_first.shape() == Shape({batch_, g0, g0}), "PatchSelector: gt_maps[0] must be [",
             batch_, ", ", g0, ", ", g0, "], got ", gt_first.str());
    gt0 = contiguous(to(gt_first.detach(), DType::f64));
  }
  StepSelection step;
  step.indices.resize(ns);
  int64_t deficit = 0;
  for (size_t s = 0; s < ns; ++s) {
    const int64_t g = grids_[s], cells = g * g;
    HD_CHECK(probs[s].shape() == Shape({batch_, g, g}), "PatchSelector: probs[", s, "] must be [",
             batch_, ", ", g, ", ", g, "], got ", probs[s].str());
    const int64_t want = budget[s] + deficit;
    const int64_t k = std::min(want, remaining(s));
    deficit = want - k;
    step.counts.push_back(k);
    const Tensor p = contiguous(to(probs[s].detach(), DType::f64));
    Tensor key_storage = Tensor::empty({std::max<int64_t>(2 * cells, 1)}, DType::i64);
    RankKey* keys = reinterpret_cast<RankKey*>(key_storage.data<int64_t>());
    uint8_t* taken = taken_[s].data();
    for (int64_t b = 0; b < batch_; ++b) {
      const double* pb = p.data<double>() + b * cells;
      uint8_t* tb = taken + b * cells;
      auto score = [&](int64_t i) {
        if (gt0.defined()) {
          // Nearest from the first high-res grid (legacy floor rule): src = floor(i * g0 / g).
          const int64_t g0 = grids_[0];
          int64_t y = (i / g) * g0 / g, x = (i % g) * g0 / g;
          if (gt0.data<double>()[b * g0 * g0 + y * g0 + x] > 0) return 1.0;
        }
        // NaN ranks first, as in hd::topk.
        return std::isnan(pb[i]) ? INFINITY : pb[i];
      };
      int64_t n = 0;
      for (int64_t i = 0; i < cells; ++i) {
        if (!tb[i]) keys[n++] = rank_key(score(i), i);
      }
      if (k > 0 && k < n) std::nth_element(keys, keys + (k - 1), keys + n, std::greater<>());
      std::vector<int64_t> chosen(static_cast<size_t>(k));
      for (int64_t j = 0; j < k; ++j) chosen[size_t(j)] = index_of(keys[j]);
      std::sort(chosen.begin(), chosen.end());
      for (int64_t i : chosen) tb[i] = 1;
      step.indices[s].push_back(std::move(chosen));
    }
    taken_count_[s] += k;
  }
  return step;
}

std::vector<Tensor> PatchSelector::selection_maps(DType dtype) const {
  std::vector<Tensor> maps;
  for (size_t s = 0; s < grids_.size(); ++s) {
    const int64_t g = grids_[s];
    std::vector<float> v(taken_[s].begin(), taken_[s].end());
    maps.push_back(to(from_vector<float>(v, {batch_, g, g}), dtype));
  }
  return maps;
}

}  // namespace hd::ps3
