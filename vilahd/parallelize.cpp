#include "vilahd/parallelize.h"

#include "parallel/unit_sharding.h"

namespace hd::vilahd {

std::unique_ptr<parallel::FSDP> shard_vila(VilaHdModel& model,
                                           std::shared_ptr<parallel::ProcessGroup> pg,
                                           parallel::FSDPOptions opts) {
  parallel::UnitSharding s =
      parallel::shard_by_units(model, model.sharding_units(), std::move(pg), opts, "shard_vila");
  model.set_unit_runner(s.runner);
  return std::move(s.fsdp);
}

}  // namespace hd::vilahd
