#include "ps3/data/image.h"

#include <png.h>
#include <stdio.h>
// jpeglib.h needs FILE/size_t declared first.
#include <jerror.h>
#include <jpeglib.h>

#include <csetjmp>
#include <cstring>
#include <fstream>

#include "autograd/error.h"

namespace hd::data {
namespace {

bool is_png(const std::vector<uint8_t>& b) {
  return b.size() >= 8 && png_sig_cmp(b.data(), 0, 8) == 0;
}
bool is_jpeg(const std::vector<uint8_t>& b) {
  return b.size() >= 3 && b[0] == 0xFF && b[1] == 0xD8 && b[2] == 0xFF;
}

// libjpeg reports errors through a callback that must not return; we longjmp back to the
// caller and turn the message into an hd::Error there (no C++ exception crosses C frames).
struct JpegError {
  jpeg_error_mgr mgr;
  jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
};
void jpeg_error_exit(j_common_ptr cinfo) {
  auto* err = reinterpret_cast<JpegError*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, err->message);
  longjmp(err->jump, 1);
}
// Truncation warnings are errors for us: a truncated JPEG otherwise decodes to a silently grey
// bottom half. Other corrupt-data warnings (e.g. extraneous bytes before a marker, common in
// camera files that decode fine) stay warnings.
void jpeg_emit_message(j_common_ptr cinfo, int level) {
  int code = cinfo->err->msg_code;
  if (level < 0 && (code == JWRN_JPEG_EOF || code == JWRN_HIT_MARKER)) jpeg_error_exit(cinfo);
}

Image decode_jpeg(const std::vector<uint8_t>& bytes, const std::string& what, bool header_only) {
  jpeg_decompress_struct cinfo;
  JpegError err;
  cinfo.err = jpeg_std_error(&err.mgr);
  err.mgr.error_exit = jpeg_error_exit;
  err.mgr.emit_message = jpeg_emit_message;
  Image img;
  if (setjmp(err.jump)) {
    jpeg_destroy_decompress(&cinfo);
    throw Error(detail::concat("decode_image: ", what, ": corrupt JPEG: ", err.message));
  }
  jpeg_create_decompress(&cinfo);
  jpeg_mem_src(&cinfo, bytes.data(), static_cast<unsigned long>(bytes.size()));
  jpeg_read_header(&cinfo, TRUE);
  int64_t h = cinfo.image_height, w = cinfo.image_width;
  if (h < 1 || w < 1 || h > kMaxImageSide || w > kMaxImageSide) {
    jpeg_destroy_decompress(&cinfo);
    throw Error(detail::concat("decode_image: ", what, ": JPEG size ", w, "x", h, " out of range"));
  }
  if (header_only) {
    jpeg_destroy_decompress(&cinfo);
    img.height = h;
    img.width = w;
    return img;
  }
  cinfo.out_color_space = JCS_RGB;  // converts grey / YCbCr; CMYK raises an error below
  jpeg_start_decompress(&cinfo);
  if (cinfo.output_components != 3) {
    jpeg_destroy_decompress(&cinfo);
    throw Error(detail::concat("decode_image: ", what, ": unsupported JPEG colour space"));
  }
  img = Image(h, w);
  while (cinfo.output_scanline < cinfo.output_height) {
    JSAMPROW row = img.row(cinfo.output_scanline);
    jpeg_read_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_decompress(&cinfo);
  jpeg_destroy_decompress(&cinfo);
  return img;
}

Image decode_png(const std::vector<uint8_t>& bytes, const std::string& what, bool header_only) {
  // The simplified libpng API handles every PNG colour type and bit depth, and reports
  // truncation as an error rather than returning partial rows.
  png_image png;
  std::memset(&png, 0, sizeof(png));
  png.version = PNG_IMAGE_VERSION;
  if (!png_image_begin_read_from_memory(&png, bytes.data(), bytes.size()))
    throw Error(detail::concat("decode_image: ", what, ": corrupt PNG: ", png.message));
  int64_t h = png.height, w = png.width;
  if (h < 1 || w < 1 || h > kMaxImageSide || w > kMaxImageSide) {
    png_image_free(&png);
    throw Error(detail::concat("decode_image: ", what, ": PNG size ", w, "x", h, " out of range"));
  }
  Image img;
  if (header_only) {
    png_image_free(&png);
    img.height = h;
    img.width = w;
    return img;
  }
  png.format = PNG_FORMAT_RGB;  // drops alpha by compositing on black (libpng's rule)
  img = Image(h, w);
  if (!png_image_finish_read(&png, nullptr, img.pixels.data(), 0, nullptr))
    throw Error(detail::concat("decode_image: ", what, ": corrupt PNG: ", png.message));
  return img;
}

}  // namespace

Image decode_image(const std::vector<uint8_t>& bytes, const std::string& what) {
  if (is_jpeg(bytes)) return decode_jpeg(bytes, what, false);
  if (is_png(bytes)) return decode_png(bytes, what, false);
  throw Error(
      detail::concat("decode_image: ", what, ": not a JPEG or PNG (", bytes.size(), " bytes)"));
}

std::pair<int64_t, int64_t> image_size(const std::vector<uint8_t>& bytes, const std::string& what) {
  Image h;
  if (is_jpeg(bytes))
    h = decode_jpeg(bytes, what, true);
  else if (is_png(bytes))
    h = decode_png(bytes, what, true);
  else
    throw Error(detail::concat("image_size: ", what, ": not a JPEG or PNG"));
  return {h.height, h.width};
}

std::vector<uint8_t> encode_jpeg(const Image& img, int quality) {
  jpeg_compress_struct cinfo;
  JpegError err;
  cinfo.err = jpeg_std_error(&err.mgr);
  err.mgr.error_exit = jpeg_error_exit;
  unsigned char* buf = nullptr;
  unsigned long size = 0;
  if (setjmp(err.jump)) {
    jpeg_destroy_compress(&cinfo);
    free(buf);
    throw Error(detail::concat("encode_jpeg: ", err.message));
  }
  jpeg_create_compress(&cinfo);
  jpeg_mem_dest(&cinfo, &buf, &size);
  cinfo.image_width = static_cast<JDIMENSION>(img.width);
  cinfo.image_height = static_cast<JDIMENSION>(img.height);
  cinfo.input_components = 3;
  cinfo.in_color_space = JCS_RGB;
  jpeg_set_defaults(&cinfo);
  jpeg_set_quality(&cinfo, quality, TRUE);
  // 4:4:4: chroma subsampling would smear the 1-3 pixel strokes of the tiny coloured signs.
  for (int c = 0; c < 3; ++c)
    cinfo.comp_info[c].h_samp_factor = cinfo.comp_info[c].v_samp_factor = 1;
  jpeg_start_compress(&cinfo, TRUE);
  while (cinfo.next_scanline < cinfo.image_height) {
    JSAMPROW row = const_cast<uint8_t*>(img.row(cinfo.next_scanline));
    jpeg_write_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_compress(&cinfo);
  jpeg_destroy_compress(&cinfo);
  std::vector<uint8_t> out(buf, buf + size);
  free(buf);
  return out;
}

namespace {
void png_write_vec(png_structp png, png_bytep data, png_size_t len) {
  auto* out = static_cast<std::vector<uint8_t>*>(png_get_io_ptr(png));
  out->insert(out->end(), data, data + len);
}
void png_flush_noop(png_structp) {}
void png_error_fn(png_structp png, png_const_charp msg) {
  *static_cast<std::string*>(png_get_error_ptr(png)) = msg;
  png_longjmp(png, 1);
}
}  // namespace

std::vector<uint8_t> encode_png(const Image& img, int level) {
  std::vector<uint8_t> out;
  std::string message;
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &message, png_error_fn, nullptr);
  png_infop info = png_create_info_struct(png);
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_write_struct(&png, &info);
    throw Error("encode_png: " + message);
  }
  png_set_write_fn(png, &out, png_write_vec, png_flush_noop);
  png_set_compression_level(png, level);
  // Sub filter only: adaptive filtering costs ~5x the encode time for a few % of size.
  png_set_filter(png, 0, PNG_FILTER_SUB);
  png_set_IHDR(png, info, static_cast<png_uint_32>(img.width), static_cast<png_uint_32>(img.height),
               8, PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
               PNG_FILTER_TYPE_DEFAULT);
  png_write_info(png, info);
  for (int64_t y = 0; y < img.height; ++y) png_write_row(png, const_cast<uint8_t*>(img.row(y)));
  png_write_end(png, nullptr);
  png_destroy_write_struct(&png, &info);
  return out;
}

std::vector<uint8_t> read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary | std::ios::ate);
  HD_CHECK(f, "read_file: cannot open ", path);
  std::streamsize n = f.tellg();
  f.seekg(0);
  std::vector<uint8_t> bytes(static_cast<size_t>(n));
  HD_CHECK(f.read(reinterpret_cast<char*>(bytes.data()), n), "read_file: cannot read ", path);
  return bytes;
}

void write_file(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream f(path, std::ios::binary);
  HD_CHECK(f, "write_file: cannot create ", path);
  f.write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
  HD_CHECK(f, "write_file: cannot write ", path);
}

}  // namespace hd::data
