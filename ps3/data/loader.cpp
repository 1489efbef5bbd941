#include "ps3/data/loader.h"

#include <cstring>

#include "autograd/error.h"
#include "ops/factory.h"

namespace hd::data {

namespace {
Tensor host_tensor(const Shape& shape, DType dtype, bool pinned) {
  return pinned ? Tensor::empty_pinned(shape, dtype) : Tensor::empty(shape, dtype);
}

Tensor box_maps(const std::vector<std::vector<Box>>& boxes, int64_t size, int64_t out,
                bool pinned) {
  const int64_t B = int64_t(boxes.size());
  Tensor t = host_tensor({B, out, out}, DType::f32, pinned);
  for (int64_t b = 0; b < B; ++b)
    data::gt_map(boxes[size_t(b)], size, out, t.data<float>() + b * out * out);
  return t;
}
}  // namespace

Tensor Batch::gt_map(int64_t out) const {
  return box_maps(boxes, size, out, pinned);
}

Tensor Batch::salient_map(int64_t out) const {
  HD_CHECK(salient_boxes.size() == boxes.size(), "Batch::salient_map: ", salient_boxes.size(),
           " salient box lists for ", boxes.size(), " rows");
  return box_maps(salient_boxes, size, out, pinned);
}

Tensor Batch::region_tokens(std::vector<int64_t>& rows) const {
  HD_CHECK(salient_tokens.size() == salient_boxes.size() && tokens.defined(),
           "Batch::region_tokens: needs a tokenizer and one token list per salient box");
  const int64_t ctx = tokens.size(1);
  rows.clear();
  std::vector<int32_t> flat;
  for (size_t b = 0; b < salient_tokens.size(); ++b) {
    HD_CHECK(salient_tokens[b].size() == salient_boxes[b].size(), "Batch::region_tokens: row ", b,
             " has ", salient_tokens[b].size(), " token lists for ", salient_boxes[b].size(),
             " boxes");
    for (const auto& ids : salient_tokens[b]) {
      HD_CHECK(int64_t(ids.size()) == ctx, "Batch::region_tokens: ", ids.size(),
               " tokens, context is ", ctx);
      flat.insert(flat.end(), ids.begin(), ids.end());
      rows.push_back(int64_t(b));
    }
  }
  return from_vector<int32_t>(flat, {int64_t(rows.size()), ctx});
}

Tensor Batch::region_maps(int64_t out) const {
  std::vector<std::vector<Box>> each;
  for (const auto& row : salient_boxes)
    for (const Box& box : row) each.push_back({box});
  return box_maps(each, size, out, pinned);
}

Tensor Batch::patches(int64_t b, int64_t scale, const std::vector<int64_t>& indices) const {
  HD_CHECK(b >= 0 && b < batch_size(), "Batch::patches: sample ", b, " of ", batch_size());
  Tensor t = host_tensor({int64_t(indices.size()), 3, kPatch, kPatch}, DType::f32, pinned);
  extract_patches(*images[size_t(b)], scale, indices, norm, t.data<float>());
  return t;
}

struct Loader::Cached {
  std::shared_ptr<const Image> image;           // S x S uint8
  int64_t source_height = 0, source_width = 0;  // before the squash resize (boxes map from it)
  std::vector<char> low_res, selection;         // the views' bytes, in image_dtype
};

struct Loader::Pending {
  std::vector<SampleSpec> specs;
  Batch batch;
  std::vector<char> ok;
  int64_t remaining = 0;     // under mu_: samples not loaded yet
  std::exception_ptr error;  // under mu_
};

Loader::Loader(const Dataset& dataset, const Sampler& sampler, const Tokenizer* tokenizer,
               LoaderOptions opt, BadInputLog& log)
    : ds_(dataset), sampler_(sampler), tok_(tokenizer), opt_(opt), log_(log) {
  HD_CHECK(opt.threads >= 1 && opt.prefetch_batches >= 1, "Loader: threads (", opt.threads,
           ") and prefetch_batches (", opt.prefetch_batches, ") must be >= 1");
  HD_CHECK(opt.image_size % kPatch == 0, "Loader: image size ", opt.image_size,
           " is not a multiple of ", kPatch);
  HD_CHECK(opt.image_dtype == DType::f32 || opt.image_dtype == DType::bf16, "Loader: image_dtype ",
           dtype_name(opt.image_dtype), " is not f32 or bf16");
  producer_ = std::thread([this] { produce(); });
  for (int i = 0; i < opt.threads; ++i) workers_.emplace_back([this] { work(); });
}

Loader::~Loader() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;  // every Await below includes stop_, and unlocking re-evaluates them
  }
  producer_.join();
  for (auto& w : workers_) w.join();
}

