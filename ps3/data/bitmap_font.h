// A 5 x 7 bitmap font (capitals, digits, the punctuation labels use): the synthetic generator
// draws sign text with it and the evaluation plot its labels. One string per row, '#' = ink.
#pragma once

#include <array>

namespace hd::data {

using Glyph5x7 = std::array<const char*, 7>;

// The glyph of `c` (lower case maps to upper case), or nullptr when the font lacks it.
const Glyph5x7* glyph_5x7(char c);

}  // namespace hd::data
