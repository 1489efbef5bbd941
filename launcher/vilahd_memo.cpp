#include "launcher/vilahd_memo.h"

#include <map>

#include "autograd/error.h"
#include "ops/factory.h"
#include "ops/shape.h"
#include "parallel/broadcast_tensors.h"

namespace hd::launcher {

using ::hd::detail::concat;

std::string record_memo_key(const data::SftRecord& r) {
  std::string key = r.image;
  if (r.box) key += concat("|", r.box->x1, ",", r.box->y1, ",", r.box->x2, ",", r.box->y2);
  return key;
}

std::vector<vilahd::VilaSample> fill_vision_memo_across_ranks(
    const vilahd::VilaHdModel& model, vilahd::VisionMemo& memo,
    const std::vector<const data::SftRecord*>& records, bool with_box,
    const vilahd::BpeTokenizer& tok, vilahd::ImageCache& images,
    const std::filesystem::path& data_dir, parallel::ProcessGroup& pg) {
  const int rank = pg.rank(), world = pg.world_size();
  const ps3::VisionConfig& vision = model.config().vision;
  // Distinct keys in first-seen order: key u belongs to rank u % world.
  std::vector<size_t> first_record;  // per distinct key
  std::vector<size_t> key_of(records.size());
  {
    std::map<std::string, size_t> seen;
    for (size_t i = 0; i < records.size(); ++i) {
      auto [it, added] = seen.emplace(record_memo_key(*records[i]), first_record.size());
      if (added) first_record.push_back(i);
      key_of[i] = it->second;
    }
  }
  const size_t keys = first_record.size();
  const size_t passes = (keys + size_t(world) - 1) / size_t(world);

  // This rank's share (and padding passes), one record at a time: a 3780 image's PS3 inputs are
  // tens of MB, so only the view the memo needs (GT maps, key) is kept.
  std::vector<vilahd::VilaImage> views(keys);  // per key: GT maps and memo_key, no inputs
  for (size_t p = 0; p < passes; ++p) {
    const size_t u = p * size_t(world) + size_t(rank);
    const bool padding = u >= keys;
    const data::SftRecord& r = *records[first_record[padding ? 0 : u]];
    vilahd::VilaSample s =
        vilahd::sft_sample(tok, r, images.get(data_dir / r.image), vision, with_box);
    s.images[0].memo_key = padding ? "" : record_memo_key(r);
    model.fill_vision_memo({s});
    if (padding) continue;
    views[u].gt_maps = s.images[0].gt_maps;
    views[u].memo_key = s.images[0].memo_key;
  }

  const Device model_device = model.named_parameters().front().second.device();
  // Every entry to every rank, in key order: [GT-map count, GT maps..., the entry's tensors...].
  for (size_t u = 0; u < keys && world > 1; ++u) {
    const int owner = int(u % size_t(world));
    std::vector<Tensor> list;
    if (owner == rank) {
      const auto it = memo.outputs.find(model.vision_memo_key(views[u]));
      HD_CHECK(it != memo.outputs.end(), "vision memo: rank ", rank, " has no entry for ",
               views[u].memo_key, " after running PS3 on it");
      list.push_back(from_vector<int64_t>({int64_t(views[u].gt_maps.size())}, {1}));
      list.insert(list.end(), views[u].gt_maps.begin(), views[u].gt_maps.end());
      for (Tensor& t : vilahd::memo_entry_to_tensors(it->second)) list.push_back(std::move(t));
      for (Tensor& t : list)  // MPI moves host tensors: device entries go through the host
        if (t.defined()) t = to(t, Device::cpu());
    }
    parallel::broadcast_tensor_list(pg, list, owner);
    if (owner == rank) continue;
    // Received on the host; the memo's entries live where the model does (its outputs).
    for (Tensor& t : list)
      if (t.defined()) t = to(t, model_device);
    const int64_t maps = list.at(0).item<int64_t>();
    HD_CHECK(maps >= 0 && int64_t(list.size()) > 1 + maps, "vision memo: a malformed entry (",
             list.size(), " tensors) from rank ", owner);
    views[u].gt_maps.assign(list.begin() + 1, list.begin() + 1 + maps);
    views[u].memo_key = record_memo_key(*records[first_record[u]]);
    memo.outputs.emplace(model.vision_memo_key(views[u]),
                         vilahd::memo_entry_from_tensors({list.begin() + 1 + maps, list.end()}));
  }

  std::vector<vilahd::VilaSample> samples;
  samples.reserve(records.size());
  for (size_t i = 0; i < records.size(); ++i)
    samples.push_back(vilahd::sft_sample(tok, *records[i], views[key_of[i]]));
  return samples;
}

}  // namespace hd::launcher
