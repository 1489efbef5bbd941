// The multiple-choice report as a picture (issue 17): accuracy against resolution, one line per
// selection mode swept over resolutions (modes named "<line> @<resolution>"), a flat line for
// each mode that does not depend on resolution (low-res only: 378), chance dashed. A person
// sees at once whether high resolution pays, which a table of seven rows hides.
#pragma once

#include <string>
#include <vector>

#include "ps3/data/image.h"
#include "vilahd/mc_eval.h"

namespace hd::vilahd {

// Draws the plot (about 720 x 420, white background, a legend on the right). `chance` is the
// expected accuracy of a random choice. Modes whose name has no " @<number>" suffix and that
// use no high-res tokens become flat lines; other unswept modes are left out (they are in the
// table and the JSON).
data::Image draw_accuracy_plot(const std::vector<McModeResult>& results, double chance,
                               const std::string& title);

// draw_accuracy_plot written to `path` as PNG; throws naming the path when it cannot.
void write_accuracy_plot(const std::vector<McModeResult>& results, double chance,
                         const std::string& title, const std::string& path);

}  // namespace hd::vilahd
