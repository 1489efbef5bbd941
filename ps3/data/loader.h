// The loader: sampler -> worker threads (read, decode, squash resize, views, text) -> a bounded
// queue of ready batches, delivered in sampler order.
//
// Cost per image is bounded independently of how many patches a model will ask for: the S x S
// image stays uint8 (43 MB at 3780) and the only float images are the 378^2 low-res and the
// 1512^2 selection inputs. High-res patches are computed on demand from the uint8 image
// (Batch::patches), the ground-truth map on demand at any size (Batch::gt_map).
#pragma once

#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "autograd/tensor.h"
#include "ps3/data/bad_input.h"
#include "ps3/data/geometry.h"
#include "ps3/data/records.h"
#include "ps3/data/sampler.h"
#include "ps3/data/text.h"

namespace hd::data {

struct LoaderOptions {
  int64_t image_size = 3780;  // S: the largest scale
  int64_t low_res = 378;
  int64_t selection_res = 1512;  // input of the light selection encoder; 0 = not produced
  int threads = 2;
  int prefetch_batches = 2;  // batches decoded ahead of the consumer
  int rank = 0, world = 1;
  bool sentence_masking = true;
  bool random_resized_crop = false;  // §2.1 training augmentation (scale 0.9-1)
  // Keep decoded samples (the uint8 S x S image and both views, ~72 MB per image at 3780 in f32)
  // for reuse in later epochs, up to this many bytes; 0 = off. For small datasets (the demo)
  // where decoding the 4K JPEG dominates a step. Ignored with random_resized_crop (every epoch
  // crops differently). Results are identical with or without it (decoding is deterministic).
  int64_t cache_bytes = 0;
  // Assemble each batch's tensors (views, tokens, and the patches and maps made from it on
  // demand) in pinned host memory, so their copies to a GPU do not block the host
  // ([Note: pinned host memory]); the trainer sets it when the model is on a GPU. Without a GPU
  // the memory is ordinary and the batches are identical.
  bool pin_memory = false;
  // The dtype of the low-res and selection views: f32, or bf16 for a bf16 model (the trainer
  // sets it from train.precision). bf16 views hold the f32 values rounded (the model would round
  // them anyway): half the bytes to cache, copy and read, and no cast in the step.
  DType image_dtype = DType::f32;
  Normalize norm;
};

struct Batch {
  int64_t size = 0;  // S
  std::vector<int64_t> image_ids;
  std::vector<bool> is_global;
  std::vector<std::vector<Box>> boxes;  // in S x S pixels
  // Every local box of each row's image (the salient regions), in S x S pixels: the target of
  // the bottom-up map under train.prior_target = "all_regions".
  std::vector<std::vector<Box>> salient_boxes;
  // The caption of each salient box (same order), tokenized (empty lists without a tokenizer):
  // the prompts of the top-down map under train.posterior_target = "all_regions".
  std::vector<std::vector<std::vector<int32_t>>> salient_tokens;
  std::vector<std::string> texts;  // processed captions
  Tensor low_res;                  // [B, 3, low, low] in LoaderOptions::image_dtype
  Tensor selection;                // [B, 3, sel, sel] likewise (undefined when sel = 0)
  Tensor tokens;                   // [B, ctx] i32 (undefined without a tokenizer)
  std::vector<std::shared_ptr<const Image>> images;  // uint8 S x S, for patches
  SamplerState state_after;                          // resume here to continue after this batch
  Normalize norm;                                    // applied to patches()
  bool pinned = false;  // tensors made on demand (patches, maps) go to pinned memory too

  int64_t batch_size() const { return int64_t(image_ids.size()); }
  // [B, out, out] f32 in {0, 1}: [area-resample(GT, out) > 0].
  Tensor gt_map(int64_t out) const;
  // The same for salient_boxes.
  Tensor salient_map(int64_t out) const;
  // Every row's salient regions in row order: [R, ctx] i32 tokens, the row of each region, and
  // (region_maps) each region's own [R, out, out] GT map.
  Tensor region_tokens(std::vector<int64_t>& rows) const;
  Tensor region_maps(int64_t out) const;
  // [n, 3, 14, 14] f32 patches of sample b at `scale` (flat grid indices).
  Tensor patches(int64_t b, int64_t scale, const std::vector<int64_t>& indices) const;
};

class Loader {
 public:
  // `dataset`, `tokenizer` (may be null) and `log` must outlive the loader. The sampler is
  // copied; its state is where loading starts.
  Loader(const Dataset& dataset, const Sampler& sampler, const Tokenizer* tokenizer,
         LoaderOptions opt, BadInputLog& log);
  ~Loader();
  Loader(const Loader&) = delete;
  Loader& operator=(const Loader&) = delete;

  // The next batch of this rank. Samples whose input is bad are dropped (so a batch can be
  // smaller) unless the log is strict, in which case the error is rethrown here.
  Batch next();

 private:
  struct Pending;
  void produce();
  void work();
  void load_sample(Pending& p, int64_t slot);

  const Dataset& ds_;
  Sampler sampler_;
  const Tokenizer* tok_;
  LoaderOptions opt_;
  BadInputLog& log_;
  // The queue state. Three kinds of thread wait on it for three different conditions (the
  // producer for room, workers for a job, next() for the front batch): each waits with
  // mu_.Await(condition), which absl::Mutex re-evaluates whenever mu_ is released, so an update
  // needs no matching notify (one condition variable for all three woke every thread on each
  // change). The decoded-sample cache below is a plain lock with no waiting: std::mutex.
  absl::Mutex mu_;
  std::deque<std::shared_ptr<Pending>> pending_ ABSL_GUARDED_BY(mu_);  // in delivery order
  std::deque<std::pair<std::shared_ptr<Pending>, int64_t>> jobs_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  bool producer_done_ ABSL_GUARDED_BY(mu_) = false;  // the producer hit an error and stopped
  // Decoded-sample cache (cache_bytes): image id -> entry; filled until the budget is spent,
  // never evicted (a hit costs two memcpys, a miss a decode and two resamples).
  struct Cached;
  std::mutex cache_mu_;
  std::unordered_map<int64_t, std::shared_ptr<const Cached>> cache_;
  int64_t cache_used_ = 0;
  std::thread producer_;
  std::vector<std::thread> workers_;
};

}  // namespace hd::data
