// Counter-based randomness (Philox4x32-10, Salmon et al. 2011).
//
// Why counter-based: element i of a random tensor is a pure function of (seed, stream, offset+i),
// so values do not depend on thread count, on how work is split, or on how many ranks build the
// model. A parameter keyed by its name gets the same initial values on 1 rank or on 64.
#pragma once

#include <array>
#include <cstdint>
#include <string_view>

namespace hd {

// One Philox4x32-10 block: 4 random 32-bit words from a 128-bit counter and a 64-bit key.
std::array<uint32_t, 4> philox4x32(std::array<uint32_t, 4> counter, std::array<uint32_t, 2> key);

// A random stream: (seed, stream id) is the key; `offset` counts the blocks already consumed,
// so successive draws from one Generator never overlap. Its whole state is these three numbers,
// which is what a checkpoint saves.
struct Generator {
  uint64_t seed = 0;
  uint64_t stream = 0;
  uint64_t offset = 0;  // in Philox blocks (4 words each)

  Generator() = default;
  Generator(uint64_t seed, uint64_t stream) : seed(seed), stream(stream) {}
  // Stream keyed by a name (e.g. a parameter path), via 64-bit FNV-1a.
  Generator(uint64_t seed, std::string_view stream_name);

  // Reserves `blocks` Philox blocks and returns the first block's offset.
  uint64_t advance(uint64_t blocks) {
    uint64_t first = offset;
    offset += blocks;
    return first;
  }
  // The 4 words of block `block` of this stream.
  std::array<uint32_t, 4> block(uint64_t block) const;
};

uint64_t fnv1a64(std::string_view s);

// Maps 32 random bits to a float in [0, 1) (24 bits) / a double in [0, 1) (from 2 words).
inline float uniform01_f32(uint32_t bits) { return float(bits >> 8) * (1.0f / 16777216.0f); }
inline double uniform01_f64(uint32_t hi, uint32_t lo) {
  uint64_t v = (uint64_t(hi) << 21) ^ (uint64_t(lo) >> 11);
  return double(v & ((1ull << 53) - 1)) * (1.0 / 9007199254740992.0);
}

}  // namespace hd