void Loader::produce() {
  try {
    while (true) {
      {
        absl::MutexLock lock(&mu_);
        auto room = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
          return stop_ || int(pending_.size()) < opt_.prefetch_batches;
        };
        mu_.Await(absl::Condition(&room));
        if (stop_) return;
      }
      // Only this thread touches the sampler after construction.
      auto p = std::make_shared<Pending>();
      p->specs = sampler_.next(opt_.rank, opt_.world);
      int64_t n = int64_t(p->specs.size());
      Batch& b = p->batch;
      b.size = opt_.image_size;
      b.state_after = sampler_.state();
      b.norm = opt_.norm;
      b.pinned = opt_.pin_memory;
      b.image_ids.resize(size_t(n));
      b.is_global.resize(size_t(n));
      b.boxes.resize(size_t(n));
      b.salient_boxes.resize(size_t(n));
      b.salient_tokens.resize(size_t(n));
      b.texts.resize(size_t(n));
      b.images.resize(size_t(n));
      const bool pin = opt_.pin_memory;
      const DType views = opt_.image_dtype;
      b.low_res = host_tensor({n, 3, opt_.low_res, opt_.low_res}, views, pin);
      if (opt_.selection_res > 0)
        b.selection = host_tensor({n, 3, opt_.selection_res, opt_.selection_res}, views, pin);
      if (tok_) b.tokens = host_tensor({n, tok_->context_length()}, DType::i32, pin);
      p->ok.assign(size_t(n), 0);
      p->remaining = n;
      absl::MutexLock lock(&mu_);
      pending_.push_back(p);
      for (int64_t i = 0; i < n; ++i) jobs_.emplace_back(p, i);
    }
  } catch (...) {
    // A sampler error (e.g. a bad resume state) surfaces from next() rather than std::terminate.
    auto p = std::make_shared<Pending>();
    p->error = std::current_exception();
    absl::MutexLock lock(&mu_);
    pending_.push_back(p);
    producer_done_ = true;
  }
}

void Loader::work() {
  while (true) {
    std::pair<std::shared_ptr<Pending>, int64_t> job;
    {
      absl::MutexLock lock(&mu_);
      auto has_job = [this]()
                         ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stop_ || !jobs_.empty(); };
      mu_.Await(absl::Condition(&has_job));
      if (stop_) return;
      job = std::move(jobs_.front());
      jobs_.pop_front();
    }
    load_sample(*job.first, job.second);
    absl::MutexLock lock(&mu_);
    --job.first->remaining;  // next() waits for the front batch's count to reach 0
  }
}

