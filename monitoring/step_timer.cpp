#include "monitoring/step_timer.h"

#include <algorithm>

namespace hd::monitoring {

const char* phase_name(Phase p) {
  switch (p) {
    case Phase::data_wait:
      return "data_wait";
    case Phase::forward:
      return "forward";
    case Phase::backward:
      return "backward";
    case Phase::optimizer:
      return "optimizer";
    case Phase::communication:
      return "communication";
    case Phase::count:
      break;
  }
  return "unknown";
}

double StepTiming::other_seconds() const {
  double covered = 0;
  for (double s : phase_seconds) covered += s;
  return std::max(0.0, total_seconds - covered);
}

}  // namespace hd::monitoring
