#include "vilahd/parallelize.h"

#include <map>

namespace hd::vilahd {

std::unique_ptr<parallel::FSDP> shard_vila(VilaHdModel& model,
                                           std::shared_ptr<parallel::ProcessGroup> pg,
                                           parallel::FSDPOptions opts) {
  auto fsdp = std::make_unique<parallel::FSDP>(model, std::move(pg));
  std::map<const Module*, parallel::FSDPUnit*> units;
  for (const Module* m : model.sharding_units()) units[m] = &fsdp->fully_shard(*m, opts);
  parallel::FSDPOptions root_opts = opts;
  root_opts.reshard_after_forward = false;  // the whole step runs inside the root
  units[&model] = &fsdp->fully_shard(model, root_opts);
  model.set_unit_runner([units](const Module& unit, const Tensor& x, const nn::UnitBody& body) {
    auto it = units.find(&unit);
    HD_CHECK(it != units.end(),
             "shard_vila: a module ran as a sharding unit but was not sharded as one (is it "
             "missing from VilaHdModel::sharding_units?)");
    return it->second->forward(x, body);
  });
  return fsdp;
}

}  // namespace hd::vilahd
