// shard_ps3; the unit layout and why repeated unit calls are safe are in parallelize.h.
#include "ps3/parallelize.h"

#include "parallel/unit_sharding.h"

namespace hd::ps3 {

std::unique_ptr<parallel::FSDP> shard_ps3(PS3CLIP& model,
                                          std::shared_ptr<parallel::ProcessGroup> pg,
                                          parallel::FSDPOptions opts) {
  parallel::UnitSharding s =
      parallel::shard_by_units(model, model.sharding_units(), std::move(pg), opts, "shard_ps3");
  model.set_unit_runner(s.runner);
  return std::move(s.fsdp);
}

}  // namespace hd::ps3
