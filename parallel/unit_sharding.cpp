#include "parallel/unit_sharding.h"

#include <map>

#include "autograd/error.h"

namespace hd::parallel {

UnitSharding shard_by_units(Module& root, const std::vector<const Module*>& units,
                            std::shared_ptr<ProcessGroup> pg, const FSDPOptions& opts,
                            const std::string& model_name) {
  UnitSharding out;
  out.fsdp = std::make_unique<FSDP>(root, std::move(pg));
  std::map<const Module*, FSDPUnit*> by_module;
  for (const Module* m : units) by_module[m] = &out.fsdp->fully_shard(*m, opts);
  FSDPOptions root_opts = opts;
  root_opts.reshard_after_forward = false;  // the whole step runs inside the root
  by_module[&root] = &out.fsdp->fully_shard(root, root_opts);
  out.runner = [by_module, model_name](const Module& unit, const Tensor& x,
                                       const nn::UnitBody& body) {
    auto it = by_module.find(&unit);
    HD_CHECK(it != by_module.end(), model_name,
             ": a module ran as a sharding unit but was not sharded as one (is it missing from "
             "its sharding_units()?)");
    return it->second->forward(x, body);
  };
  return out;
}

}  // namespace hd::parallel
