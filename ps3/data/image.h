// 8-bit RGB images and their codecs (libjpeg-turbo, libpng).
//
// Images stay uint8 end to end: a 3780x3780 RGB image is 43 MB as uint8 but 171 MB as float,
// and the 4K cost rule (docs/data.md) forbids the float copy. Every resampler in resize.h reads
// this type directly.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace hd::data {

// Row-major H x W x 3 (RGB, interleaved), no padding.
struct Image {
  int64_t height = 0;
  int64_t width = 0;
  std::vector<uint8_t> pixels;

  Image() = default;
  Image(int64_t h, int64_t w) : height(h), width(w), pixels(size_t(h * w * 3)) {}
  uint8_t* row(int64_t y) { return pixels.data() + y * width * 3; }
  const uint8_t* row(int64_t y) const { return pixels.data() + y * width * 3; }
};

// Largest side accepted by the decoders (a guard against absurd headers, not a design limit).
constexpr int64_t kMaxImageSide = 16384;

// Decodes JPEG or PNG (sniffed from the magic bytes). Grey, palette, 16-bit and alpha inputs
// are converted to 8-bit RGB (alpha dropped). Throws hd::Error naming `what` (a file or tar
// member) on truncated or corrupt data.
Image decode_image(const std::vector<uint8_t>& bytes, const std::string& what);
// Reads only the header: {height, width}.
std::pair<int64_t, int64_t> image_size(const std::vector<uint8_t>& bytes, const std::string& what);

std::vector<uint8_t> encode_jpeg(const Image& img, int quality);
// zlib level 0-9; the generator uses a low level because PNG encode time dominates at 4K.
std::vector<uint8_t> encode_png(const Image& img, int level);

std::vector<uint8_t> read_file(const std::string& path);
void write_file(const std::string& path, const std::vector<uint8_t>& bytes);

}  // namespace hd::data