void Loader::load_sample(Pending& p, int64_t i) {
  const SampleSpec& spec = p.specs[size_t(i)];
  // A sampler built for another dataset is a programming error: always fatal, never skipped.
  if (spec.image >= int64_t(ds_.records.size()) ||
      (!spec.is_global && spec.box >= int64_t(ds_.records[size_t(spec.image)].texts.size()))) {
    absl::MutexLock lock(&mu_);
    if (!p.error)
      p.error = std::make_exception_ptr(
          Error(detail::concat("Loader: sampler image ", spec.image, " box ", spec.box,
                               " does not match the dataset (", ds_.records.size(), " images)")));
    return;
  }
  const ImageRecord& rec = ds_.records[size_t(spec.image)];
  Batch& b = p.batch;
  const int64_t S = opt_.image_size;
  const int64_t L = opt_.low_res, R = opt_.selection_res;
  const int64_t elem = int64_t(dtype_size(opt_.image_dtype));
  const int64_t low_bytes = 3 * L * L * elem, sel_bytes = 3 * R * R * elem;
  char* low_dst = static_cast<char*>(b.low_res.raw_data()) + i * low_bytes;
  char* sel_dst = R > 0 ? static_cast<char*>(b.selection.raw_data()) + i * sel_bytes : nullptr;
  // The whole view (side x side) of the S x S image, in image_dtype.
  auto resample_view = [&](const Image& img, int64_t side, char* dst) {
    if (opt_.image_dtype == DType::bf16) {
      resample_region(img, side, side, 0, side, 0, side, opt_.norm, reinterpret_cast<bf16_t*>(dst));
    } else {
      resample_region(img, side, side, 0, side, 0, side, opt_.norm, reinterpret_cast<float*>(dst));
    }
  };
  std::string where = rec.source.describe();
  const bool use_cache = opt_.cache_bytes > 0 && !opt_.random_resized_crop;
  try {
    std::shared_ptr<const Cached> hit;
    if (use_cache) {
      std::lock_guard<std::mutex> lock(cache_mu_);
      auto it = cache_.find(spec.image);
      if (it != cache_.end()) hit = it->second;
    }
    std::shared_ptr<const Image> s_img;
    Crop crop;
    if (hit) {
      s_img = hit->image;
      crop = Crop{0, 0, hit->source_height, hit->source_width};
      std::memcpy(low_dst, hit->low_res.data(), hit->low_res.size());
      if (sel_dst) std::memcpy(sel_dst, hit->selection.data(), hit->selection.size());
    } else {
      Image img = decode_image(read_image_bytes(rec.source), where);
      crop = Crop{0, 0, img.height, img.width};
      if (opt_.random_resized_crop) crop = random_resized_crop(img.height, img.width, spec.key);
      const int64_t src_h = img.height, src_w = img.width;
      // Squash resize to S x S with Pillow's antialiased bicubic, kept uint8 (§1.3 step 1).
      bool identity = crop.h == S && crop.w == S && img.height == S && img.width == S;
      auto resized = std::make_shared<const Image>(
          identity ? std::move(img)
                   : resize_aa_bicubic(img, crop.y0, crop.x0, crop.h, crop.w, S, S));
      s_img = resized;
      // The low-res and selection views: non-AA bicubic from the S x S image (§1.3 step 2).
      resample_view(*s_img, L, low_dst);
      if (sel_dst) resample_view(*s_img, R, sel_dst);
      if (use_cache) {
        int64_t bytes = S * S * 3 + low_bytes + (R > 0 ? sel_bytes : 0);
        std::lock_guard<std::mutex> lock(cache_mu_);
        if (!cache_.count(spec.image) && cache_used_ + bytes <= opt_.cache_bytes) {
          auto c = std::make_shared<Cached>();
          c->image = resized;
          c->source_height = src_h;
          c->source_width = src_w;
          c->low_res.assign(low_dst, low_dst + low_bytes);
          if (sel_dst) c->selection.assign(sel_dst, sel_dst + sel_bytes);
          cache_[spec.image] = std::move(c);
          cache_used_ += bytes;
        }
      }
    }
    if (spec.is_global) {
      b.boxes[size_t(i)] = {Box{0, 0, float(S), float(S)}};
    } else {
      std::string why;
      auto box = transform_box(rec.boxes[size_t(spec.box)], crop, S, why);
      if (!box) {
        where = rec.json_where + " box " + std::to_string(spec.box);
        throw Error(why);
      }
      b.boxes[size_t(i)] = {*box};
    }
    for (size_t k = 0; k < rec.boxes.size(); ++k) {
      std::string why;
      auto box = transform_box(rec.boxes[k], crop, S, why);
      if (!box) continue;
      b.salient_boxes[size_t(i)].push_back(*box);
      // records.cpp keeps texts and boxes aligned (a caption per box).
      if (tok_)
        b.salient_tokens[size_t(i)].push_back(
            tok_->encode(process_caption(rec.texts[k], false, 0)));
    }
    const std::string& caption = spec.is_global ? rec.global_text : rec.texts[size_t(spec.box)];
    b.texts[size_t(i)] = process_caption(caption, opt_.sentence_masking, spec.key);
    if (tok_) {
      auto ids = tok_->encode(b.texts[size_t(i)]);
      std::memcpy(b.tokens.data<int32_t>() + i * tok_->context_length(), ids.data(),
                  ids.size() * sizeof(int32_t));
    }
    b.image_ids[size_t(i)] = spec.image;
    b.is_global[size_t(i)] = spec.is_global;
    b.images[size_t(i)] = std::move(s_img);
    p.ok[size_t(i)] = 1;
  } catch (const std::exception& e) {
    try {
      log_.report(where, e.what());
    } catch (...) {
      absl::MutexLock lock(&mu_);
      if (!p.error) p.error = std::current_exception();
    }
  }
}

namespace {
// Copies rows `keep` of a [N, ...] tensor into a new [keep.size(), ...] tensor.
Tensor keep_rows(const Tensor& t, const std::vector<int64_t>& keep) {
  if (!t.defined()) return t;
  Shape s = t.shape();
  int64_t row = t.numel() / s[0] * int64_t(dtype_size(t.dtype()));
  s[0] = int64_t(keep.size());
  Tensor out = host_tensor(s, t.dtype(), t.is_pinned());
  for (size_t k = 0; k < keep.size(); ++k)
    std::memcpy(static_cast<char*>(out.raw_data()) + int64_t(k) * row,
                static_cast<const char*>(t.raw_data()) + keep[k] * row, size_t(row));
  return out;
}
template <class V>
void keep_items(V& v, const std::vector<int64_t>& keep) {
  V out;
  for (int64_t k : keep) out.push_back(v[size_t(k)]);
  v = std::move(out);
}
}  // namespace

Batch Loader::next() {
  std::shared_ptr<Pending> p;
  {
    absl::MutexLock lock(&mu_);
    auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return (!pending_.empty() && pending_.front()->remaining == 0) ||
             (pending_.empty() && producer_done_);
    };
    mu_.Await(absl::Condition(&ready));
    // After a producer error was delivered, later calls fail instead of waiting forever.
    HD_CHECK(!pending_.empty(), "Loader: stopped after an earlier sampler error");
    p = pending_.front();
    pending_.pop_front();  // the producer's `room` now holds: it wakes when mu_ is released
  }
  if (p->error) std::rethrow_exception(p->error);
  Batch b = std::move(p->batch);
  std::vector<int64_t> keep;
  for (size_t i = 0; i < p->ok.size(); ++i)
    if (p->ok[i]) keep.push_back(int64_t(i));
  if (keep.size() == p->ok.size()) return b;
  b.low_res = keep_rows(b.low_res, keep);
  b.selection = keep_rows(b.selection, keep);
  b.tokens = keep_rows(b.tokens, keep);
  keep_items(b.image_ids, keep);
  keep_items(b.is_global, keep);
  keep_items(b.boxes, keep);
  keep_items(b.salient_boxes, keep);
  keep_items(b.salient_tokens, keep);
  keep_items(b.texts, keep);
  keep_items(b.images, keep);
  return b;
}

}  // namespace hd::data
